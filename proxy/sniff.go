package proxy

import (
	"bufio"
	"bytes"
	"net"
	"time"
)

// Detected protocols.
const (
	detectTCP  = "TCP"
	detectHTTP = "HTTP" // HTTP/1.x or HTTP/2 prior knowledge
)

// h2Preface is the HTTP/2 client connection preface.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

var methods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("DELETE "), []byte("HEAD "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "),
}

// sniff reads the first bytes of c (keeping them in br) and says whether
// it speaks HTTP. A client that sends nothing within timeout is taken for
// a server-speaks-first protocol (MySQL, SMTP) and gets TCP.
func sniff(c net.Conn, br *bufio.Reader, timeout time.Duration) string {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return detectTCP
	}
	defer c.SetReadDeadline(time.Time{}) //nolint:errcheck // a failed reset shows on the next read
	if _, err := br.Peek(1); err != nil {
		return detectTCP
	}
	// Read what has arrived, up to the longest prefix we compare.
	for {
		n := min(br.Buffered(), len(h2Preface))
		b, _ := br.Peek(n)
		switch classify(b) {
		case detectHTTP:
			return detectHTTP
		case detectTCP:
			return detectTCP
		}
		// Undecided: wait for more bytes.
		if _, err := br.Peek(n + 1); err != nil {
			return detectTCP // timed out or closed on a prefix: not HTTP
		}
	}
}

// classify returns detectHTTP or detectTCP when b decides, "" when b is a
// prefix of something HTTP and more bytes are needed.
func classify(b []byte) string {
	undecided := false
	if bytes.HasPrefix(b, h2Preface) {
		return detectHTTP
	}
	if bytes.HasPrefix(h2Preface, b) {
		undecided = true
	}
	for _, m := range methods {
		if bytes.HasPrefix(b, m) {
			return detectHTTP
		}
		if bytes.HasPrefix(m, b) {
			undecided = true
		}
	}
	if undecided {
		return ""
	}
	return detectTCP
}

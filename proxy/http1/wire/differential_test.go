package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The differential tests hold wire to this: whatever Go's net/http refuses,
// wire refuses too, and where both accept they read the same head. wire
// may refuse more, but only for the reasons below, each a deliberate
// difference listed in doc.go.
var (
	// stricterRequest are the refusals of requests net/http accepts.
	stricterRequest = []error{
		errBareLF,         // net/http takes a bare LF as a line end
		errObsFold,        // net/http unfolds obs-fold
		errCLAndTE,        // net/http drops the Content-Length
		errTE10,           // net/http ignores Transfer-Encoding in HTTP/1.0
		errVersion,        // net/http takes any HTTP/1.x, and PRI * HTTP/2.0
		errMissingHost,    // net/http lets CONNECT and h2c's PRI go without Host
		errTarget,         // wire's request-target grammar is RFC 9112 §3.2's, stricter than net/url's
		errAsterisk,       // net/http takes "*" with any method
		errUserinfo,       // net/url takes userinfo
		ErrTooManyHeaders, // net/http's limit is in bytes (MaxHeaderBytes)
	}
	// stricterResponse are the refusals of responses net/http's client
	// accepts.
	stricterResponse = []error{
		errBareLF, errObsFold, errCLAndTE, errTE10, errVersion, ErrTooManyHeaders,
		errStatusLine,       // net/http takes "+12", "000", spaces before the code, any reason-phrase
		errBareCR,           // ... a CR in the reason-phrase too
		errSpaceBeforeColon, // the client keeps "Name :" and "Na me:" fields uncanonicalized
		errFieldName,
	}
)

// requestCorpus seeds the differential test and FuzzParseRequest: ordinary
// requests and the smuggling attempts a proxy meets.
var requestCorpus = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /greet?x=1 HTTP/1.1\r\nHost: greeter\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n",
	"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST /p HTTP/1.1\nHost: a\nContent-Length: 1\n\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
	"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET http://a.b:80/x?y HTTP/1.1\r\nHost: c\r\n\r\n",
	"GET http://[::1]:80/ HTTP/1.1\r\nHost: c\r\n\r\n",
	"GET http://u@a/ HTTP/1.1\r\nHost: c\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a?%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n",
	"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nExpect: 100-continue\r\n\r\n",
	"GET / HTTP/1.5\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
	"G\x7fT / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /\xff HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n",
}

// netHTTPRequest is the oracle: Go's HTTP/1 server reading b, that is
// http.ReadRequest plus the checks conn.readRequest makes after it
// (net/http/server.go), written out here independently of wire's tables.
func netHTTPRequest(b []byte) (*http.Request, error) {
	// The server skips leading CRLFs only after a POST, and four bytes at
	// most; wire always skips empty lines. Skip them to compare the rest.
	for bytes.HasPrefix(b, []byte("\r\n")) {
		b = b[2:]
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return nil, err
	}
	if req.ProtoMajor != 1 && (req.ProtoMajor != 2 || req.ProtoMinor != 0 || req.Method != "PRI" || req.RequestURI != "*") {
		return nil, errors.New("unsupported protocol version")
	}
	// ReadRequest deletes Host from the Header that conn.readRequest checks;
	// read it again as readRequest did, and put it back.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, err
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	hosts, haveHost := mh["Host"]
	if haveHost {
		req.Header["Host"] = hosts
	}
	isH2Upgrade := req.Method == "PRI" && len(req.Header) == 0 && req.URL.Path == "*" && req.Proto == "HTTP/2.0"
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && !isH2Upgrade && req.Method != "CONNECT" {
		return nil, errors.New("missing required Host header")
	}
	const hostBytes = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!$%&()*+,-.:;=[']_~"
	if len(hosts) == 1 && strings.Trim(hosts[0], hostBytes) != "" {
		return nil, errors.New("malformed Host header")
	}
	const tchars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~"
	for k, vv := range req.Header {
		if k == "" || strings.Trim(k, tchars) != "" {
			return nil, errors.New("invalid header name")
		}
		for _, v := range vv {
			if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
				return nil, errors.New("invalid header value")
			}
		}
	}
	return req, nil
}

// headerOf is h's fields as net/http's Header holds them after reading the
// head: canonical keys, Transfer-Encoding removed, repeated Content-Length
// collapsed, Trailer removed from chunked messages, and Pragma: no-cache
// implying Cache-Control (fixPragmaCacheControl).
func headerOf(h *Head) http.Header {
	hdr := http.Header{}
	for _, f := range h.Fields {
		k := textproto.CanonicalMIMEHeaderKey(string(f.Name))
		if k == "Content-Length" && len(hdr[k]) > 0 {
			continue
		}
		hdr[k] = append(hdr[k], string(f.Value))
	}
	delete(hdr, "Transfer-Encoding")
	if h.Chunked {
		delete(hdr, "Trailer")
	}
	if p := hdr["Pragma"]; len(p) > 0 && p[0] == "no-cache" && hdr["Cache-Control"] == nil {
		hdr["Cache-Control"] = []string{"no-cache"}
	}
	return hdr
}

// isOneOf reports whether err is one of errs.
func isOneOf(err error, errs []error) bool {
	for _, e := range errs {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// checkRequest compares wire's reading of b with net/http's.
func checkRequest(t *testing.T, b []byte) {
	t.Helper()
	var h Head
	n, err := h.ParseRequest(b)
	req, oracleErr := netHTTPRequest(b)
	switch {
	case oracleErr != nil && err == nil:
		t.Fatalf("ParseRequest(%q): net/http refuses (%v), wire accepts %d bytes", b, oracleErr, n)
	case oracleErr != nil:
		return
	case errors.Is(err, ErrIncomplete):
		// net/http reads the head to its end, and read it whole: wire must too.
		t.Fatalf("ParseRequest(%q): got ErrIncomplete, net/http reads a whole head", b)
	case err != nil:
		if !isOneOf(err, stricterRequest) {
			t.Fatalf("ParseRequest(%q): got error %v, but net/http accepts and that refusal is not a documented difference", b, err)
		}
		return
	}
	if n < 4 || string(b[n-4:n]) != "\r\n\r\n" {
		t.Fatalf("ParseRequest(%q): got n %d, not at a CRLF CRLF", b, n)
	}
	var h2 Head
	if _, err := h2.ParseRequest(b[:n-1]); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("ParseRequest(%q) of all but the last byte: got error %v, want ErrIncomplete", b[:n-1], err)
	}
	type reading struct {
		Method, Target string
		ContentLength  int64
		Chunked, Close bool
		Header         http.Header
	}
	want := reading{req.Method, req.RequestURI, req.ContentLength,
		len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked", req.Close, req.Header}
	got := reading{string(h.Method), string(h.Target), max(h.ContentLength, 0), h.Chunked, h.Close, headerOf(&h)}
	if h.Chunked {
		got.ContentLength = -1
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ParseRequest(%q) (-net/http +wire):\n%s", b, diff)
	}
}

func TestRequestsAgainstNetHTTP(t *testing.T) {
	for i, s := range requestCorpus {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkRequest(t, []byte(s)) })
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestCorpus {
		f.Add([]byte(s))
	}
	f.Fuzz(checkRequest)
}

// responseCorpus seeds FuzzParseResponse.
var responseCorpus = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.0 200\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
	"HTTP/1.1 +12 OK\r\n\r\n",
	"HTTP/1.1 200 OK\nX: y\n\n",
}

// checkResponse compares wire's reading of b with net/http's client's.
func checkResponse(t *testing.T, b []byte) {
	t.Helper()
	var h Head
	n, err := h.ParseResponse(b)
	resp, oracleErr := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	switch {
	case oracleErr != nil && err == nil:
		t.Fatalf("ParseResponse(%q): net/http refuses (%v), wire accepts %d bytes", b, oracleErr, n)
	case oracleErr != nil:
		return
	case errors.Is(err, ErrIncomplete):
		t.Fatalf("ParseResponse(%q): got ErrIncomplete, net/http reads a whole head", b)
	case err != nil:
		if !isOneOf(err, stricterResponse) {
			t.Fatalf("ParseResponse(%q): got error %v, but net/http accepts and that refusal is not a documented difference", b, err)
		}
		return
	}
	hdr := headerOf(&h)
	if h.Minor == 1 && h.HasToken("Connection", "close") {
		delete(hdr, "Connection") // shouldClose removes it from a response
	}
	type reading struct {
		Status  int
		Chunked bool
		Header  http.Header
	}
	want := reading{resp.StatusCode, len(resp.TransferEncoding) > 0, resp.Header}
	got := reading{h.Status, h.Chunked, hdr}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ParseResponse(%q) (-net/http +wire):\n%s", b, diff)
	}
	bodyless := h.Status/100 == 1 || h.Status == 204 || h.Status == 304
	if !bodyless && !h.Chunked && resp.ContentLength != h.ContentLength {
		t.Fatalf("ParseResponse(%q): got ContentLength %d, net/http %d", b, h.ContentLength, resp.ContentLength)
	}
	unbounded := !bodyless && !h.Chunked && h.ContentLength < 0
	if resp.Close != (h.Close || unbounded) {
		t.Fatalf("ParseResponse(%q): got Close %v (unbounded body %v), net/http %v", b, h.Close, unbounded, resp.Close)
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range responseCorpus {
		f.Add([]byte(s))
	}
	f.Fuzz(checkResponse)
}

// FuzzChunked holds Chunked to two properties: split anywhere, it reads the
// same as in one piece; and whatever net/http's chunked reader refuses,
// Chunked refuses too. Chunked may refuse more: whitespace after a
// chunk-size, a malformed or oversized trailer section (net/http's reader
// stops at the last chunk), and overhead in the last chunk's line (net/http
// charges it, then returns EOF regardless).
func FuzzChunked(f *testing.F) {
	for _, s := range chunkedAccepts {
		f.Add([]byte(s.body), uint64(1))
	}
	f.Add([]byte("5\r\nhello\r\n0\r\nX: y\r\n\r\n"), uint64(7))
	f.Add([]byte("5;a=b\r\nhello\r\n00\r\n\r\n"), uint64(3))
	f.Add([]byte("5 \r\nhello\r\n0\r\n\r\n"), uint64(3))
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		n, done, err := scanWhole(b)
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		var cuts []int
		for at := 0; len(b) > 0; {
			if at += rng.IntN(len(b)/4 + 2); at >= len(b) {
				break
			}
			cuts = append(cuts, at)
		}
		if n2, done2, err2 := scanSplit(b, cuts...); n2 != n || done2 != done || !sameErr(err2, err) {
			t.Fatalf("Scan(%q) split at %v: got (%d, %v, %v), in one piece (%d, %v, %v)", b, cuts, n2, done2, err2, n, done, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Scan(%q): got error %v, want one wrapping ErrMalformed", b, err)
		}
		if !done {
			return
		}
		if _, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(b[:n]))); err != nil {
			t.Fatalf("Scan(%q): got done at %d, net/http's chunked reader refuses: %v", b, n, err)
		}
	})
}

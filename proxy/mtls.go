package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/tender-mesh/tender/security"
)

// MeshTLS is the sidecar's side of the mesh's mutual TLS: the workload
// certificate and the trust bundle behind two TLS configurations.
// *workload.Manager implements it.
type MeshTLS interface {
	// ClientConfig presents the workload certificate, offers alpn and
	// verifies the server's SPIFFE ID.
	ClientConfig(alpn string) *tls.Config
	// ServerConfig requires a client certificate of the mesh.
	ServerConfig() *tls.Config
	// Ready reports whether there is a certificate to present.
	Ready() bool
}

// The mesh's ALPN values: the "tender/" prefix tells the inbound side a
// sidecar is calling (an app's own TLS passes through), and the rest
// names the protocol inside.
const (
	alpnPrefix = "tender/"
	alpnHTTP1  = alpnPrefix + "http1.1"
	alpnHTTP2  = alpnPrefix + "h2"
	alpnTCP    = alpnPrefix + "tcp"
)

// tlsRecordHandshake is the first byte of a TLS ClientHello record.
const tlsRecordHandshake = 0x16

// handshakeTimeout bounds the inbound mTLS handshake.
const handshakeTimeout = 10 * time.Second

// meshALPN reports whether c (read through br) starts with a TLS
// ClientHello that offers one of the mesh's ALPN values. It reads (and
// keeps in br) only the ClientHello record: the first bytes within
// detect, the rest of the record (a post-quantum hello spans segments)
// within handshakeTimeout.
func meshALPN(c net.Conn, br *bufio.Reader, detect time.Duration) bool {
	defer c.SetReadDeadline(time.Time{})      //nolint:errcheck // a failed reset shows on the next read
	c.SetReadDeadline(time.Now().Add(detect)) //nolint:errcheck // a failed deadline shows as a read error
	hdr, err := br.Peek(5)
	if err != nil || hdr[0] != tlsRecordHandshake {
		return false
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	if n == 0 || 5+n > br.Size() {
		return false
	}
	c.SetReadDeadline(time.Now().Add(handshakeTimeout)) //nolint:errcheck // likewise
	record, err := br.Peek(5 + n)
	if err != nil {
		return false
	}
	// Let crypto/tls parse the hello from a copy, and stop it there.
	var offered []string
	srv := tls.Server(helloConn{r: strings.NewReader(string(record))}, &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			offered = hello.SupportedProtos
			return nil, errHelloRead
		},
	})
	srv.Handshake() //nolint:errcheck // always errHelloRead or a parse error
	for _, p := range offered {
		if strings.HasPrefix(p, alpnPrefix) {
			return true
		}
	}
	return false
}

var errHelloRead = errors.New("client hello read")

// helloConn feeds a recorded ClientHello to tls.Server and swallows what
// the server would answer.
type helloConn struct {
	net.Conn
	r io.Reader
}

func (c helloConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c helloConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c helloConn) Close() error                     { return nil }
func (c helloConn) SetDeadline(time.Time) error      { return nil }
func (c helloConn) SetReadDeadline(time.Time) error  { return nil }
func (c helloConn) SetWriteDeadline(time.Time) error { return nil }
func (c helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// bufferedConn is a connection whose first bytes sit in br.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.br.Read(b) }

// acceptMTLS completes the server side of a mesh handshake on c (whose
// ClientHello is in br) and returns the TLS connection and the client's
// SPIFFE ID.
func (p *Proxy) acceptMTLS(c net.Conn, br *bufio.Reader) (*tls.Conn, string, error) {
	tc := tls.Server(&bufferedConn{Conn: c, br: br}, p.serverTLS)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, "", err
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return nil, "", errors.New("no client certificate")
	}
	id, err := security.IDFromCert(st.PeerCertificates[0])
	if err != nil {
		return nil, "", err
	}
	return tc, id.String(), nil
}

// meshPeer is how the sidecar reaches an upstream: over the mesh's mutual
// TLS when on, accepting a server whose SPIFFE ID is one of ids (space
// separated; empty when the control plane sent none: any ID of the trust
// domain, which the TLS configuration checks).
type meshPeer struct {
	on  bool
	ids string
}

// dialMTLS connects to addr and runs the client side of a mesh handshake
// offering alpn; it returns the connection and the server's SPIFFE ID,
// which must be one of ids (see meshPeer).
func (p *Proxy) dialMTLS(ctx context.Context, d *net.Dialer, addr, alpn, ids string) (*tls.Conn, string, error) {
	// Connect and handshake within the dial timeout: a silent upstream is
	// a connect failure, not a hung request.
	ctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	tc := tls.Client(raw, p.clientTLS[alpn])
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, "", &net.OpError{Op: "dial", Net: "tcp", Addr: raw.RemoteAddr(), Err: err}
	}
	id, err := security.IDFromCert(tc.ConnectionState().PeerCertificates[0])
	if err == nil && ids != "" && !slices.Contains(strings.Fields(ids), id.String()) {
		err = fmt.Errorf("server identity %s is not the destination's (%s)", id, ids)
	}
	if err != nil {
		tc.Close() //nolint:errcheck // refusing the server anyway
		return nil, "", &net.OpError{Op: "dial", Net: "tcp", Addr: raw.RemoteAddr(), Err: err}
	}
	return tc, id.String(), nil
}

package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// noCerts is a MeshTLS that has no certificate yet: enough to make the
// proxy one of a mesh with mutual TLS.
type noCerts struct{}

func (noCerts) ClientConfig(string) *tls.Config { return &tls.Config{} }
func (noCerts) ServerConfig() *tls.Config       { return &tls.Config{} }
func (noCerts) Ready() bool                     { return false }

// TestPeerClaim: X-Tender-Peer names workloads in telemetry only as far
// as the peer's certificate backs it: over mTLS a claimed namespace must
// be the certificate's; in plaintext, in a mesh with mTLS, nothing is
// believed; in a mesh without it, the claim is all there is.
func TestPeerClaim(t *testing.T) {
	meshed := New(Options{MTLS: noCerts{}})
	defer meshed.Shutdown(t.Context())
	plainMesh := New(Options{})
	defer plainMesh.Shutdown(t.Context())
	const shopCart = "spiffe://cluster.local/ns/shop/sa/cart"
	for _, tt := range []struct {
		name      string
		p         *Proxy
		header    string
		principal string
		mtls      bool
		want      interceptor.Peer
		ok        bool
	}{
		{"mtls, namespace matches", meshed, "shop/cart", shopCart, true, interceptor.Peer{Workload: "cart", Namespace: "shop"}, true},
		{"mtls, namespace claimed falsely", meshed, "bank/payments", shopCart, true, interceptor.Peer{Workload: interceptor.Unknown, Namespace: "shop"}, true},
		{"mtls, malformed header", meshed, "x", shopCart, true, interceptor.Peer{Workload: interceptor.Unknown, Namespace: "shop"}, true},
		{"mtls, no SPIFFE ID", meshed, "shop/cart", "", true, interceptor.Peer{}, false},
		{"plaintext in an mTLS mesh", meshed, "shop/cart", "", false, interceptor.Peer{}, false},
		{"plaintext mesh", plainMesh, "shop/cart", "", false, interceptor.Peer{Workload: "cart", Namespace: "shop"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.p.peerClaim(tt.header, tt.principal, tt.mtls)
			if got != tt.want || ok != tt.ok {
				t.Errorf("peerClaim(%q, %q, %v) = %+v, %v; want %+v, %v", tt.header, tt.principal, tt.mtls, got, ok, tt.want, tt.ok)
			}
		})
	}
	for _, p := range []string{"spiffe://td/ns/a/b/sa/c", "spiffe://td/ns//sa/c", "https://td/ns/a/sa/b", "spiffe://td/sa/a/ns/b"} {
		if ns := namespaceOf(p); ns != "" {
			t.Errorf("namespaceOf(%q) = %q, want none", p, ns)
		}
	}
}

// TestLateClientHello: a mesh client whose hello comes after the sniff
// window (a loaded node) is still taken for mTLS where plaintext could
// not be served anyway (STRICT) or where the client speaks first (a
// declared HTTP port); before, it was refused as plaintext.
func TestLateClientHello(t *testing.T) {
	dst := netip.MustParseAddrPort("10.0.0.5:8080")
	for _, tt := range []struct {
		name, mode, protocol string
	}{
		{"strict", xdsclient.MTLSStrict, "TCP"},
		{"permissive http", xdsclient.MTLSPermissive, "HTTP"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			p := New(Options{MTLS: noCerts{}, DetectTimeout: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			defer p.Shutdown(t.Context())
			tb := NewTable()
			cl := &Cluster{Name: "web", Namespace: "default", MTLSMode: tt.mode, Protocol: tt.protocol}
			tb.Clusters["web"], tb.ByAddrPort[dst] = cl, []*Cluster{cl}
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				time.Sleep(200 * time.Millisecond)                                                                     // ten sniff windows late
				tls.Client(client, &tls.Config{NextProtos: []string{alpnHTTP2}, InsecureSkipVerify: true}).Handshake() //nolint:errcheck // the server has no certificate: only the hello matters
			}()
			p.inboundSecurity(server, bufio.NewReaderSize(server, 16<<10), dst, tb)
			if strings.Contains(logs.String(), "plaintext connection refused") || !strings.Contains(logs.String(), "mTLS handshake refused") {
				t.Errorf("a late hello was not taken for mTLS; logs:\n%s", logs.String())
			}
		})
	}
}

package proxy

import (
	"crypto/tls"
	"testing"

	"github.com/tender-mesh/tender/interceptor"
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

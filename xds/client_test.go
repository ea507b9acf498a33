package xds

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// runClient runs a Client against addr until the test ends.
func runClient(t *testing.T, addr string, apply func(*xdsclient.Config) error) *xdsclient.Client {
	t.Helper()
	c := xdsclient.New(xdsclient.Options{Addr: addr, Node: &corev3.Node{Id: "sidecar-1"}, Apply: apply})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func endpointsOf(cfg *xdsclient.Config, cluster string) []string {
	var out []string
	for _, lle := range cfg.Endpoints[cluster].GetEndpoints() {
		for _, e := range lle.GetLbEndpoints() {
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	return out
}

func TestClientAppliesACKsAndNACKs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, metrics := newTestServer(t, svc("a", "10.0.0.1"))
	addr := startServer(t, s)

	var mu sync.Mutex
	reject := ""
	c := runClient(t, addr, func(cfg *xdsclient.Config) error {
		mu.Lock()
		defer mu.Unlock()
		for name := range cfg.Endpoints {
			for _, a := range endpointsOf(cfg, name) {
				if a == reject {
					return errors.New("endpoint " + a + " refused by test")
				}
			}
		}
		return nil
	})
	const a = "outbound|8080||a.default.svc.cluster.local"
	waitFor(t, ctx, func() bool { cfg := c.Current(); return cfg.Complete() && len(endpointsOf(cfg, a)) == 1 })

	// An update the sidecar rejects is NACKed and the last config stays.
	mu.Lock()
	reject = "10.0.0.66"
	mu.Unlock()
	if err := s.Apply(snapshot(2, svc("a", "10.0.0.66"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return testutil.ToFloat64(metrics.NACKs.WithLabelValues("ClusterLoadAssignment")) >= 1 })
	if got := endpointsOf(c.Current(), a); len(got) != 1 || got[0] != "10.0.0.1" {
		t.Fatalf("after a NACK the client has %v, want the last good 10.0.0.1", got)
	}

	// A good update is applied; a new cluster brings its assignment.
	if err := s.Apply(snapshot(3, svc("a", "10.0.0.2"), svc("b", "10.0.0.3"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool {
		cfg := c.Current()
		return cfg.Complete() && len(cfg.Clusters) == 2 && endpointsOf(cfg, a)[0] == "10.0.0.2"
	})
	waitFor(t, ctx, func() bool {
		ps := s.Proxies()
		return len(ps) == 1 && ps[0].Mode == "delta" && ps[0].Status[resource.ClusterType] == Synced &&
			ps[0].Status[resource.EndpointType] == Synced && ps[0].Status[resource.ListenerType] == NotSent
	})
}

// serveAt serves s on addr ("127.0.0.1:0": any port) until stop, which
// waits for the server to end; it returns the address.
func serveAt(t *testing.T, ctx context.Context, s *Server, addr string) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx, lis) }()
	return lis.Addr().String(), func() { cancel(); <-done }
}

// TestClientSurvivesControlPlaneRestart: the config stays while the
// server is gone, and updates flow again from a new server.
func TestClientSurvivesControlPlaneRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s1 := NewServer(Options{})
	if err := s1.Apply(snapshot(1, svc("a", "10.0.0.1"), svc("b", "10.0.0.2"))); err != nil {
		t.Fatal(err)
	}
	addr, stop := serveAt(t, ctx, s1, "127.0.0.1:0")
	c := runClient(t, addr, func(*xdsclient.Config) error { return nil })
	waitFor(t, ctx, func() bool { return c.Current().Complete() && len(c.Current().Clusters) == 2 })
	stop()
	if n := len(c.Current().Clusters); n != 2 {
		t.Fatalf("with the server gone the client has %d clusters, want 2", n)
	}
	// A new server where b is gone: the client learns the removal.
	s2 := NewServer(Options{})
	if err := s2.Apply(snapshot(1, svc("a", "10.0.0.1"))); err != nil {
		t.Fatal(err)
	}
	_, stop2 := serveAt(t, ctx, s2, addr)
	defer stop2()
	waitFor(t, ctx, func() bool { cfg := c.Current(); return len(cfg.Clusters) == 1 && len(cfg.Endpoints) == 1 })
}

// TestSharedNames: the type URLs and values the sidecar's client
// declares are go-control-plane's and the model's.
func TestSharedNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{xdsclient.ClusterType, resource.ClusterType},
		{xdsclient.EndpointType, resource.EndpointType},
		{xdsclient.RouteType, resource.RouteType},
		{xdsclient.SecretType, resource.SecretType},
		{xdsclient.MTLSPermissive, string(discovery.MTLSPermissive)},
		{xdsclient.MTLSStrict, string(discovery.MTLSStrict)},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

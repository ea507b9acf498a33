package xds

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// vsvc is svc with a VIP.
func vsvc(name, vip string, addrs ...string) discovery.Service {
	s := svc(name, addrs...)
	s.VIP = netip.MustParseAddr(vip)
	return s
}

// runOnDemand runs an on-demand client.
func runOnDemand(t *testing.T, addr string, opts xdsclient.Options) (*xdsclient.Client, *atomic.Int64) {
	t.Helper()
	opts.OnDemand = true
	return runXDS(t, addr, opts)
}

// runXDS runs a client with opts.
func runXDS(t *testing.T, addr string, opts xdsclient.Options) (*xdsclient.Client, *atomic.Int64) {
	t.Helper()
	var applied atomic.Int64
	opts.Addr, opts.Node = addr, &corev3.Node{Id: "od-1"}
	opts.Apply = func(*xdsclient.Config) error { applied.Add(1); return nil }
	c := xdsclient.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, &applied
}

func clusterNames(cfg *xdsclient.Config) []string {
	out := make([]string, 0, len(cfg.Clusters))
	for n := range cfg.Clusters {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

const (
	clA = "outbound|8080||a.default.svc.cluster.local"
	clB = "outbound|8080||b.default.svc.cluster.local"
)

// TestOnDemand: an on-demand client holds its own pod's services and what
// it connected to, nothing else; learns of an unknown address in one
// round trip; gets the changes of what it holds and none of the rest;
// drops what it stopped using.
func TestOnDemand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var others []discovery.Service
	for i := range 50 {
		others = append(others, vsvc(fmt.Sprintf("other%d", i), fmt.Sprintf("10.96.1.%d", i), fmt.Sprintf("10.1.1.%d", i)))
	}
	mesh := func(v uint64, bAddr string, extra ...discovery.Service) *discovery.Snapshot {
		return snapshot(v, append(append([]discovery.Service{vsvc("a", "10.96.0.1", "10.0.0.1"), vsvc("b", "10.96.0.2", bAddr)}, others...), extra...)...)
	}
	s := NewServer(Options{})
	if err := s.Apply(mesh(1, "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, s)
	c, applied := runOnDemand(t, addr, xdsclient.Options{Own: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Idle: 5 * time.Second})

	waitFor(t, ctx, func() bool { return c.Current().Complete() })
	if got := clusterNames(c.Current()); !slices.Equal(got, []string{clA}) {
		t.Fatalf("at start the client holds clusters %v, want only its own service's [%s]", got, clA)
	}
	if c.Current().Defaults == nil {
		t.Error("no mesh defaults at start")
	}

	// The first connection to b's VIP: b comes, with its endpoints and
	// routes.
	start := time.Now()
	if !c.Resolve(netip.MustParseAddr("10.96.0.2"), 10*time.Second) {
		t.Fatal("Resolve(b's VIP) = false, want true")
	}
	cfg := c.Current()
	if got := clusterNames(cfg); !slices.Equal(got, []string{clA, clB}) {
		t.Fatalf("after resolving b the client holds %v, want [%s %s]", got, clA, clB)
	}
	if got := endpointsOf(cfg, clB); !slices.Equal(got, []string{"10.0.0.2"}) || cfg.Routes[xdsclient.RouteNameOf(cfg.Clusters[clB])] == nil {
		t.Fatalf("b resolved without its endpoints (%v) or route configuration", got)
	}
	t.Logf("resolved b in %s", time.Since(start))

	// An address no service has: false in one round trip, not after a
	// timeout.
	start = time.Now()
	found := c.Resolve(netip.MustParseAddr("192.0.2.7"), 10*time.Second)
	if found || time.Since(start) > 5*time.Second {
		t.Fatalf("Resolve(unknown) = %v after %s, want false at once", found, time.Since(start))
	}

	// A change to b reaches the client; a change to a service it does
	// not hold sends it nothing.
	n := applied.Load()
	if err := s.Apply(mesh(2, "10.0.0.2", vsvc("new", "10.96.9.9", "10.9.9.9"))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := applied.Load(); got != n {
		t.Errorf("a service the client does not hold was added: %d applies, want none", got-n)
	}
	c.Used(netip.MustParseAddr("10.96.0.2"))
	if err := s.Apply(mesh(3, "10.0.0.22", vsvc("new", "10.96.9.9", "10.9.9.9"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return slices.Equal(endpointsOf(c.Current(), clB), []string{"10.0.0.22"}) })
	// The unknown address got a service: the subscription follows.
	c.Used(netip.MustParseAddr("10.96.0.2"))

	// Unused for longer than Idle: b is dropped, a stays.
	waitFor(t, ctx, func() bool { return slices.Equal(clusterNames(c.Current()), []string{clA}) })
	if c.Current().Endpoints[clB] != nil || !c.Current().Complete() {
		t.Error("b's endpoints stayed after b was dropped, or the config is no longer complete")
	}
	// And comes back on the next connection.
	if !c.Resolve(netip.MustParseAddr("10.96.0.2"), 10*time.Second) {
		t.Fatal("Resolve(b) after it was dropped = false")
	}
}

// TestOnDemandResubscribes: a restarted control plane gets the client's
// subscriptions again, and the client learns what changed meanwhile.
func TestOnDemandResubscribes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s1 := NewServer(Options{})
	if err := s1.Apply(snapshot(1, vsvc("a", "10.96.0.1", "10.0.0.1"), vsvc("b", "10.96.0.2", "10.0.0.2"))); err != nil {
		t.Fatal(err)
	}
	addr, stop := serveAt(t, ctx, s1, "127.0.0.1:0")
	c, _ := runOnDemand(t, addr, xdsclient.Options{Own: []netip.Addr{netip.MustParseAddr("10.0.0.1")}})
	if !c.Resolve(netip.MustParseAddr("10.96.0.2"), 10*time.Second) {
		t.Fatal("Resolve(b) = false")
	}
	stop()
	s2 := NewServer(Options{})
	if err := s2.Apply(snapshot(2, vsvc("a", "10.96.0.1", "10.0.0.1"), vsvc("b", "10.96.0.2", "10.0.0.3"), vsvc("c", "10.96.0.3", "10.0.0.4"))); err != nil {
		t.Fatal(err)
	}
	_, stop2 := serveAt(t, ctx, s2, addr)
	defer stop2()
	waitFor(t, ctx, func() bool { return slices.Equal(endpointsOf(c.Current(), clB), []string{"10.0.0.3"}) })
	if got := clusterNames(c.Current()); !slices.Equal(got, []string{clA, clB}) {
		t.Errorf("after the restart the client holds %v, want [%s %s]", got, clA, clB)
	}
}

// TestPodLocality: a sidecar learns where its pod runs from the control
// plane, and when the pod's node changes zone; a pod the control plane
// knows nothing of gets an empty answer.
func TestPodLocality(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap := func(v uint64, zone string) *discovery.Snapshot {
		s := snapshot(v, vsvc("a", "10.96.0.1", "10.0.0.1"))
		s.Localities = map[string]discovery.Locality{"default/od-1": {Region: "r1", Zone: zone}, "default/other": {Zone: "z9"}}
		return s
	}
	s := NewServer(Options{})
	if err := s.Apply(snap(1, "z1")); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, s)
	for _, onDemand := range []bool{true, false} {
		c, _ := runXDS(t, addr, xdsclient.Options{Pod: "default/od-1", OnDemand: onDemand})
		waitFor(t, ctx, func() bool {
			l, ok := c.Current().Locality("default/od-1")
			return ok && l == xdsclient.Locality{Region: "r1", Zone: "z1"}
		})
		if _, ok := c.Current().Locality("default/other"); ok {
			t.Error("the client holds another pod's locality")
		}
	}
	c, _ := runOnDemand(t, addr, xdsclient.Options{Pod: "default/od-1"})
	if err := s.Apply(snap(2, "z2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { l, _ := c.Current().Locality("default/od-1"); return l.Zone == "z2" })

	unknown, _ := runOnDemand(t, addr, xdsclient.Options{Pod: "default/nobody"})
	waitFor(t, ctx, func() bool { return unknown.Current().Routes[xdsclient.PodLocalityName("default/nobody")] != nil })
	if _, ok := unknown.Current().Locality("default/nobody"); ok {
		t.Error("a pod the control plane does not know got a locality")
	}
}

// TestPolicyChangeOnRoutedService: a service whose port has routes takes a
// change to its own policy (its timeout is the default of every rule), as
// the incremental translation must notice.
func TestPolicyChangeOnRoutedService(t *testing.T) {
	cfg := loadServices(t, "routes.yaml")
	s := NewServer(Options{})
	snap := &discovery.Snapshot{Version: 1, Services: cfg.Static, Routes: cfg.Routes, Created: time.Now()}
	if err := s.Apply(snap); err != nil {
		t.Fatal(err)
	}
	timeoutOf := func() string {
		for _, r := range s.state.Load().resources[resource.RouteType] {
			rc := r.(*routev3.RouteConfiguration)
			if rc.GetName() != "greeter.default.svc.cluster.local:8080" {
				continue
			}
			return rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetTimeout().AsDuration().String()
		}
		t.Fatal("no route configuration for greeter:8080")
		return ""
	}
	before := timeoutOf()
	services := slices.Clone(cfg.Static)
	for i := range services {
		if services[i].Name == "greeter" {
			services[i].Policy.Timeout = 7 * time.Second
		}
	}
	if err := s.Apply(&discovery.Snapshot{Version: 2, Services: services, Routes: cfg.Routes, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if got := timeoutOf(); got != "7s" {
		t.Fatalf("greeter's timeout set to 7s: its routed route configuration has %s (before: %s)", got, before)
	}
}

// TestOnDemandWithUnresolvedBackend: a route with a backend that does not
// resolve (the translator names it invalid|…; requests to it get 500)
// does not keep an on-demand sidecar waiting for a cluster that cannot
// come: its own pod's config completes, and the service's VIP resolves.
func TestOnDemandWithUnresolvedBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := loadServices(t, "routes.yaml")
	var web *discovery.Service
	for i := range cfg.Static {
		if cfg.Static[i].Name == "web" {
			web = &cfg.Static[i]
		}
	}
	web.Endpoints = []discovery.Endpoint{{Address: netip.MustParseAddr("10.1.0.20"), Health: discovery.HealthHealthy}}
	s := NewServer(Options{})
	if err := s.Apply(&discovery.Snapshot{Version: 1, Services: cfg.Static, Routes: cfg.Routes, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, s)
	c, _ := runOnDemand(t, addr, xdsclient.Options{Own: []netip.Addr{web.Endpoints[0].Address}})
	waitFor(t, ctx, func() bool { return c.Current().Complete() })
	if !c.Resolve(web.VIP, 5*time.Second) {
		t.Fatal("web's VIP, whose routes name an unresolved backend, did not resolve")
	}
}

// TestRestartSendsNothingUnchanged: a sidecar reconnecting to a restarted
// control plane names the versions it holds, and gets nothing again of
// what did not change.
func TestRestartSendsNothingUnchanged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mesh := func(v uint64, bAddr string) *discovery.Snapshot {
		return snapshot(v, vsvc("a", "10.96.0.1", "10.0.0.1"), vsvc("b", "10.96.0.2", bAddr))
	}
	s1 := NewServer(Options{})
	if err := s1.Apply(mesh(1, "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	addr, stop := serveAt(t, ctx, s1, "127.0.0.1:0")
	c, applied := runOnDemand(t, addr, xdsclient.Options{Own: []netip.Addr{netip.MustParseAddr("10.0.0.1")}})
	if !c.Resolve(netip.MustParseAddr("10.96.0.2"), 10*time.Second) {
		t.Fatal("Resolve(b) = false")
	}
	stop()
	s2 := NewServer(Options{})
	if err := s2.Apply(mesh(1, "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	n := applied.Load()
	_, stop2 := serveAt(t, ctx, s2, addr)
	defer stop2()
	waitFor(t, ctx, func() bool {
		ps := s2.Proxies()
		return len(ps) == 1 && ps[0].Node != ""
	})
	time.Sleep(300 * time.Millisecond)
	if got := applied.Load() - n; got != 0 {
		t.Errorf("the same config on a restarted control plane: %d responses applied, want none", got)
	}
	// The stream is live: a change comes.
	if err := s2.Apply(mesh(2, "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return slices.Equal(endpointsOf(c.Current(), clB), []string{"10.0.0.3"}) })
}

// TestNegativeBounds: empty answers are held per stream up to its bound
// and in all up to the server's; past them a name gets none; releasing
// them (unsubscribe, stream closed) frees room.
func TestNegativeBounds(t *testing.T) {
	s := NewServer(Options{})
	if err := s.Apply(snapshot(1, vsvc("a", "10.96.0.1", "10.0.0.1"))); err != nil {
		t.Fatal(err)
	}
	s.negPerStream, s.negLimit = 2, 3
	idx := func(i int) string { return xdsclient.AddressIndexName(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})) }
	served := func(name string) bool { _, ok := s.caches[resource.RouteType].GetResources()[name]; return ok }
	s.subscribed(1, []string{idx(1), idx(2), idx(3)}, nil)
	if !served(idx(1)) || !served(idx(2)) || served(idx(3)) {
		t.Fatalf("stream 1 asked for 3 past a bound of 2 per stream: served %v %v %v, want the first two", served(idx(1)), served(idx(2)), served(idx(3)))
	}
	// A real index is no negative: it takes no room.
	s.subscribed(2, []string{xdsclient.AddressIndexName(netip.MustParseAddr("10.96.0.1")), idx(4), idx(5)}, nil)
	if !served(idx(4)) || served(idx(5)) {
		t.Fatalf("past a bound of 3 in all: served %v %v, want idx 4 only", served(idx(4)), served(idx(5)))
	}
	s.subscribed(1, nil, []string{idx(1)})
	s.closedStream(2)
	if served(idx(1)) || served(idx(4)) || !served(idx(2)) {
		t.Fatal("released empty answers were kept, or a held one dropped")
	}
	s.subscribed(3, []string{idx(5)}, nil)
	if !served(idx(5)) {
		t.Fatal("room freed by releases was not given to a new name")
	}
}

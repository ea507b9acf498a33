package xds

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/security/authz"
	"github.com/tender-mesh/tender/telemetry"
)

// startServer serves s on loopback until the test ends.
func startServer(tb testing.TB, s *Server) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// newTestServer returns a Server with fresh metrics, serving services.
func newTestServer(t *testing.T, services ...discovery.Service) (*Server, *telemetry.ControlPlane) {
	t.Helper()
	metrics, err := telemetry.NewControlPlane(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{Metrics: metrics})
	if err := s.Apply(snapshot(1, services...)); err != nil {
		t.Fatal(err)
	}
	return s, metrics
}

func svc(name string, addrs ...string) discovery.Service {
	s := discovery.Service{Name: name, Namespace: "default", Ports: []discovery.Port{{Name: "grpc", Number: 8080, Protocol: discovery.ProtocolGRPC}}}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Address: netip.MustParseAddr(a), Health: discovery.HealthHealthy})
	}
	return s
}

func snapshot(version uint64, services ...discovery.Service) *discovery.Snapshot {
	return &discovery.Snapshot{Version: version, Services: services, Created: time.Now()}
}

type deltaClient struct {
	t  *testing.T
	st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func newDeltaClient(t *testing.T, ctx context.Context, addr string) *deltaClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &deltaClient{t: t, st: st}
}

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.st.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// recv returns the next response and ACKs it.
func (c *deltaClient) recv() *discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	resp, err := c.st.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
	return resp
}

func names(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	slices.Sort(out)
	return out
}

// TestDeltaSendsOnlyChangedLoadAssignment is acceptance 4: a change to one
// endpoint sends that service's ClusterLoadAssignment and nothing else.
func TestDeltaSendsOnlyChangedLoadAssignment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b, c := svc("a", "10.0.0.1"), svc("b", "10.0.0.2"), svc("c", "10.0.0.3")
	s, metrics := newTestServer(t, a, b, c)
	cl := newDeltaClient(t, ctx, startServer(t, s))

	cl.send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "delta-1"}, TypeUrl: resource.ClusterType})
	clusters := cl.recv()
	wantClusters := []string{"outbound|8080||a.default.svc.cluster.local", "outbound|8080||b.default.svc.cluster.local", "outbound|8080||c.default.svc.cluster.local"}
	// The service clusters, and the one that carries the mesh's default
	// modes (it has no load assignment).
	if diff := cmp.Diff(append(slices.Clone(wantClusters), "tender.dev|mesh-defaults"), names(clusters)); diff != "" {
		t.Fatalf("initial clusters (-want +got):\n%s", diff)
	}
	cl.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: wantClusters})
	if diff := cmp.Diff(wantClusters, names(cl.recv())); diff != "" {
		t.Fatalf("initial endpoints (-want +got):\n%s", diff)
	}

	// Change b's endpoint, then c's. Were anything but b's assignment sent
	// for the first change, it would arrive before c's.
	b2 := svc("b", "10.0.0.22")
	if err := s.Apply(snapshot(2, a, b2, c)); err != nil {
		t.Fatal(err)
	}
	first := cl.recv()
	if first.GetTypeUrl() != resource.EndpointType {
		t.Fatalf("got a %s push, want only ClusterLoadAssignment", first.GetTypeUrl())
	}
	if diff := cmp.Diff([]string{"outbound|8080||b.default.svc.cluster.local"}, names(first)); diff != "" {
		t.Fatalf("first push (-want +got):\n%s", diff)
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := first.GetResources()[0].GetResource().UnmarshalTo(&cla); err != nil {
		t.Fatal(err)
	}
	got := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
	if got != "10.0.0.22" {
		t.Errorf("got endpoint %s, want 10.0.0.22", got)
	}

	if err := s.Apply(snapshot(3, a, b2, svc("c", "10.0.0.33"))); err != nil {
		t.Fatal(err)
	}
	second := cl.recv()
	if diff := cmp.Diff([]string{"outbound|8080||c.default.svc.cluster.local"}, names(second)); diff != "" || second.GetTypeUrl() != resource.EndpointType {
		t.Fatalf("second push: got %s %v, want only c's assignment", second.GetTypeUrl(), names(second))
	}

	// Removing a service removes its cluster and assignment.
	if err := s.Apply(snapshot(4, a, b2)); err != nil {
		t.Fatal(err)
	}
	removed := map[string][]string{}
	for range 2 {
		r := cl.recv()
		removed[r.GetTypeUrl()] = r.GetRemovedResources()
	}
	want := map[string][]string{
		resource.ClusterType:  {"outbound|8080||c.default.svc.cluster.local"},
		resource.EndpointType: {"outbound|8080||c.default.svc.cluster.local"},
	}
	if diff := cmp.Diff(want, removed); diff != "" {
		t.Errorf("removal (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(metrics.ConnectedProxies.WithLabelValues("delta")); got != 1 {
		t.Errorf("got %v connected delta proxies, want 1", got)
	}
}

// TestNACKIsCountedAndReported checks that a rejection shows in the
// metric and in Proxies, and that the next ACK clears it.
func TestNACKIsCountedAndReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, metrics := newTestServer(t, svc("a", "10.0.0.1"))
	conn, err := grpc.NewClient(startServer(t, s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sotw-1"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	nack := &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: statusProto("cluster rejected: test")}
	if err := st.Send(nack); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return testutil.ToFloat64(metrics.NACKs.WithLabelValues("Cluster")) == 1 })
	ps := s.Proxies()
	if len(ps) != 1 || ps[0].Node != "sotw-1" || ps[0].NACKed[resource.ClusterType] != "cluster rejected: test" {
		t.Fatalf("got proxies %+v, want sotw-1 with the NACK recorded", ps)
	}
	if st := ps[0].Status; st[resource.ClusterType] != Stale || st[resource.EndpointType] != NotSent {
		t.Errorf("status after a NACK: %v, want Cluster STALE, ClusterLoadAssignment NOT SENT", st)
	}
	// A new version after the NACK is sent, and its ACK clears the NACK.
	if err := s.Apply(snapshot(2, svc("a", "10.0.0.2"), svc("b", "10.0.0.3"))); err != nil {
		t.Fatal(err)
	}
	// The NACK itself may get the first version again before the new
	// one comes: ACK each until the new one.
	var resp2 *discoveryv3.DiscoveryResponse
	for len(resp2.GetResources()) != 3 { // the defaults, a and b
		if resp2, err = st.Recv(); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp2.GetNonce(), VersionInfo: resp2.GetVersionInfo()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, func() bool {
		ps := s.Proxies()
		return len(ps) == 1 && ps[0].Acked[resource.ClusterType] == resp2.GetVersionInfo() && len(ps[0].NACKed) == 0 &&
			ps[0].Status[resource.ClusterType] == Synced
	})
	// A newer version the proxy has not acknowledged: STALE.
	if err := s.Apply(snapshot(3, svc("a", "10.0.0.2"), svc("b", "10.0.0.3"), svc("c", "10.0.0.4"))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := s.Proxies()[0].Status[resource.ClusterType]; got != Stale {
		t.Errorf("status with a push not yet acknowledged: %s, want STALE", got)
	}
}

// TestVersionsFollowContent checks that versions name content: the same
// services give the same version, and a change in one type leaves the
// others' versions alone.
func TestVersionsFollowContent(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	if err := s.Apply(snapshot(1, svc("a", "10.0.0.1"))); err != nil {
		t.Fatal(err)
	}
	v1 := s.state.Load().versions
	if err := s.Apply(snapshot(2, svc("a", "10.0.0.1"))); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(v1, s.state.Load().versions); diff != "" {
		t.Errorf("same content, new versions (-before +after):\n%s", diff)
	}
	if err := s.Apply(snapshot(3, svc("a", "10.0.0.2"))); err != nil {
		t.Fatal(err)
	}
	v3 := s.state.Load().versions
	// (The route configurations' version changes: the address index of
	// the old and new endpoint address.)
	for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
		if v3[typ] != v1[typ] {
			t.Errorf("%s: version changed from %s to %s though only endpoints changed", shortType(typ), v1[typ], v3[typ])
		}
	}
	if v3[resource.EndpointType] == v1[resource.EndpointType] {
		t.Errorf("endpoint version %s did not change with the endpoints", v3[resource.EndpointType])
	}
}

// TestSecurityUpdates: policies and the trust bundle change the served
// routes and secrets; a source that reports the same security config
// again (mesh.yaml edited elsewhere) causes no push of its own.
func TestSecurityUpdates(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	if err := s.Apply(snapshot(1, svc("a", "10.0.0.1"))); err != nil {
		t.Fatal(err)
	}
	v1 := s.state.Load().versions
	next := snapshot(2, svc("a", "10.0.0.1"))
	next.Security = discovery.Security{
		MTLS:          &discovery.MTLSPolicy{Mode: discovery.MTLSStrict},
		Authorization: []authz.Policy{{Name: "p", Namespace: "default", Services: []string{"a"}, Rules: []authz.Rule{{}}}},
	}
	if err := s.Apply(next); err != nil {
		t.Fatal(err)
	}
	st := s.state.Load()
	if st.versions[resource.RouteType] == v1[resource.RouteType] || st.versions[resource.ClusterType] == v1[resource.ClusterType] {
		t.Errorf("a policy and a mode did not change the routes and clusters: %v → %v", v1, st.versions)
	}
	s.SetTrust("cluster.local", []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	if got := len(s.state.Load().resources[resource.SecretType]); got != 1 {
		t.Errorf("got %d secrets after SetTrust, want the ROOTCA one", got)
	}
	if got := s.state.Load().resources[resource.RouteType][0].(*routev3.RouteConfiguration); len(got.GetVirtualHosts()[0].GetTypedPerFilterConfig()) == 0 {
		t.Error("SetTrust's new snapshot lost the policies of the last one")
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-tick.C:
		}
	}
}

func statusProto(msg string) *statuspb.Status { return &statuspb.Status{Code: 3, Message: msg} }

// TestSotWNamedRequests is what proxyless gRPC clients do: a
// state-of-the-world stream asking for one listener and one cluster by
// name, in a mesh with more than one service. Each request is answered
// with the resource it names, and only with it.
func TestSotWNamedRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := svc("b", "10.0.0.2")
	s, _ := newTestServer(t, svc("a", "10.0.0.1"), b, svc("c", "10.0.0.3"))
	conn, err := grpc.NewClient(startServer(t, s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []struct{ typeURL, name string }{
		{resource.ListenerType, ListenerName(&b, b.Ports[0])},
		{resource.ClusterType, ClusterName(&b, b.Ports[0])},
		{resource.EndpointType, ClusterName(&b, b.Ports[0])},
	} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "grpc-1"}, TypeUrl: req.typeURL, ResourceNames: []string{req.name}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("%s %s: %v", req.typeURL, req.name, err)
		}
		if n := len(resp.GetResources()); resp.GetTypeUrl() != req.typeURL || n != 1 {
			t.Errorf("asked for %s %s, got %d resources of %s", req.typeURL, req.name, n, resp.GetTypeUrl())
		}
	}
}

// countingStringer counts how often it is formatted.
type countingStringer struct{ n *int }

func (c countingStringer) String() string { *c.n++; return "x" }

// TestCacheLoggerFormatsOnlyEnabledLevels: go-control-plane's chatter is
// not formatted unless debug logging is on.
func TestCacheLoggerFormatsOnlyEnabledLevels(t *testing.T) {
	var buf strings.Builder
	n := 0
	l := cacheLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	l.Infof("respond %v", countingStringer{&n})
	l.Debugf("respond %v", countingStringer{&n})
	if n != 0 || buf.Len() != 0 {
		t.Errorf("debug chatter at warn level: formatted %d times, logged %q", n, buf.String())
	}
	l.Warnf("warn %v", countingStringer{&n})
	if n != 1 || !strings.Contains(buf.String(), "warn x") {
		t.Errorf("a warning: formatted %d times, logged %q", n, buf.String())
	}
}

package proxy

import (
	"errors"
	"maps"
	"math"
	"net/netip"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/xds"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// config translates services the way the control plane does, so the test
// checks both sides of the resource shapes against each other.
func config(t *testing.T, services ...discovery.Service) *xdsclient.Config {
	t.Helper()
	res, err := xds.Translate(services, nil)
	if err != nil {
		t.Fatal(err)
	}
	return configOf(res)
}

// configOf is the sidecar's config holding the translator's resources.
func configOf(res xds.Resources) *xdsclient.Config {
	cfg := &xdsclient.Config{Clusters: map[string]*clusterv3.Cluster{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Routes: map[string]*routev3.RouteConfiguration{}, Versions: map[string]string{resource.ClusterType: "1", resource.RouteType: "1"}}
	for _, r := range res[resource.RouteType] {
		rc := r.(*routev3.RouteConfiguration)
		cfg.Routes[rc.GetName()] = rc
	}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		if c.GetName() == xdsclient.MeshDefaultsCluster {
			cfg.Defaults = c
			continue
		}
		cfg.Clusters[c.GetName()] = c
	}
	for _, r := range res[resource.EndpointType] {
		c := r.(*endpointv3.ClusterLoadAssignment)
		if c.GetClusterName() == xdsclient.MeshDefaultsCluster {
			continue // for sidecars of earlier releases; this one never asks
		}
		cfg.Endpoints[c.GetClusterName()] = c
	}
	return cfg
}

func greeterService(addrs ...string) discovery.Service {
	s := discovery.Service{
		Name: "greeter", Namespace: "default", VIP: netip.MustParseAddr("10.96.0.10"),
		Policy: discovery.TrafficPolicy{LB: discovery.LBRingHash, HashHeader: "x-user", ConnectTimeout: time.Second},
		Ports:  []discovery.Port{{Name: "http", Number: 80, Protocol: discovery.ProtocolHTTP}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Address: netip.MustParseAddr(a), Ports: map[string]uint32{"http": 8080}, Health: discovery.HealthHealthy})
	}
	return s
}

func TestBuildTableFromTranslatedConfig(t *testing.T) {
	cfg := config(t, greeterService("10.0.0.1", "10.0.0.2"))
	if !cfg.Complete() {
		t.Fatal("config with every assignment reports incomplete")
	}
	tb, err := BuildTable(cfg, nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	cl := tb.ByVIP[netip.MustParseAddrPort("10.96.0.10:80")]
	if cl == nil {
		t.Fatalf("VIP 10.96.0.10:80 not routed; table %v", tb.Names())
	}
	if cl.Protocol != "HTTP" || cl.HashHeader != "x-user" || cl.Policy != "RING_HASH" || !cl.Hashing || len(cl.Endpoints) != 2 {
		t.Errorf("got cluster %+v, want HTTP, x-user, RING_HASH, 2 endpoints", cl)
	}
	if e := cl.Picker.Pick(1); e == nil || e.Addr.Port() != 8080 {
		t.Errorf("picked %v, want an endpoint on its target port 8080", e)
	}

	// Stats survive a push that keeps the endpoint.
	cl.Endpoints[0].Stats.Total.Add(7)
	tb2, err := BuildTable(config(t, greeterService("10.0.0.1", "10.0.0.3")), tb, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tb2.Clusters[cl.Name].Endpoints {
		if e.Addr == cl.Endpoints[0].Addr && e.Stats.Total.Load() != 7 {
			t.Errorf("endpoint %v lost its counters across a push", e.Addr)
		}
	}
}

func TestBuildTableRejectsBadConfig(t *testing.T) {
	cfg := config(t, greeterService("10.0.0.1"))
	for _, cla := range cfg.Endpoints {
		cla.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "not-an-ip"
	}
	if _, err := BuildTable(cfg, nil, balancer.Locality{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("got %v, want ErrInvalidConfig for a bad endpoint address", err)
	}
	cfg = config(t, greeterService("10.0.0.1"))
	for _, c := range cfg.Clusters {
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	}
	if _, err := BuildTable(cfg, nil, balancer.Locality{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("got %v, want ErrInvalidConfig for an unsupported lb policy", err)
	}
}

// TestBuildTableResilience reads a service's resilience back from the
// translated Cluster and RouteConfiguration.
func TestBuildTableResilience(t *testing.T) {
	svc := greeterService("10.0.0.1")
	svc.Policy.Resilience = discovery.Resilience{
		Timeout: 2 * time.Second,
		Retries: &discovery.RetryPolicy{Attempts: 3, On: []string{"5xx", "connect-failure"}, PerTryTimeout: 200 * time.Millisecond,
			BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, BudgetPercent: 25, MinRetryConcurrency: 2},
		CircuitBreaker:   &discovery.CircuitBreaker{MaxRequests: 10, MaxRetries: 4},
		OutlierDetection: &discovery.OutlierDetection{Consecutive5xx: 3, BaseEjectionTime: time.Second, MaxEjectionPercent: 50},
		Fault:            &discovery.Fault{AbortPercent: 12.5, AbortStatus: 503, DelayPercent: 1, Delay: time.Millisecond},
	}
	cfg := config(t, svc)
	if !cfg.Complete() {
		t.Fatal("incomplete")
	}
	tb, err := BuildTable(cfg, nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	cl := tb.ByVIP[netip.MustParseAddrPort("10.96.0.10:80")]
	p := cl.Resilience
	wantOutlier := &balancer.OutlierPolicy{Consecutive5xx: 3, BaseEjectionTime: time.Second, MaxEjectionPercent: 50}
	if diff := cmp.Diff(wantOutlier, cl.Outlier); diff != "" {
		t.Errorf("outlier detection (-want +got):\n%s", diff)
	}
	want := &interceptor.Policy{
		Timeout: 2 * time.Second,
		Retry: &interceptor.RetryPolicy{Attempts: 3, On: interceptor.ParseRetryOn("5xx,connect-failure"), PerTryTimeout: 200 * time.Millisecond,
			BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond},
		// The budget overrides max retries, as in Envoy.
		MaxRequests: 10, BudgetPercent: 25, MinRetryConcurrency: 2,
		Fault: &interceptor.FaultPolicy{AbortPercent: 12.5, AbortStatus: 503, DelayPercent: 1, Delay: time.Millisecond},
	}
	if diff := cmp.Diff(want, p, cmpopts.IgnoreFields(interceptor.Policy{}, "State")); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
	// Retries without a budget or a limit get tender's default budget;
	// limits not set are lifted.
	plain := greeterService("10.0.0.1")
	plain.Policy.Resilience = discovery.Resilience{Retries: &discovery.RetryPolicy{Attempts: 1, On: []string{"5xx"}}}
	tb3, err := BuildTable(config(t, plain), nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	got := tb3.ByVIP[netip.MustParseAddrPort("10.96.0.10:80")].Resilience
	if got.BudgetPercent != 20 || got.MinRetryConcurrency != 10 || got.MaxRetries != 0 || got.MaxRequests != math.MaxUint32 || got.Timeout != 0 {
		t.Errorf("defaults: budget %v%% min %d, max retries %d, max requests %d, timeout %v; want 20%% 10, 0, 2^32-1, none",
			got.BudgetPercent, got.MinRetryConcurrency, got.MaxRetries, got.MaxRequests, got.Timeout)
	}

	// The counters survive a push.
	p.State.Active.Store(7)
	tb2, err := BuildTable(cfg, tb, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tb2.ByVIP[netip.MustParseAddrPort("10.96.0.10:80")].Resilience.State.Active.Load(); got != 7 {
		t.Errorf("active requests after a push: %d, want 7", got)
	}
	if tb2.Clusters[cl.Name].OutlierClock != cl.OutlierClock {
		t.Error("a push gave the cluster a new outlier clock; its sweeps would start over")
	}
}

// TestInboundClustersOwnPod: the inbound side applies the modes and
// policies of its own namespace's services only (a tenant listing another
// namespace's pod IP in its service attaches nothing to it), and to an
// address of the pod no service lists (a second IP, the IPv6 address of a
// dual-stack pod) those of the pod's own services, not none.
func TestInboundClustersOwnPod(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")
	web := &Cluster{Name: "web", Namespace: "shop", MTLSMode: xdsclient.MTLSStrict}
	evil := &Cluster{Name: "evil", Namespace: "tenant", MTLSMode: xdsclient.MTLSPermissive}
	tb := NewTable()
	tb.Clusters["web"], tb.Clusters["evil"] = web, evil
	ap := netip.AddrPortFrom(v4, 8080)
	tb.ByAddrPort[ap] = []*Cluster{evil, web}
	tb.ByAddr[v4] = []*Cluster{evil, web}
	tb.Localize("shop", []netip.Addr{v4, v6})
	if got := tb.InboundClusters(ap); len(got) != 1 || got[0] != web {
		t.Errorf("clusters of %s: %v, want only shop's web", ap, names(got))
	}
	if got := tb.Endpoint(ap); got != web {
		t.Errorf("Endpoint(%s) = %v, want web", ap, got)
	}
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(v6, 8080), netip.AddrPortFrom(v4, 9999)} {
		if !tb.Strict(dst) {
			t.Errorf("%s (no service lists it) is not STRICT; the pod's own service is", dst)
		}
	}
	// Before Localize (a namespace unknown), nothing is dropped.
	tb2 := *tb
	tb2.Localize("", nil)
	if got := tb2.InboundClusters(ap); len(got) != 2 {
		t.Errorf("without a namespace: %v, want both", names(got))
	}
}

func names(cls []*Cluster) []string {
	var out []string
	for _, c := range cls {
		out = append(out, c.Name)
	}
	return out
}

// TestEndpointIdentity: the identity the control plane knows for an
// endpoint reaches the sidecar's endpoint, an address two services list
// accepts the identities of both, and an ID that is not a SPIFFE ID is
// refused with the config.
func TestEndpointIdentity(t *testing.T) {
	greeter := greeterService("10.0.0.1", "10.0.0.2")
	for i := range greeter.Endpoints {
		greeter.Endpoints[i].Meshed = true
	}
	greeter.Endpoints[0].ServiceAccount = "greeter"
	other := greeterService("10.0.0.1")
	other.Name, other.VIP = "other", netip.MustParseAddr("10.96.0.11")
	other.Endpoints[0].Meshed, other.Endpoints[0].ServiceAccount = true, "other"
	tb, err := BuildTable(config(t, greeter, other), nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[netip.AddrPort]string{}
	for _, e := range tb.ByVIP[netip.MustParseAddrPort("10.96.0.10:80")].Endpoints {
		ids[e.Addr] = e.Identity
	}
	want := map[netip.AddrPort]string{
		netip.MustParseAddrPort("10.0.0.1:8080"): "spiffe://cluster.local/ns/default/sa/greeter",
		netip.MustParseAddrPort("10.0.0.2:8080"): "",
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("greeter's endpoint identities (-want +got):\n%s", diff)
	}
	if got := tb.MeshedAddrs[netip.MustParseAddrPort("10.0.0.1:8080")]; got != "spiffe://cluster.local/ns/default/sa/greeter spiffe://cluster.local/ns/default/sa/other" {
		t.Errorf("identities of an address two services list: %q", got)
	}
	if got, ok := tb.MeshedAddrs[netip.MustParseAddrPort("10.0.0.2:8080")]; !ok || got != "" {
		t.Errorf("meshed address with no identity known: %q, %v; want meshed, any identity", got, ok)
	}

	cfg := config(t, greeter)
	for _, cla := range cfg.Endpoints {
		md := cla.Endpoints[0].LbEndpoints[0].GetMetadata().GetFilterMetadata()[xdsclient.MetadataKey]
		md.Fields[xdsclient.EndpointIdentity] = structpb.NewStringValue("spiffe://cluster.local/ns/default/sa/greeter/../../admin")
	}
	if _, err := BuildTable(cfg, nil, balancer.Locality{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("got %v, want ErrInvalidConfig for an endpoint identity that is no SPIFFE ID", err)
	}
}

// TestDefaultModes: an address of the pod that no service lists (a pod
// behind no Service, or not yet in EDS) takes its namespace's default
// mode, else the mesh's; with no defaults from the control plane, STRICT.
// A listed destination keeps its service's mode.
func TestDefaultModes(t *testing.T) {
	podIP := netip.MustParseAddr("10.0.0.5")
	unlisted := netip.AddrPortFrom(podIP, 8080)
	res, err := xds.Translate([]discovery.Service{greeterService("10.0.0.1")}, &xds.Security{MTLS: &discovery.MTLSPolicy{
		Mode: discovery.MTLSPermissive, Namespaces: map[string]discovery.MTLSMode{"shop": discovery.MTLSStrict},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := BuildTable(configOf(res), nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		namespace string
		want      bool
	}{{"shop", true}, {"default", false}, {"", true}} {
		lt := *tb
		lt.Localize(tt.namespace, []netip.Addr{podIP})
		if got := lt.Strict(unlisted); got != tt.want {
			t.Errorf("namespace %q: Strict(unlisted pod address) = %v, want %v", tt.namespace, got, tt.want)
		}
	}
	// A service PERMISSIVE by name in a STRICT namespace: its own port
	// keeps its mode, a port no service lists takes the namespace's.
	res, err = xds.Translate([]discovery.Service{greeterService("10.0.0.1")}, &xds.Security{MTLS: &discovery.MTLSPolicy{
		Namespaces: map[string]discovery.MTLSMode{"default": discovery.MTLSStrict},
		Services:   map[string]discovery.MTLSMode{"default/greeter": discovery.MTLSPermissive},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if tb, err = BuildTable(configOf(res), nil, balancer.Locality{}); err != nil {
		t.Fatal(err)
	}
	tb.Localize("default", []netip.Addr{netip.MustParseAddr("10.0.0.1")})
	if tb.Strict(netip.MustParseAddrPort("10.0.0.1:8080")) {
		t.Error("the PERMISSIVE service's own port became STRICT")
	}
	if !tb.Strict(netip.MustParseAddrPort("10.0.0.1:9999")) {
		t.Error("a port no service lists did not take the STRICT namespace's mode")
	}
	none := NewTable()
	none.Localize("default", []netip.Addr{podIP})
	if !none.Strict(unlisted) {
		t.Error("no defaults from the control plane: want STRICT for what no service lists")
	}
}

// BenchmarkBuildTableEndpointChange is what one endpoint change costs a
// sidecar in a mesh of 1,000 MAGLEV services of 10 endpoints (a 65,537
// entry table each): the delta client replaces one load assignment, and
// the table is rebuilt from the new config.
func BenchmarkBuildTableEndpointChange(b *testing.B) {
	var services []discovery.Service
	for i := range 1000 {
		s := greeterService()
		s.Name = "svc-" + strconv.Itoa(i)
		s.VIP = netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		s.Policy = discovery.TrafficPolicy{LB: discovery.LBMaglev}
		for j := range 10 {
			s.Endpoints = append(s.Endpoints, discovery.Endpoint{Address: netip.AddrFrom4([4]byte{10, 1, byte(i >> 4), byte(i<<4 | j)}),
				Ports: map[string]uint32{"http": 8080}, Health: discovery.HealthHealthy})
		}
		services = append(services, s)
	}
	res, err := xds.Translate(services, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := configOf(res)
	prev, err := BuildTable(cfg, nil, balancer.Locality{})
	if err != nil {
		b.Fatal(err)
	}
	name := xds.ClusterName(&services[0], services[0].Ports[0])
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		next := *cfg
		next.Endpoints = maps.Clone(cfg.Endpoints)
		cla := proto.Clone(cfg.Endpoints[name]).(*endpointv3.ClusterLoadAssignment)
		cla.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(uint32(i%5 + 1))
		next.Endpoints[name] = cla
		t, err := BuildTable(&next, prev, balancer.Locality{})
		if err != nil {
			b.Fatal(err)
		}
		prev = t
	}
}

// TestBuildTableReusesUnchangedClusters: a push that changes one load
// assignment rebuilds that cluster's picker only; one that changes a
// route configuration rebuilds that cluster's policies and keeps its
// picker; every cluster of the new table is a new value (the old table is
// still being read).
func TestBuildTableReusesUnchangedClusters(t *testing.T) {
	a, b := greeterService("10.0.0.1"), greeterService("10.0.0.2")
	b.Name, b.VIP = "b", netip.MustParseAddr("10.96.0.11")
	cfg := config(t, a, b)
	an, bn := xds.ClusterName(&a, a.Ports[0]), xds.ClusterName(&b, b.Ports[0])
	t1, err := BuildTable(cfg, nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}

	next := *cfg
	next.Endpoints = maps.Clone(cfg.Endpoints)
	cla := proto.Clone(cfg.Endpoints[an]).(*endpointv3.ClusterLoadAssignment)
	cla.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(7)
	next.Endpoints[an] = cla
	t2, err := BuildTable(&next, t1, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	if t2.Clusters[an].Picker == t1.Clusters[an].Picker || t2.Clusters[an].Endpoints[0].Weight != 7 {
		t.Error("the changed load assignment did not rebuild its cluster's picker")
	}
	if t2.Clusters[bn].Picker != t1.Clusters[bn].Picker {
		t.Error("an unchanged cluster's picker was rebuilt")
	}
	if t2.Clusters[bn] == t1.Clusters[bn] {
		t.Error("the new table shares a Cluster value with the old one")
	}

	third := next
	third.Routes = maps.Clone(next.Routes)
	rname := xdsclient.RouteNameOf(next.Clusters[bn])
	rc := proto.Clone(next.Routes[rname]).(*routev3.RouteConfiguration)
	rc.VirtualHosts[0].Routes[0].GetRoute().Timeout = durationpb.New(3 * time.Second)
	third.Routes[rname] = rc
	t3, err := BuildTable(&third, t2, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	if got := t3.Clusters[bn].Resilience.Timeout; got != 3*time.Second {
		t.Errorf("b's timeout after its route changed: %v, want 3s", got)
	}
	if t3.Clusters[bn].Picker != t2.Clusters[bn].Picker {
		t.Error("a route change rebuilt the picker")
	}
	if t3.Clusters[bn].Resilience.State != t2.Clusters[bn].Resilience.State {
		t.Error("the breaker's state was not carried over a route change")
	}
}

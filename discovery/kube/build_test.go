package kube

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tender-mesh/tender/discovery"
)

func service(name string, annotations map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: annotations},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", Ports: ports},
	}
}

type ep struct {
	ip, pod, node, zone         string
	ready, serving, terminating *bool
}

func slice(svc, name string, family discoveryv1.AddressType, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family,
	}
	for n, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.pod != "" {
			x.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: e.pod, Namespace: "shop"}
		}
		if e.node != "" {
			x.NodeName = ptr.To(e.node)
		}
		if e.zone != "" {
			x.Zone = ptr.To(e.zone)
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

func TestPortProtocol(t *testing.T) {
	for _, tt := range []struct {
		name, app string
		want      discovery.Protocol
	}{
		{"http", "", discovery.ProtocolHTTP},
		{"http-web", "", discovery.ProtocolHTTP},
		{"grpc-api", "", discovery.ProtocolGRPC},
		{"http2", "", discovery.ProtocolHTTP2},
		{"tcp-db", "", discovery.ProtocolTCP},
		{"web", "", discovery.ProtocolAuto},
		{"httpish", "", discovery.ProtocolAuto},
		{"", "", discovery.ProtocolAuto},
		{"web", "kubernetes.io/h2c", discovery.ProtocolHTTP2},
		{"tcp-x", "grpc", discovery.ProtocolGRPC}, // appProtocol wins
		{"web", "mysql", discovery.ProtocolAuto},
	} {
		p := corev1.ServicePort{Name: tt.name}
		if tt.app != "" {
			p.AppProtocol = ptr.To(tt.app)
		}
		if got := portProtocol(p); got != tt.want {
			t.Errorf("port %q appProtocol %q: %q, want %q", tt.name, tt.app, got, tt.want)
		}
	}
}

func TestBuildService(t *testing.T) {
	svc := service("cart", nil,
		corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "grpc-api", Port: 9090, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	regions := map[string]string{"node-a": "eu-west"}
	pods := map[string]map[string]string{"cart-1": {"app": "cart", "version": "v1"}}
	slices := []*discoveryv1.EndpointSlice{
		slice("cart", "cart-b", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080, "grpc-api": 9090},
			ep{ip: "10.1.0.12", zone: "z2", ready: ptr.To(false), serving: ptr.To(true), terminating: ptr.To(true)}, // draining
			ep{ip: "10.1.0.13", ready: ptr.To(false)}, // not ready
			ep{ip: "10.1.0.11"}),                      // duplicate of cart-a's: kept once
		slice("cart", "cart-a", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080, "grpc-api": 9090},
			ep{ip: "10.1.0.11", pod: "cart-1", node: "node-a", zone: "z1", ready: ptr.To(true)}),
		slice("cart", "cart-v6", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 8080},
			ep{ip: "fd00::11", ready: ptr.To(true), serving: ptr.To(true), terminating: ptr.To(true)}), // terminating but serving
		slice("cart", "cart-fqdn", discoveryv1.AddressTypeFQDN, map[string]int32{"http": 8080}, ep{ip: "cart.example.com"}),
	}
	got, bad, ok := buildService(svc, slices, func(n string) string { return regions[n] },
		func(ns, name string) *podInfo {
			if l := pods[name]; l != nil && ns == "shop" {
				return &podInfo{labels: l, meshed: true, serviceAccount: "cart-sa", ips: []string{"10.1.0.11"}}
			}
			return nil
		})
	if !ok || len(bad) != 0 {
		t.Fatalf("ok %v, bad %v", ok, bad)
	}
	both := map[string]uint32{"http": 8080, "grpc-api": 9090}
	want := discovery.Service{
		Name: "cart", Namespace: "shop", Source: Name, VIP: netip.MustParseAddr("10.96.0.10"),
		Ports: []discovery.Port{{Name: "http", Number: 80, Protocol: discovery.ProtocolHTTP}, {Name: "grpc-api", Number: 9090, Protocol: discovery.ProtocolGRPC}},
		Endpoints: []discovery.Endpoint{
			{Address: netip.MustParseAddr("10.1.0.11"), Ports: both, Health: discovery.HealthHealthy,
				Locality: discovery.Locality{Region: "eu-west", Zone: "z1"}, Labels: map[string]string{"app": "cart", "version": "v1"},
				Meshed: true, ServiceAccount: "cart-sa"},
			{Address: netip.MustParseAddr("10.1.0.12"), Ports: both, Health: discovery.HealthDraining, Locality: discovery.Locality{Zone: "z2"}},
			{Address: netip.MustParseAddr("10.1.0.13"), Ports: both, Health: discovery.HealthUnhealthy},
			{Address: netip.MustParseAddr("fd00::11"), Ports: map[string]uint32{"http": 8080}, Health: discovery.HealthDraining},
		},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("service (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("built service invalid: %v", err)
	}

	headless := service("db", nil, corev1.ServicePort{Name: "tcp", Port: 5432})
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	if got, _, ok := buildService(headless, nil, nil, nil); !ok || got.VIP.IsValid() {
		t.Errorf("headless: ok %v vip %v; want served without a VIP", ok, got.VIP)
	}
	ext := service("ext", nil, corev1.ServicePort{Port: 80})
	ext.Spec.Type = corev1.ServiceTypeExternalName
	if _, _, ok := buildService(ext, nil, nil, nil); ok {
		t.Error("an ExternalName service was served")
	}
	if _, _, ok := buildService(service("udp", nil, corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP}), nil, nil, nil); ok {
		t.Error("a UDP-only service was served")
	}
}

func TestPolicyFromAnnotations(t *testing.T) {
	p, bad := policyFromAnnotations(map[string]string{
		AnnotationLB:                 "ring_hash",
		AnnotationHashHeader:         "X-User",
		AnnotationConnectTimeout:     "2s",
		AnnotationTimeout:            "1500ms",
		AnnotationRetries:            "2",
		AnnotationRetryOn:            "5xx, unavailable",
		AnnotationPerTryTimeout:      "300ms",
		AnnotationRetryBudget:        "25",
		AnnotationMaxRequests:        "100",
		AnnotationBaseEjectionTime:   "10s",
		AnnotationMaxEjectionPercent: "50",
		"other.io/whatever":          "x",
	})
	if len(bad) != 0 {
		t.Fatalf("good annotations refused: %v", bad)
	}
	want := discovery.TrafficPolicy{LB: discovery.LBRingHash, HashHeader: "x-user", ConnectTimeout: 2 * time.Second,
		Resilience: discovery.Resilience{
			Timeout:          1500 * time.Millisecond,
			Retries:          &discovery.RetryPolicy{Attempts: 2, On: []string{"5xx", "unavailable"}, PerTryTimeout: 300 * time.Millisecond, BudgetPercent: 25},
			CircuitBreaker:   &discovery.CircuitBreaker{MaxRequests: 100},
			OutlierDetection: &discovery.OutlierDetection{Consecutive5xx: 5, BaseEjectionTime: 10 * time.Second, MaxEjectionPercent: 50},
		}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("policy invalid: %v", err)
	}

	p, _ = policyFromAnnotations(map[string]string{AnnotationRetries: "3"})
	if p.Retries == nil || strings.Join(p.Retries.On, ",") != "5xx,reset,connect-failure" {
		t.Errorf("retries without retry-on: %+v, want the default conditions", p.Retries)
	}

	// Each bad one is reported and left out; the good ones stay.
	p, bad = policyFromAnnotations(map[string]string{
		AnnotationLB:                 "FASTEST",
		AnnotationHashHeader:         "x-user", // needs a hashing lb
		AnnotationTimeout:            "soon",
		AnnotationConnectTimeout:     "-1s",
		AnnotationRetries:            "two",
		AnnotationPerTryTimeout:      "1s", // needs retries
		AnnotationMaxRequests:        "10",
		AnnotationMaxEjectionPercent: "150",
		AnnotationPrefix + "retires": "3",
	})
	var keys []string
	for _, b := range bad {
		keys = append(keys, b.Key)
		if !strings.Contains(b.Error(), b.Key) {
			t.Errorf("error %q does not name its annotation", b.Error())
		}
	}
	wantKeys := []string{AnnotationConnectTimeout, AnnotationHashHeader, AnnotationLB, AnnotationMaxEjectionPercent,
		AnnotationPerTryTimeout, AnnotationPrefix + "retires", AnnotationRetries, AnnotationTimeout}
	if diff := cmp.Diff(wantKeys, keys); diff != "" {
		t.Errorf("reported annotations (-want +got):\n%s", diff)
	}
	if p.LB != "" || p.Timeout != 0 || p.Retries != nil || p.CircuitBreaker == nil || p.CircuitBreaker.MaxRequests != 10 {
		t.Errorf("after bad annotations: %+v; want only max-requests kept", p)
	}
}

// FuzzPolicyFromAnnotations: a Service's tender.dev policy annotations
// are untrusted (anyone who may edit the Service writes them): any value
// gets a policy or an annotation error, never a panic, and a policy it
// returns validates.
func FuzzPolicyFromAnnotations(f *testing.F) {
	f.Add(AnnotationRetries, "3", AnnotationTimeout, "2s")
	f.Add(AnnotationRetries, "-1", AnnotationTimeout, "1e-999999999s")
	f.Add("tender.dev/lb", "MAGLEV", "tender.dev/hash-header", "x-user")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		p, _ := policyFromAnnotations(map[string]string{k1: v1, k2: v2})
		if err := p.Validate(); err != nil {
			t.Fatalf("policy from %q=%q %q=%q does not validate: %v", k1, v1, k2, v2, err)
		}
	})
}

// TestEndpointTakesOnlyItsOwnPod: a hand-written slice that names a
// meshed pod for an address the pod does not have (a tenant lending its
// own identity to a victim's IP) gets no identity, no sidecar and no
// labels of that pod for the address.
func TestEndpointTakesOnlyItsOwnPod(t *testing.T) {
	svc := service("evil", nil, corev1.ServicePort{Name: "http", Port: 80})
	lent := slice("evil", "evil-x", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
		ep{ip: "10.1.0.99", pod: "evil-1", ready: ptr.To(true)}, // the victim's address
		ep{ip: "10.1.0.7", pod: "evil-1", ready: ptr.To(true)})  // evil-1's own
	got, _, ok := buildService(svc, []*discoveryv1.EndpointSlice{lent}, nil, func(ns, name string) *podInfo {
		return &podInfo{labels: map[string]string{"app": "evil"}, meshed: true, serviceAccount: "evil", ips: []string{"10.1.0.7"}}
	})
	if !ok || len(got.Endpoints) != 2 {
		t.Fatalf("ok %v, endpoints %+v", ok, got.Endpoints)
	}
	for _, e := range got.Endpoints {
		own := e.Address.String() == "10.1.0.7"
		if (e.ServiceAccount == "evil") != own || e.Meshed != own || (e.Labels != nil) != own {
			t.Errorf("endpoint %s: account %q meshed %v labels %v; want the pod's only for its own address", e.Address, e.ServiceAccount, e.Meshed, e.Labels)
		}
	}
}

// TestZoneHints: an endpoint hinted for zones (trafficDistribution:
// PreferClose, topology-aware routing) serves the zone it is hinted for;
// one hinted for its own zone among others keeps it; one without hints
// keeps its own.
func TestZoneHints(t *testing.T) {
	hinted := func(zone string, hints ...string) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Zone: ptr.To(zone)}
		if len(hints) > 0 {
			e.Hints = &discoveryv1.EndpointHints{}
			for _, h := range hints {
				e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: h})
			}
		}
		return e
	}
	for _, tt := range []struct {
		e    discoveryv1.Endpoint
		want string
	}{
		{hinted("z1"), "z1"},
		{hinted("z1", "z1"), "z1"},
		{hinted("z2", "z1"), "z1"},
		{hinted("z2", "z1", "z2"), "z2"},
		{discoveryv1.Endpoint{}, ""},
	} {
		if got := hintedZone(tt.e); got != tt.want {
			t.Errorf("hintedZone(zone %v, hints %+v) = %q, want %q", tt.e.Zone, tt.e.Hints, got, tt.want)
		}
	}
	// Through buildService: the slice's hints make the endpoints' zones.
	s := slice("cart", "cart-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, ep{ip: "10.1.0.11", zone: "z2"})
	s.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}}
	svc := service("cart", nil, corev1.ServicePort{Name: "http", Port: 80})
	got, _, ok := buildService(svc, []*discoveryv1.EndpointSlice{s}, nil, nil)
	if !ok || len(got.Endpoints) != 1 || got.Endpoints[0].Locality.Zone != "z1" {
		t.Fatalf("an endpoint of z2 hinted for z1: got %+v, want zone z1", got.Endpoints)
	}
}

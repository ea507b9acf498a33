package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/inject"
)

// Annotations on a Service that set its traffic policy.
const (
	AnnotationPrefix = "tender.dev/"

	AnnotationLB                 = AnnotationPrefix + "lb"                   // ROUND_ROBIN, LEAST_REQUEST, RING_HASH, MAGLEV, RANDOM
	AnnotationHashHeader         = AnnotationPrefix + "hash-header"          // header RING_HASH and MAGLEV hash on
	AnnotationConnectTimeout     = AnnotationPrefix + "connect-timeout"      // duration
	AnnotationTimeout            = AnnotationPrefix + "timeout"              // duration, whole request
	AnnotationRetries            = AnnotationPrefix + "retries"              // retries after the first try
	AnnotationRetryOn            = AnnotationPrefix + "retry-on"             // comma-separated conditions
	AnnotationPerTryTimeout      = AnnotationPrefix + "per-try-timeout"      // duration
	AnnotationRetryBudget        = AnnotationPrefix + "retry-budget-percent" // 0-100
	AnnotationMaxRequests        = AnnotationPrefix + "max-requests"         // circuit breaker
	AnnotationMaxRetries         = AnnotationPrefix + "max-retries"          // circuit breaker
	AnnotationConsecutive5xx     = AnnotationPrefix + "outlier-consecutive-5xx"
	AnnotationBaseEjectionTime   = AnnotationPrefix + "outlier-base-ejection-time"
	AnnotationMaxEjectionPercent = AnnotationPrefix + "outlier-max-ejection-percent"
)

// defaultRetryOn is what tender.dev/retries retries without
// tender.dev/retry-on.
var defaultRetryOn = []string{discovery.RetryOn5xx, discovery.RetryOnReset, discovery.RetryOnConnectFailure}

// AnnotationSidecarStatus is the injector's mark on a pod it gave a
// sidecar (inject.StatusInjected): the pod's endpoints are reached over
// mutual TLS. The injector declares it.
const AnnotationSidecarStatus = inject.AnnotationStatus

// AnnotationError is an annotation the source ignored, and why.
type AnnotationError struct {
	Key, Value string
	Err        error
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q ignored: %v", e.Key, e.Value, e.Err)
}

// portProtocol reads a Service port's protocol from its appProtocol, else
// from its name's prefix (http, http2, grpc, tcp, as Istio reads them);
// neither: detected by the sidecar.
func portProtocol(p corev1.ServicePort) discovery.Protocol {
	if p.AppProtocol != nil {
		switch strings.ToLower(*p.AppProtocol) {
		case "http", "kubernetes.io/http":
			return discovery.ProtocolHTTP
		case "http2", "h2c", "kubernetes.io/h2c":
			return discovery.ProtocolHTTP2
		case "grpc":
			return discovery.ProtocolGRPC
		case "tcp":
			return discovery.ProtocolTCP
		}
	}
	name := strings.ToLower(p.Name)
	prefix, _, _ := strings.Cut(name, "-")
	switch prefix {
	case "http":
		return discovery.ProtocolHTTP
	case "http2", "h2c":
		return discovery.ProtocolHTTP2
	case "grpc":
		return discovery.ProtocolGRPC
	case "tcp":
		return discovery.ProtocolTCP
	}
	return discovery.ProtocolAuto
}

// podInfo is what the source keeps of a pod: its labels, whether it has
// a sidecar, and the service account its workload runs as.
type podInfo struct {
	labels map[string]string
	// meshed: the injector gave the pod a sidecar.
	meshed         bool
	serviceAccount string
	// ips are the pod's addresses (status.podIPs): a slice's endpoint
	// takes the pod's labels, sidecar and identity only for an address
	// the pod has, so a hand-written slice cannot lend another pod's
	// identity to an address.
	ips []string
}

// buildService turns a Service and its EndpointSlices into a tender
// service. nodeRegion names the region of a node (from its topology
// label); pods gives endpoints their pod's labels. Annotations that do
// not parse are left out and returned, the rest of the service is kept.
// ok is false for Services tender does not serve (ExternalName, no TCP
// port).
func buildService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, nodeRegion func(string) string,
	pod func(namespace, name string) *podInfo) (out discovery.Service, bad []*AnnotationError, ok bool) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return out, nil, false
	}
	out = discovery.Service{Name: svc.Name, Namespace: svc.Namespace, Source: Name}
	if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
		out.VIP = ip // "None" (headless) does not parse: no VIP
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue // UDP and SCTP are not proxied
		}
		out.Ports = append(out.Ports, discovery.Port{Name: p.Name, Number: uint32(p.Port), Protocol: portProtocol(p)})
	}
	if len(out.Ports) == 0 {
		return out, nil, false
	}
	out.Policy, bad = policyFromAnnotations(svc.Annotations)
	out.Endpoints = buildEndpoints(svc, slices, nodeRegion, pod)
	return out, bad, true
}

// buildEndpoints reads the endpoints of a Service's slices: ready ones
// healthy, terminating but still serving ones draining (they finish what
// they have, and get nothing new), others unhealthy. An address listed
// in two slices is kept once.
func buildEndpoints(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, nodeRegion func(string) string,
	pod func(namespace, name string) *podInfo) []discovery.Endpoint {
	var out []discovery.Endpoint
	seen := map[netip.Addr]bool{}
	// A stable order, so an unchanged Service builds the same endpoints.
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range eps {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices name hosts, not addresses
		}
		ports := map[string]uint32{}
		for _, p := range s.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = uint32(*p.Port)
		}
		for _, e := range s.Endpoints {
			health := endpointHealth(e.Conditions)
			loc := discovery.Locality{Zone: hintedZone(e)}
			if e.NodeName != nil && nodeRegion != nil {
				loc.Region = nodeRegion(*e.NodeName)
			}
			var labels map[string]string
			meshed, account := false, ""
			var owned []string
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" && pod != nil {
				ns := ref.Namespace
				if ns == "" {
					ns = svc.Namespace
				}
				if p := pod(ns, ref.Name); p != nil {
					labels, meshed = p.labels, p.meshed
					// The identity names the service's namespace: a pod
					// of another namespace (only a hand-written slice
					// can list one) gets none, and so no SAN check.
					if ns == svc.Namespace {
						account = p.serviceAccount
					}
					owned = p.ips
				}
			}
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || seen[ip] {
					continue
				}
				seen[ip] = true
				ep := discovery.Endpoint{Address: ip, Ports: ports, Locality: loc, Health: health}
				if slices.Contains(owned, a) {
					ep.Labels, ep.Meshed, ep.ServiceAccount = labels, meshed, account
				}
				out = append(out, ep)
			}
		}
	}
	slices.SortFunc(out, func(a, b discovery.Endpoint) int { return a.Address.Compare(b.Address) })
	return out
}

// endpointHealth maps EndpointSlice conditions: a nil ready means ready,
// as the API says.
func endpointHealth(c discoveryv1.EndpointConditions) discovery.Health {
	ready := c.Ready == nil || *c.Ready
	serving := c.Serving == nil && ready || c.Serving != nil && *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	switch {
	case terminating && serving:
		return discovery.HealthDraining
	case terminating:
		return discovery.HealthUnhealthy
	case ready:
		return discovery.HealthHealthy
	}
	return discovery.HealthUnhealthy
}

// policyFromAnnotations reads the tender.dev/ annotations; each one that
// does not parse, or that makes the policy invalid, is left out and
// returned.
func policyFromAnnotations(a map[string]string) (discovery.TrafficPolicy, []*AnnotationError) {
	var p discovery.TrafficPolicy
	var bad []*AnnotationError
	fail := func(key string, err error) { bad = append(bad, &AnnotationError{Key: key, Value: a[key], Err: err}) }
	dur := func(key string, set func(time.Duration)) {
		v, ok := a[key]
		if !ok {
			return
		}
		d, err := time.ParseDuration(v)
		if err == nil && d <= 0 {
			err = fmt.Errorf("want a positive duration")
		}
		if err != nil {
			fail(key, err)
			return
		}
		set(d)
	}
	count := func(key string, set func(uint32)) {
		v, ok := a[key]
		if !ok {
			return
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			fail(key, fmt.Errorf("want a whole number"))
			return
		}
		set(uint32(n))
	}

	if v, ok := a[AnnotationLB]; ok {
		lb, err := discovery.ParseLBPolicy(strings.ToUpper(v))
		if err != nil {
			fail(AnnotationLB, err)
		} else {
			p.LB = lb
		}
	}
	if v, ok := a[AnnotationHashHeader]; ok {
		if p.LB != discovery.LBRingHash && p.LB != discovery.LBMaglev {
			fail(AnnotationHashHeader, fmt.Errorf("needs %s RING_HASH or MAGLEV", AnnotationLB))
		} else {
			p.HashHeader = strings.ToLower(v)
		}
	}
	dur(AnnotationConnectTimeout, func(d time.Duration) { p.ConnectTimeout = d })
	dur(AnnotationTimeout, func(d time.Duration) { p.Timeout = d })

	_, hasRetryOn := a[AnnotationRetryOn]
	count(AnnotationRetries, func(n uint32) {
		p.Retries = &discovery.RetryPolicy{Attempts: n, On: defaultRetryOn}
	})
	if p.Retries != nil {
		if hasRetryOn {
			on := strings.Split(a[AnnotationRetryOn], ",")
			for i := range on {
				on[i] = strings.TrimSpace(on[i])
			}
			rp := *p.Retries
			rp.On = on
			r := discovery.Resilience{Retries: &rp}
			if err := r.Validate(); err != nil {
				fail(AnnotationRetryOn, err)
			} else {
				p.Retries = &rp
			}
		}
		dur(AnnotationPerTryTimeout, func(d time.Duration) { p.Retries.PerTryTimeout = d })
		if v, ok := a[AnnotationRetryBudget]; ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 || f > 100 {
				fail(AnnotationRetryBudget, fmt.Errorf("want a percentage in (0, 100]"))
			} else {
				p.Retries.BudgetPercent = f
			}
		}
	} else {
		for _, k := range []string{AnnotationRetryOn, AnnotationPerTryTimeout, AnnotationRetryBudget} {
			if _, ok := a[k]; ok {
				fail(k, fmt.Errorf("needs %s", AnnotationRetries))
			}
		}
	}

	var cb discovery.CircuitBreaker
	count(AnnotationMaxRequests, func(n uint32) { cb.MaxRequests = n })
	count(AnnotationMaxRetries, func(n uint32) { cb.MaxRetries = n })
	if cb != (discovery.CircuitBreaker{}) {
		p.CircuitBreaker = &cb
	}
	var od discovery.OutlierDetection
	count(AnnotationConsecutive5xx, func(n uint32) { od.Consecutive5xx = n })
	dur(AnnotationBaseEjectionTime, func(d time.Duration) { od.BaseEjectionTime = d })
	count(AnnotationMaxEjectionPercent, func(n uint32) {
		if n > 100 {
			fail(AnnotationMaxEjectionPercent, fmt.Errorf("want 0-100"))
			return
		}
		od.MaxEjectionPercent = n
	})
	if od != (discovery.OutlierDetection{}) {
		if od.Consecutive5xx == 0 {
			od.Consecutive5xx = 5
		}
		p.OutlierDetection = &od
	}
	// Anything else under the prefix is a typo the user should hear of.
	for k := range a {
		if strings.HasPrefix(k, AnnotationPrefix) && !slices.Contains(knownAnnotations, k) {
			fail(k, fmt.Errorf("unknown tender.dev annotation"))
		}
	}
	slices.SortFunc(bad, func(x, y *AnnotationError) int { return strings.Compare(x.Key, y.Key) })
	return p, bad
}

var knownAnnotations = []string{AnnotationLB, AnnotationHashHeader, AnnotationConnectTimeout, AnnotationTimeout,
	AnnotationRetries, AnnotationRetryOn, AnnotationPerTryTimeout, AnnotationRetryBudget, AnnotationMaxRequests,
	AnnotationMaxRetries, AnnotationConsecutive5xx, AnnotationBaseEjectionTime, AnnotationMaxEjectionPercent,
	// Pod annotations the injector reads; harmless on a Service.
	AnnotationPrefix + "inject"}

// hintedZone is the zone an endpoint serves: the zone the EndpointSlice
// controller hints it for (trafficDistribution: PreferClose hints every
// endpoint for its own zone; topology-aware routing may hint one for
// another zone, to balance), else its own. A sidecar prefers the
// endpoints of its own zone, as kube-proxy does with hints. An endpoint
// hinted for several zones keeps its own zone if it is one of them.
func hintedZone(e discoveryv1.Endpoint) string {
	own := ""
	if e.Zone != nil {
		own = *e.Zone
	}
	if e.Hints == nil || len(e.Hints.ForZones) == 0 {
		return own
	}
	for _, z := range e.Hints.ForZones {
		if z.Name == own {
			return own
		}
	}
	return e.Hints.ForZones[0].Name
}

package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// ClusterDomain is the DNS suffix of service hostnames, as in Kubernetes.
const ClusterDomain = "svc.cluster.local"

// Protocol is the application protocol a service port speaks.
type Protocol string

// The protocols a port can declare. ProtocolAuto asks the sidecar to detect
// the protocol from the first bytes of each connection.
const (
	ProtocolAuto  Protocol = ""
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTP2 Protocol = "HTTP2"
	ProtocolGRPC  Protocol = "GRPC"
	ProtocolTCP   Protocol = "TCP"
)

// ParseProtocol returns the Protocol named by s (case-sensitive, upper case).
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case ProtocolAuto, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolTCP:
		return p, nil
	}
	return "", fmt.Errorf("%w %q (want HTTP, HTTP2, GRPC or TCP)", ErrUnknownProtocol, s)
}

// LBPolicy is how a client spreads requests over a service's endpoints.
type LBPolicy string

// The load-balancing policies, named as in Envoy's Cluster.LbPolicy.
const (
	LBRoundRobin   LBPolicy = "ROUND_ROBIN"
	LBLeastRequest LBPolicy = "LEAST_REQUEST"
	LBRingHash     LBPolicy = "RING_HASH"
	LBMaglev       LBPolicy = "MAGLEV"
	LBRandom       LBPolicy = "RANDOM"
)

// ParseLBPolicy returns the LBPolicy named by s; empty means ROUND_ROBIN.
func ParseLBPolicy(s string) (LBPolicy, error) {
	switch p := LBPolicy(s); p {
	case "":
		return LBRoundRobin, nil
	case LBRoundRobin, LBLeastRequest, LBRingHash, LBMaglev, LBRandom:
		return p, nil
	}
	return "", fmt.Errorf("%w %q (want ROUND_ROBIN, LEAST_REQUEST, RING_HASH, MAGLEV or RANDOM)", ErrUnknownLBPolicy, s)
}

// Health is the health of one endpoint as its source reports it.
type Health int

// Endpoint health states, mirroring Envoy's HealthStatus.
const (
	HealthUnknown Health = iota
	HealthHealthy
	HealthUnhealthy
	// HealthDraining marks an endpoint that is shutting down: it finishes
	// what it has but gets no new requests.
	HealthDraining
)

func (h Health) String() string {
	switch h {
	case HealthHealthy:
		return "HEALTHY"
	case HealthUnhealthy:
		return "UNHEALTHY"
	case HealthDraining:
		return "DRAINING"
	}
	return "UNKNOWN"
}

// Locality is where an endpoint runs; the sidecar prefers its own.
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"subZone,omitempty"`
}

// Port is one port of a service.
type Port struct {
	Name     string   `json:"name,omitempty"`
	Number   uint32   `json:"port"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// Endpoint is one instance that serves a service.
type Endpoint struct {
	Address netip.Addr `json:"address"`
	// Ports maps a service port name to the port this endpoint listens on
	// for it. A service port missing here is served on its own number.
	Ports    map[string]uint32 `json:"ports,omitempty"`
	Locality Locality          `json:"locality,omitzero"`
	// Weight is the endpoint's share relative to its peers; 0 means 1.
	Weight uint32 `json:"weight,omitempty"`
	// Priority orders groups of endpoints: clients use the lowest priority
	// that has healthy endpoints and fail over to the next.
	Priority uint32            `json:"priority,omitempty"`
	Health   Health            `json:"health"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Meshed says a tender sidecar (or another proxy holding a mesh
	// certificate) runs in front of the endpoint: clients reach it over
	// mutual TLS.
	Meshed bool `json:"meshed,omitempty"`
	// ServiceAccount is the identity the endpoint's workload holds in the
	// service's namespace (its certificate's SPIFFE ID is
	// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT): a client's
	// sidecar refuses a server that presents any other. Empty when the
	// source does not know it; then only the trust domain is checked.
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// TargetPort returns the port this endpoint serves p on.
func (e *Endpoint) TargetPort(p Port) uint32 {
	if n, ok := e.Ports[p.Name]; ok {
		return n
	}
	return p.Number
}

// TrafficPolicy is the per-service behaviour clients apply when they call it.
type TrafficPolicy struct {
	LB LBPolicy `json:"lb,omitempty"`
	// HashHeader is the request header RING_HASH and MAGLEV hash on; empty
	// hashes on the source address.
	HashHeader     string        `json:"hashHeader,omitempty"`
	ConnectTimeout time.Duration `json:"connectTimeout,omitempty"`
	Resilience
}

// Service is a named set of endpoints behind one or more ports.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// VIP is the virtual address apps dial; the sidecar captures it. Zero
	// when the service has none.
	VIP       netip.Addr    `json:"vip,omitzero"`
	Ports     []Port        `json:"ports"`
	Policy    TrafficPolicy `json:"policy"`
	Endpoints []Endpoint    `json:"endpoints"`
	// Source names the discovery source the service came from.
	Source string `json:"source"`
}

// Key identifies a service across sources: "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Hostname is the service's fully qualified name,
// NAME.NAMESPACE.svc.cluster.local.
func (s *Service) Hostname() string {
	return s.Name + "." + s.Namespace + "." + ClusterDomain
}

// Errors returned by validation; wrap them, branch with errors.Is.
var (
	ErrInvalid         = errors.New("invalid service")
	ErrUnknownProtocol = errors.New("unknown protocol")
	ErrUnknownLBPolicy = errors.New("unknown lb policy")
)

// dnsLabel is an RFC 1123 label, as Kubernetes requires of names.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate checks what the translator relies on: a DNS-label name and
// namespace, at least one port, unique port names and numbers in range,
// valid endpoint addresses, ports and a known protocol and policy.
func (s *Service) Validate() error {
	if !dnsLabel.MatchString(s.Name) {
		return fmt.Errorf("%w: name %q is not a DNS label", ErrInvalid, s.Name)
	}
	if !dnsLabel.MatchString(s.Namespace) {
		return fmt.Errorf("%w: namespace %q is not a DNS label", ErrInvalid, s.Namespace)
	}
	if len(s.Ports) == 0 {
		return fmt.Errorf("%w: %s has no ports", ErrInvalid, s.Key())
	}
	names := make(map[string]bool, len(s.Ports))
	numbers := make(map[uint32]bool, len(s.Ports))
	for _, p := range s.Ports {
		if p.Number == 0 || p.Number > 65535 {
			return fmt.Errorf("%w: %s port %d out of range 1-65535", ErrInvalid, s.Key(), p.Number)
		}
		if numbers[p.Number] {
			return fmt.Errorf("%w: %s port %d listed twice", ErrInvalid, s.Key(), p.Number)
		}
		numbers[p.Number] = true
		if names[p.Name] {
			return fmt.Errorf("%w: %s port name %q listed twice", ErrInvalid, s.Key(), p.Name)
		}
		names[p.Name] = true
		if _, err := ParseProtocol(string(p.Protocol)); err != nil {
			return fmt.Errorf("%w: %s port %d: %w", ErrInvalid, s.Key(), p.Number, err)
		}
	}
	if _, err := ParseLBPolicy(string(s.Policy.LB)); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, s.Key(), err)
	}
	if err := s.Policy.Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, s.Key(), err)
	}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if !e.Address.IsValid() {
			return fmt.Errorf("%w: %s endpoint %d has no address", ErrInvalid, s.Key(), i)
		}
		if e.ServiceAccount != "" && (len(e.ServiceAccount) > 253 || !dnsSubdomain.MatchString(e.ServiceAccount)) {
			return fmt.Errorf("%w: %s endpoint %s: service account %.64q is not a DNS subdomain", ErrInvalid, s.Key(), e.Address, e.ServiceAccount)
		}
		for name, n := range e.Ports {
			if !names[name] {
				return fmt.Errorf("%w: %s endpoint %s names unknown port %q", ErrInvalid, s.Key(), e.Address, name)
			}
			if n == 0 || n > 65535 {
				return fmt.Errorf("%w: %s endpoint %s port %d out of range 1-65535", ErrInvalid, s.Key(), e.Address, n)
			}
		}
	}
	return nil
}

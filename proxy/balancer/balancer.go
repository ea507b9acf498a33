package balancer

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Locality is where an endpoint runs.
type Locality struct{ Region, Zone, SubZone string }

// Endpoint is one upstream address. Its fields are fixed once a Picker is
// built over it; only Stats changes.
type Endpoint struct {
	Addr     netip.AddrPort
	Weight   uint32
	Priority uint32
	Locality Locality
	Healthy  bool
	// Meshed: the endpoint takes the mesh's mutual TLS.
	Meshed bool
	// Identity is the SPIFFE ID the endpoint's server certificate must
	// carry; empty: any of the mesh's trust domain.
	Identity string
	// Stats is shared by the endpoint's successive versions across config
	// pushes, so counts survive them.
	Stats *Stats
}

// Stats counts an endpoint's requests.
type Stats struct {
	// Active is the number of requests (or TCP connections) in flight.
	Active atomic.Int64
	// Total counts every request sent, Failed those that failed.
	Total  atomic.Uint64
	Failed atomic.Uint64
	// Outlier detection: failures in a row (any 5xx or connect failure,
	// and gateway errors only), when the current ejection ends (Unix
	// nanoseconds, 0 if never ejected) and how many ejections so far.
	Consecutive5xx     atomic.Uint32
	ConsecutiveGateway atomic.Uint32
	EjectedUntil       atomic.Int64
	Ejections          atomic.Uint32
	// HeldUntil keeps the endpoint out of the picks until then (Unix
	// nanoseconds) after it refused a connection; apart from outlier
	// detection's ejections, which it neither counts nor limits.
	HeldUntil atomic.Int64
	// Tries and successes in the current success-rate interval.
	IntervalTries     atomic.Uint64
	IntervalSuccesses atomic.Uint64
}

// Ejected reports whether outlier detection keeps the endpoint out at
// now (Unix nanoseconds).
func (s *Stats) Ejected(now int64) bool { return s.EjectedUntil.Load() > now }

// Picker chooses an endpoint. hash is the request's hash key (from a
// header or the source address) for the hashing policies; others ignore
// it. Pick returns nil when no endpoint is usable.
type Picker interface {
	Pick(hash uint64) *Endpoint
}

// Builder makes a Picker over the chosen endpoints (all healthy, all of one
// priority, non-empty).
type Builder func(eps []*Endpoint) Picker

var builders = map[string]Builder{}

// Register adds a policy under name (Envoy's LbPolicy names). Call it from
// init.
func Register(name string, b Builder) { builders[name] = b }

// New returns a Picker for policy over eps, restricted to the endpoints a
// proxy in local should use: healthy ones of the lowest priority that has
// any, and of those the local locality's when it has healthy endpoints.
func New(policy string, eps []*Endpoint, local Locality) (Picker, error) {
	b, ok := builders[policy]
	if !ok {
		return nil, fmt.Errorf("balancer: unknown policy %q", policy)
	}
	chosen := Select(eps, local)
	if len(chosen) == 0 {
		return empty{}, nil
	}
	return b(chosen), nil
}

// Select applies priority and locality failover.
func Select(eps []*Endpoint, local Locality) []*Endpoint {
	var healthy []*Endpoint
	for _, e := range eps {
		if e.Healthy {
			healthy = append(healthy, e)
		}
	}
	if len(healthy) == 0 {
		return nil
	}
	best := slices.MinFunc(healthy, func(a, b *Endpoint) int { return cmp.Compare(a.Priority, b.Priority) }).Priority
	var level, near []*Endpoint
	for _, e := range healthy {
		if e.Priority != best {
			continue
		}
		level = append(level, e)
		if local != (Locality{}) && e.Locality == local {
			near = append(near, e)
		}
	}
	if len(near) > 0 {
		return near
	}
	return level
}

type empty struct{}

func (empty) Pick(uint64) *Endpoint { return nil }

// weightOf is an endpoint's weight, at least 1.
func weightOf(e *Endpoint) uint32 { return max(e.Weight, 1) }

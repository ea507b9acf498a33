package balancer

import (
	"math/rand/v2"
	"sort"
)

func init() {
	Register("RANDOM", newRandom)
	Register("LEAST_REQUEST", newLeastRequest)
}

// random picks with probability proportional to weight.
type random struct {
	eps []*Endpoint
	cum []uint64 // cumulative weights
}

func newRandom(eps []*Endpoint) Picker {
	r := &random{eps: eps, cum: make([]uint64, len(eps))}
	var sum uint64
	for i, e := range eps {
		sum += uint64(weightOf(e))
		r.cum[i] = sum
	}
	return r
}

func (r *random) Pick(uint64) *Endpoint {
	x := rand.Uint64N(r.cum[len(r.cum)-1])
	return r.eps[sort.Search(len(r.cum), func(i int) bool { return r.cum[i] > x })]
}

// leastRequest samples two endpoints (weighted) and takes the one with
// fewer active requests, as Envoy's and grpc-go's least request do.
type leastRequest struct{ random }

func newLeastRequest(eps []*Endpoint) Picker {
	return &leastRequest{*newRandom(eps).(*random)}
}

func (l *leastRequest) Pick(uint64) *Endpoint {
	a, b := l.random.Pick(0), l.random.Pick(0)
	if b.Stats.Active.Load() < a.Stats.Active.Load() {
		return b
	}
	return a
}

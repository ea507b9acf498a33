package balancer

import "sync/atomic"

func init() { Register("ROUND_ROBIN", newRoundRobin) }

// roundRobin walks a schedule in which each endpoint appears in proportion
// to its weight, interleaved (smooth weighted round robin).
type roundRobin struct {
	schedule []*Endpoint
	next     atomic.Uint64
}

func newRoundRobin(eps []*Endpoint) Picker {
	return &roundRobin{schedule: smoothSchedule(eps)}
}

func (r *roundRobin) Pick(uint64) *Endpoint {
	n := r.next.Add(1) - 1
	return r.schedule[n%uint64(len(r.schedule))]
}

// smoothSchedule lays out one full weighted cycle the way nginx's smooth
// weighted round robin does, so heavy endpoints are not picked in bursts.
// Weights are scaled down so a cycle stays small.
func smoothSchedule(eps []*Endpoint) []*Endpoint {
	var total int64
	weights := make([]int64, len(eps))
	g := uint32(0)
	for _, e := range eps {
		g = gcd(g, weightOf(e))
	}
	for i, e := range eps {
		weights[i] = int64(weightOf(e) / g)
		total += weights[i]
	}
	const maxCycle = 4096
	if total > maxCycle {
		total = 0
		for i := range weights {
			weights[i] = max(1, weights[i]*maxCycle/int64(len(eps))/maxWeight(weights))
			total += weights[i]
		}
	}
	current := make([]int64, len(eps))
	out := make([]*Endpoint, 0, total)
	for range total {
		best := 0
		for i := range eps {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, eps[best])
	}
	return out
}

func maxWeight(w []int64) int64 {
	m := int64(1)
	for _, v := range w {
		m = max(m, v)
	}
	return m
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

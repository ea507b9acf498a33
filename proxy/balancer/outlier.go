package balancer

import (
	"math"
	"sync/atomic"
	"time"
)

// OutlierPolicy is a destination's outlier_detection.
type OutlierPolicy struct {
	Consecutive5xx     uint32
	ConsecutiveGateway uint32
	// BaseEjectionTime × the endpoint's ejections so far is how long an
	// ejection lasts, up to MaxEjectionTime.
	BaseEjectionTime time.Duration
	MaxEjectionTime  time.Duration
	// MaxEjectionPercent of the endpoints may be out at once, but always
	// at least one.
	MaxEjectionPercent uint32
	// Interval is how often success rates are compared; it also lowers
	// the ejection count of endpoints that stayed in.
	Interval time.Duration
	// SuccessRateStdevFactor (in thousandths) ejects endpoints whose
	// success rate in an interval is that many standard deviations below
	// the mean, once SuccessRateMinimumHosts endpoints had
	// SuccessRateRequestVolume tries; 0 turns it off.
	SuccessRateStdevFactor   uint32
	SuccessRateMinimumHosts  uint32
	SuccessRateRequestVolume uint32
}

// OutlierClock is when a cluster's success rates were last compared. It
// belongs to the cluster, not to its config: a push hands the cluster a
// new OutlierPolicy and keeps the clock, so sweeps keep their interval
// however often pushes come.
type OutlierClock struct {
	lastSweep atomic.Int64 // Unix nanoseconds
}

// RecordOutcome feeds one try's outcome at st, one of eps, to outlier
// detection: a 5xx or a connect failure counts against the endpoint,
// anything else resets its counts; once per Interval it compares success
// rates. onEject, if set, is told of each endpoint ejected. It returns how
// many were.
func (o *OutlierPolicy) RecordOutcome(clock *OutlierClock, st *Stats, eps []*Endpoint, status int, connectFailed bool, now time.Time,
	onEject func(*Endpoint)) int {
	if o == nil || st == nil {
		return 0
	}
	ejected := o.sweep(clock, eps, now, onEject)
	st.IntervalTries.Add(1)
	gateway := connectFailed || status == 502 || status == 503 || status == 504
	if !connectFailed && status < 500 {
		st.IntervalSuccesses.Add(1)
		st.Consecutive5xx.Store(0)
		st.ConsecutiveGateway.Store(0)
		return ejected
	}
	n5 := st.Consecutive5xx.Add(1)
	var ng uint32
	if gateway {
		ng = st.ConsecutiveGateway.Add(1)
	} else {
		st.ConsecutiveGateway.Store(0)
	}
	trip := (o.Consecutive5xx > 0 && n5 >= o.Consecutive5xx) || (o.ConsecutiveGateway > 0 && ng >= o.ConsecutiveGateway)
	if trip && o.eject(st, eps, now) {
		ejected++
		notify(onEject, eps, st)
	}
	return ejected
}

func notify(onEject func(*Endpoint), eps []*Endpoint, st *Stats) {
	if onEject == nil {
		return
	}
	for _, e := range eps {
		if e.Stats == st {
			onEject(e)
			return
		}
	}
}

// eject takes st out, unless it is out already or max ejection percent
// is reached.
func (o *OutlierPolicy) eject(st *Stats, eps []*Endpoint, now time.Time) bool {
	if st.Ejected(now.UnixNano()) {
		return false
	}
	maxPercent := o.MaxEjectionPercent
	if maxPercent == 0 {
		maxPercent = 10
	}
	out := 0
	for _, e := range eps {
		if e.Stats.Ejected(now.UnixNano()) {
			out++
		}
	}
	if limit := max(1, len(eps)*int(maxPercent)/100); out >= limit {
		return false
	}
	base := o.BaseEjectionTime
	if base <= 0 {
		base = 30 * time.Second
	}
	ceiling := o.MaxEjectionTime
	if ceiling <= 0 {
		ceiling = max(300*time.Second, base)
	}
	k := st.Ejections.Add(1)
	st.EjectedUntil.Store(now.Add(min(base*time.Duration(k), ceiling)).UnixNano())
	st.Consecutive5xx.Store(0)
	st.ConsecutiveGateway.Store(0)
	return true
}

// sweep runs once per interval, by whichever try comes first after it: it
// lowers the ejection count of endpoints that stayed in, and ejects those
// whose success rate is an outlier. It returns how many it ejected.
func (o *OutlierPolicy) sweep(clock *OutlierClock, eps []*Endpoint, now time.Time, onEject func(*Endpoint)) int {
	interval := o.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	last := clock.lastSweep.Load()
	if last == 0 {
		clock.lastSweep.CompareAndSwap(0, now.UnixNano())
		return 0
	}
	if now.UnixNano()-last < int64(interval) || !clock.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return 0
	}
	type sample struct {
		st   *Stats
		rate float64
	}
	var samples []sample
	var sum float64
	volume := uint64(max(o.SuccessRateRequestVolume, 1))
	for _, e := range eps {
		st := e.Stats
		tries, ok := st.IntervalTries.Swap(0), st.IntervalSuccesses.Swap(0)
		if !st.Ejected(now.UnixNano()) {
			if k := st.Ejections.Load(); k > 0 && st.EjectedUntil.Load()+int64(interval) <= now.UnixNano() {
				st.Ejections.CompareAndSwap(k, k-1)
			}
		}
		if tries >= volume && !st.Ejected(now.UnixNano()) {
			r := 100 * float64(ok) / float64(tries)
			samples = append(samples, sample{st, r})
			sum += r
		}
	}
	if o.SuccessRateStdevFactor == 0 || len(samples) < int(max(o.SuccessRateMinimumHosts, 1)) {
		return 0
	}
	mean := sum / float64(len(samples))
	var variance float64
	for _, s := range samples {
		variance += (s.rate - mean) * (s.rate - mean)
	}
	stdev := math.Sqrt(variance / float64(len(samples)))
	threshold := mean - stdev*float64(o.SuccessRateStdevFactor)/1000
	ejected := 0
	for _, s := range samples {
		if s.rate < threshold && o.eject(s.st, eps, now) {
			ejected++
			notify(onEject, eps, s.st)
		}
	}
	return ejected
}

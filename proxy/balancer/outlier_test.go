package balancer

import (
	"net/netip"
	"testing"
	"time"
)

func newEndpoints(n int) []*Endpoint {
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = &Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80), Stats: &Stats{}}
	}
	return eps
}

func TestOutlierConsecutive(t *testing.T) {
	var clock OutlierClock
	eps := newEndpoints(3)
	o := &OutlierPolicy{Consecutive5xx: 5, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50, Interval: time.Hour}
	now := time.Now()
	st := eps[0].Stats
	for i := 1; i <= 4; i++ {
		if o.RecordOutcome(&clock, st, eps, 503, false, now, nil) != 0 {
			t.Fatalf("ejected after %d errors, want 5", i)
		}
	}
	// A success in between starts the count again.
	o.RecordOutcome(&clock, st, eps, 200, false, now, nil)
	for range 4 {
		o.RecordOutcome(&clock, st, eps, 500, false, now, nil)
	}
	var told []netip.AddrPort
	if o.RecordOutcome(&clock, st, eps, 500, false, now, func(e *Endpoint) { told = append(told, e.Addr) }) != 1 ||
		!st.Ejected(now.UnixNano()) || len(told) != 1 || told[0] != eps[0].Addr {
		t.Fatalf("after 5 consecutive errors: ejected %v, told %v", st.Ejected(now.UnixNano()), told)
	}
	if !st.Ejected(now.Add(29*time.Second).UnixNano()) || st.Ejected(now.Add(31*time.Second).UnixNano()) {
		t.Error("the first ejection should last the base ejection time, 30s")
	}
	// At most 50% of 3 endpoints (one) out at once.
	for range 5 {
		if o.RecordOutcome(&clock, eps[1].Stats, eps, 0, true, now, nil) != 0 {
			t.Fatal("ejected a second endpoint beyond max ejection percent")
		}
	}
	// Back, failing again: the second ejection lasts twice as long.
	later := now.Add(31 * time.Second)
	for range 5 {
		o.RecordOutcome(&clock, st, eps, 503, false, later, nil)
	}
	if !st.Ejected(later.Add(59*time.Second).UnixNano()) || st.Ejected(later.Add(61*time.Second).UnixNano()) {
		t.Errorf("second ejection until %v after its start, want 60s", time.Duration(st.EjectedUntil.Load()-later.UnixNano()))
	}
	// Gateway errors alone, when only they are enforced.
	gw := &OutlierPolicy{ConsecutiveGateway: 2, MaxEjectionPercent: 100}
	st2 := eps[2].Stats
	gw.RecordOutcome(&clock, st2, eps, 500, false, now, nil)
	gw.RecordOutcome(&clock, st2, eps, 500, false, now, nil)
	if st2.Ejected(now.UnixNano()) {
		t.Error("500s ejected under a gateway-error-only policy")
	}
	gw.RecordOutcome(&clock, st2, eps, 502, false, now, nil)
	if gw.RecordOutcome(&clock, st2, eps, 0, true, now, nil) != 1 {
		t.Error("two consecutive gateway errors did not eject")
	}
	var none *OutlierPolicy
	if none.RecordOutcome(&clock, st2, eps, 503, false, now, nil) != 0 {
		t.Error("a nil policy ejected")
	}
}

func TestOutlierEjectionTime(t *testing.T) {
	var clock OutlierClock
	eps := newEndpoints(2)
	o := &OutlierPolicy{Consecutive5xx: 1, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 25 * time.Second,
		MaxEjectionPercent: 100, Interval: time.Second}
	st := eps[0].Stats
	now := time.Now()
	for k := 1; k <= 4; k++ {
		o.RecordOutcome(&clock, st, eps, 503, false, now, nil)
		want := min(time.Duration(k)*10*time.Second, 25*time.Second)
		if got := time.Duration(st.EjectedUntil.Load() - now.UnixNano()); got != want {
			t.Errorf("ejection %d lasts %v, want %v (base × ejections, at most the max)", k, got, want)
		}
		now = time.Unix(0, st.EjectedUntil.Load())
	}
	// Healthy intervals lower the count again, one per interval.
	for range 3 {
		now = now.Add(1100 * time.Millisecond)
		o.RecordOutcome(&clock, st, eps, 200, false, now, nil)
	}
	if k := st.Ejections.Load(); k != 1 {
		t.Errorf("after 3 healthy intervals past the ejection: %d ejections counted, want 4-3 = 1", k)
	}
}

func TestOutlierSuccessRate(t *testing.T) {
	var clock OutlierClock
	eps := newEndpoints(6)
	o := &OutlierPolicy{MaxEjectionPercent: 50, Interval: 10 * time.Second,
		SuccessRateStdevFactor: 1900, SuccessRateMinimumHosts: 5, SuccessRateRequestVolume: 100}
	now := time.Now()
	o.RecordOutcome(&clock, eps[0].Stats, eps, 200, false, now, nil) // starts the interval
	// Endpoint 5 fails 40% of its tries, the others 1%; not in a row, so
	// only the success rate can tell.
	for i := range 200 {
		for j, e := range eps {
			code := 200
			if (j == 5 && i%5 < 2) || (j < 5 && i%100 == 0) {
				code = 503
			}
			o.RecordOutcome(&clock, e.Stats, eps, code, false, now, nil)
		}
	}
	if n := o.RecordOutcome(&clock, eps[0].Stats, eps, 200, false, now.Add(9*time.Second), nil); n != 0 {
		t.Fatalf("ejected %d before the interval ended", n)
	}
	var told []netip.AddrPort
	if n := o.RecordOutcome(&clock, eps[0].Stats, eps, 200, false, now.Add(11*time.Second), func(e *Endpoint) { told = append(told, e.Addr) }); n != 1 ||
		len(told) != 1 || told[0] != eps[5].Addr {
		t.Errorf("after the interval: ejected %d, told %v; want endpoint 5 alone", n, told)
	}
	// Too few endpoints with enough volume: no verdict.
	few := newEndpoints(3)
	for range 150 {
		for j, e := range few {
			code := 200
			if j == 2 {
				code = 500
			}
			o.RecordOutcome(&clock, e.Stats, few, code, false, now.Add(12*time.Second), nil)
		}
	}
	if n := o.RecordOutcome(&clock, few[0].Stats, few, 200, false, now.Add(25*time.Second), nil); n != 0 {
		t.Errorf("ejected %d with 3 endpoints, under the 5 minimum hosts", n)
	}
}

// TestOutlierClockSurvivesPush: a config push builds a new policy; the
// cluster's clock stays, so success-rate sweeps keep their interval even
// when pushes come faster than it (they never ran before).
func TestOutlierClockSurvivesPush(t *testing.T) {
	var clock OutlierClock
	eps := newEndpoints(5)
	policy := func() *OutlierPolicy {
		return &OutlierPolicy{MaxEjectionPercent: 50, Interval: 10 * time.Second,
			SuccessRateStdevFactor: 1000, SuccessRateMinimumHosts: 5, SuccessRateRequestVolume: 10}
	}
	now := time.Now()
	policy().RecordOutcome(&clock, eps[0].Stats, eps, 200, false, now, nil) // starts the interval
	for i := range 4 {
		// A push every 4 s, each with its own policy value.
		o := policy()
		at := now.Add(time.Duration(i) * 4 * time.Second)
		for _, e := range eps {
			code := 200
			if e == eps[4] {
				code = 503
			}
			for range 10 {
				o.RecordOutcome(&clock, e.Stats, eps, code, false, at, nil)
			}
		}
	}
	if !eps[4].Stats.Ejected(now.Add(13 * time.Second).UnixNano()) {
		t.Error("the failing endpoint was not ejected by success rate across pushes every 4 s (interval 10 s)")
	}
}

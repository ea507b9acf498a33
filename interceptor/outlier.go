package interceptor

import (
	"time"

	"github.com/tender-mesh/tender/proxy/balancer"
)

// OutlierPolicy is a destination's outlier_detection.
type OutlierPolicy struct {
	Consecutive5xx     uint32
	ConsecutiveGateway uint32
	// BaseEjectionTime × the endpoint's ejections so far is how long an
	// ejection lasts.
	BaseEjectionTime time.Duration
	// MaxEjectionPercent of the endpoints may be out at once, but always
	// at least one.
	MaxEjectionPercent uint32
}

// RecordOutcome feeds one try's outcome to outlier detection: a 5xx or a
// connect failure counts against the endpoint, anything else resets its
// counts. It reports whether the endpoint was ejected now. eps are the
// destination's endpoints, to bound how many are out at once.
func (o *OutlierPolicy) RecordOutcome(st *balancer.Stats, eps []*balancer.Endpoint, status int, connectFailed bool, now time.Time) bool {
	if o == nil || st == nil {
		return false
	}
	gateway := connectFailed || status == 502 || status == 503 || status == 504
	if !connectFailed && status < 500 {
		st.Consecutive5xx.Store(0)
		st.ConsecutiveGateway.Store(0)
		return false
	}
	n5 := st.Consecutive5xx.Add(1)
	var ng uint32
	if gateway {
		ng = st.ConsecutiveGateway.Add(1)
	} else {
		st.ConsecutiveGateway.Store(0)
	}
	trip := (o.Consecutive5xx > 0 && n5 >= o.Consecutive5xx) || (o.ConsecutiveGateway > 0 && ng >= o.ConsecutiveGateway)
	if !trip || st.Ejected(now.UnixNano()) {
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
	k := st.Ejections.Add(1)
	st.EjectedUntil.Store(now.Add(base * time.Duration(min(k, 10))).UnixNano())
	st.Consecutive5xx.Store(0)
	st.ConsecutiveGateway.Store(0)
	return true
}

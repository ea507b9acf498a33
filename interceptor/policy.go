package interceptor

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Policy is a destination's resilience config (from its Cluster and
// RouteConfiguration) and the state its requests share. The proxy builds
// one per cluster and keeps State across config pushes.
type Policy struct {
	// Timeout bounds a whole request, retries included; 0: none.
	Timeout time.Duration
	Retry   *RetryPolicy
	// MaxRequests caps requests in flight (circuit breaker); 0: none.
	MaxRequests int64
	// BudgetPercent of the requests in flight may be retries, but at least
	// MinRetryConcurrency; 0: no budget, MaxRetries applies.
	BudgetPercent       float64
	MinRetryConcurrency int64
	// MaxRetries caps retries in flight when there is no budget; 0: none.
	MaxRetries int64
	Fault      *FaultPolicy
	State      *PolicyState
}

// PolicyState is what a destination's requests count together.
type PolicyState struct {
	Active   atomic.Int64 // requests in flight
	Retrying atomic.Int64 // retries in flight
}

// FaultPolicy injects delays and aborts into a share of requests.
type FaultPolicy struct {
	DelayPercent float64
	Delay        time.Duration
	AbortPercent float64
	AbortStatus  int
}

// Fault delays or aborts requests as their destination's policy says
// (Envoy's fault filter): an abort answers at once with the configured
// status (gRPC clients: the matching gRPC status), flag FI; a delay waits
// first, flag DI, but not beyond the request's deadline.
func Fault(next Handler) Handler {
	return HandlerFunc(func(e *Exchange) (Response, error) {
		if e.Policy == nil || e.Policy.Fault == nil {
			return next.Handle(e)
		}
		f := e.Policy.Fault
		if f.DelayPercent > 0 && rand.Float64()*100 < f.DelayPercent {
			e.Flags |= FlagDelayInjected
			d := f.Delay
			if !e.Deadline.IsZero() {
				d = min(d, time.Until(e.Deadline))
			}
			time.Sleep(d)
		}
		if f.AbortPercent > 0 && rand.Float64()*100 < f.AbortPercent {
			e.Flags |= FlagFaultInjected
			return Reply(f.AbortStatus, "fault injected"), nil
		}
		return next.Handle(e)
	})
}

// Timeout bounds the request by its destination's timeout and by the
// gRPC deadline the client sent (grpc-timeout), whichever is sooner. The
// proxy answers a request that ran out before its response with 504 (gRPC:
// DEADLINE_EXCEEDED), flag UT.
func Timeout(next Handler) Handler {
	return HandlerFunc(func(e *Exchange) (Response, error) {
		var d time.Duration
		set := false
		if e.Policy != nil && e.Policy.Timeout > 0 {
			d, set = e.Policy.Timeout, true
		}
		if e.Req != nil {
			// A grpc-timeout of 0 is a deadline that passed (a caller
			// forwards one as "0n"), not the absence of one.
			if g, ok := ParseGRPCTimeout(e.Req.Header("Grpc-Timeout")); ok && (!set || g < d) {
				d, set = g, true
			}
		}
		if set {
			if dl := e.Start.Add(d); e.Deadline.IsZero() || dl.Before(e.Deadline) {
				e.Deadline = dl
			}
		}
		return next.Handle(e)
	})
}

// CircuitBreaker refuses a request at once, with 503 (gRPC: UNAVAILABLE)
// and flag UO, when its destination already has MaxRequests in flight:
// nothing queues, so an overloaded service costs its clients no memory.
// A request is in flight until its response is relayed.
func CircuitBreaker(metrics *ResilienceMetrics) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(e *Exchange) (Response, error) {
			if e.Policy == nil || e.Policy.State == nil {
				return next.Handle(e)
			}
			st := e.Policy.State
			n := st.Active.Add(1)
			e.Defer(leaveBreaker)
			if limit := e.Policy.MaxRequests; limit > 0 && n > limit {
				e.Flags |= FlagOverflow
				metrics.overflow(e.Service, "requests")
				return Reply(http.StatusServiceUnavailable, "circuit breaker open: "+strconv.FormatInt(limit, 10)+" requests in flight"), nil
			}
			return next.Handle(e)
		})
	}
}

func leaveBreaker(e *Exchange) { e.Policy.State.Active.Add(-1) }

// maxGRPCTimeout is as far as a grpc-timeout is taken: 8 digits of hours
// would overflow a time.Duration.
const maxGRPCTimeout = 100_000 * time.Hour

// ParseGRPCTimeout reads a grpc-timeout header value ("100m", "5S").
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(maxGRPCTimeout/unit) {
		return maxGRPCTimeout, true
	}
	return time.Duration(n) * unit, true
}

// FormatGRPCTimeout writes d as a grpc-timeout value, in the finest unit
// that fits the header's eight digits.
func FormatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := d / u.d; n < 100_000_000 {
			return strconv.FormatInt(int64(n), 10) + u.c
		}
	}
	return strconv.FormatInt(int64(d/time.Hour), 10) + "H"
}

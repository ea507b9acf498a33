package interceptor

import (
	"context"
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
	Outlier    *OutlierPolicy
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
// first, flag DI.
func Fault(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := FromContext(r.Context())
		if e == nil || e.Policy == nil || e.Policy.Fault == nil {
			next.ServeHTTP(w, r)
			return
		}
		f := e.Policy.Fault
		if f.DelayPercent > 0 && rand.Float64()*100 < f.DelayPercent {
			e.Flags |= FlagDelayInjected
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.AbortPercent > 0 && rand.Float64()*100 < f.AbortPercent {
			e.Flags |= FlagFaultInjected
			WriteError(w, r, f.AbortStatus, "fault injected")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Timeout bounds the request by its destination's timeout and by the
// gRPC deadline the client sent (grpc-timeout), whichever is sooner. The
// proxy answers a request that ran out before its response with 504 (gRPC:
// DEADLINE_EXCEEDED), flag UT.
func Timeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := FromContext(r.Context())
		var d time.Duration
		if e != nil && e.Policy != nil {
			d = e.Policy.Timeout
		}
		if g, ok := ParseGRPCTimeout(r.Header.Get("Grpc-Timeout")); ok && (d == 0 || g < d) {
			d = g
		}
		if d <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// CircuitBreaker refuses a request at once, with 503 (gRPC: UNAVAILABLE)
// and flag UO, when its destination already has MaxRequests in flight:
// nothing queues, so an overloaded service costs its clients no memory.
func CircuitBreaker(metrics *ResilienceMetrics) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e := FromContext(r.Context())
			if e == nil || e.Policy == nil || e.Policy.State == nil {
				next.ServeHTTP(w, r)
				return
			}
			st := e.Policy.State
			n := st.Active.Add(1)
			defer st.Active.Add(-1)
			if limit := e.Policy.MaxRequests; limit > 0 && n > limit {
				e.Flags |= FlagOverflow
				metrics.overflow(e.Service, "requests")
				WriteError(w, r, http.StatusServiceUnavailable, "circuit breaker open: "+strconv.FormatInt(limit, 10)+" requests in flight")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// ParseGRPCTimeout reads a grpc-timeout header value ("100m", "5S").
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
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

// WriteError answers a request the proxy itself failed or refused, the way
// its client understands: gRPC clients get a trailers-only response with
// the gRPC status matching code, others the HTTP status.
func WriteError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if IsGRPC(r) {
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(grpcStatusFor(code)))
		h.Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("X-Tender-Error", msg)
	http.Error(w, "tender: "+msg, code)
}

// grpcStatusFor maps an HTTP status to a gRPC status as gRPC's HTTP
// mapping does.
func grpcStatusFor(code int) int {
	switch code {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	case http.StatusGatewayTimeout:
		return 4 // DEADLINE_EXCEEDED
	}
	return 2 // UNKNOWN
}

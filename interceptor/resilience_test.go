package interceptor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tender-mesh/tender/proxy/balancer"
)

func withPolicy(p *Policy) func(*Exchange) {
	return func(e *Exchange) {
		if p.State == nil {
			p.State = &PolicyState{}
		}
		e.Policy = p
	}
}

// serveWith runs r through h with an outbound Exchange set up by opts.
func serveWith(h http.Handler, r *http.Request, opts ...func(*Exchange)) (*Exchange, *httptest.ResponseRecorder) {
	e := &Exchange{Direction: Outbound, Start: time.Now(), Service: "greeter.default.svc.cluster.local"}
	for _, o := range opts {
		o(e)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r.WithContext(WithExchange(r.Context(), e)))
	return e, rec
}

func grpcRequest() *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/greeter.Greeter/SayHello", strings.NewReader("x"))
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.Header.Set("Content-Type", "application/grpc")
	return r
}

func TestFault(t *testing.T) {
	called := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called++ })
	t.Run("abort", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{AbortPercent: 100, AbortStatus: 418}}
		e, rec := serveWith(Fault(next), httptest.NewRequest(http.MethodGet, "/", nil), withPolicy(pol))
		if rec.Code != 418 || e.Flags != FlagFaultInjected || called != 0 {
			t.Errorf("got %d flags %v, upstream called %d times; want 418 FI 0", rec.Code, e.Flags, called)
		}
		e, rec = serveWith(Fault(next), grpcRequest(), withPolicy(&Policy{Fault: &FaultPolicy{AbortPercent: 100, AbortStatus: 503}}))
		if rec.Code != 200 || rec.Header().Get("Grpc-Status") != "14" || e.Flags != FlagFaultInjected {
			t.Errorf("gRPC abort: got %d grpc-status %q flags %v; want 200 14 FI", rec.Code, rec.Header().Get("Grpc-Status"), e.Flags)
		}
	})
	t.Run("delay", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{DelayPercent: 100, Delay: 30 * time.Millisecond}}
		start := time.Now()
		e, rec := serveWith(Fault(next), httptest.NewRequest(http.MethodGet, "/", nil), withPolicy(pol))
		if took := time.Since(start); took < 30*time.Millisecond || e.Flags != FlagDelayInjected || called != 1 || rec.Code != 200 {
			t.Errorf("took %v flags %v called %d code %d; want >=30ms DI 1 200", took, e.Flags, called, rec.Code)
		}
	})
	t.Run("delay ends with the client", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{DelayPercent: 100, Delay: time.Hour}}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		serveWith(Fault(next), httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx), withPolicy(pol))
		if called != 0 {
			t.Error("a request whose client left during the delay went upstream")
		}
	})
	t.Run("share", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{AbortPercent: 30, AbortStatus: 503}}
		const n = 2000
		aborted := 0
		for range n {
			if e, _ := serveWith(Fault(next), httptest.NewRequest(http.MethodGet, "/", nil), withPolicy(pol)); e.Flags == FlagFaultInjected {
				aborted++
			}
		}
		// 30% of 2000 is 600, standard deviation about 20.
		if aborted < 480 || aborted > 720 || aborted+called != n {
			t.Errorf("aborted %d and passed %d of %d; want about 600 aborted", aborted, called, n)
		}
	})
	t.Run("no policy", func(t *testing.T) {
		called = 0
		if e, rec := serveWith(Fault(next), httptest.NewRequest(http.MethodGet, "/", nil)); rec.Code != 200 || e.Flags != 0 || called != 1 {
			t.Errorf("got %d flags %v called %d", rec.Code, e.Flags, called)
		}
	})
}

func TestTimeout(t *testing.T) {
	var left time.Duration
	var had bool
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d time.Time
		d, had = r.Context().Deadline()
		left = time.Until(d)
	})
	tests := []struct {
		name     string
		policy   time.Duration
		grpc     string
		want     time.Duration // 0: no deadline
		tolerant time.Duration
	}{
		{"route timeout", 200 * time.Millisecond, "", 200 * time.Millisecond, 50 * time.Millisecond},
		{"shorter grpc deadline", time.Second, "100m", 100 * time.Millisecond, 50 * time.Millisecond},
		{"grpc deadline, no route timeout", 0, "3S", 3 * time.Second, 50 * time.Millisecond},
		{"longer grpc deadline", 200 * time.Millisecond, "5S", 200 * time.Millisecond, 50 * time.Millisecond},
		{"malformed grpc-timeout ignored", 0, "soon", 0, 0},
		{"none", 0, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.grpc != "" {
				r.Header.Set("Grpc-Timeout", tt.grpc)
			}
			serveWith(Timeout(next), r, withPolicy(&Policy{Timeout: tt.policy}))
			switch {
			case tt.want == 0 && had:
				t.Errorf("deadline in %v, want none", left)
			case tt.want != 0 && (!had || left > tt.want || left < tt.want-tt.tolerant):
				t.Errorf("deadline in %v (set %v), want about %v", left, had, tt.want)
			}
		})
	}
}

func TestGRPCTimeout(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 999 * time.Microsecond, 150 * time.Millisecond, 3 * time.Second,
		2 * time.Minute, 100 * 24 * time.Hour} {
		v := FormatGRPCTimeout(d)
		got, ok := ParseGRPCTimeout(v)
		// Coarser units round down, by less than one unit of 1e8.
		if !ok || got > d || got < d-d/100_000_000-time.Nanosecond || len(v) > 9 {
			t.Errorf("%v formats as %q, parses back as %v %v", d, v, got, ok)
		}
	}
	for _, v := range []string{"", "1", "1x", "-1S", "123456789S", "S", "1.5S"} {
		if _, ok := ParseGRPCTimeout(v); ok {
			t.Errorf("ParseGRPCTimeout(%q) accepted", v)
		}
	}
	if FormatGRPCTimeout(-time.Second) != "0n" {
		t.Error("a passed deadline must format as 0n")
	}
}

func TestCircuitBreaker(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewResilienceMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	pol := &Policy{MaxRequests: 2, State: &PolicyState{}}
	cb := CircuitBreaker(m)(slow)
	var done sync.WaitGroup
	for range 2 {
		done.Go(func() { serveWith(cb, httptest.NewRequest(http.MethodGet, "/", nil), withPolicy(pol)) })
	}
	<-entered
	<-entered
	start := time.Now()
	e, rec := serveWith(cb, httptest.NewRequest(http.MethodGet, "/", nil), withPolicy(pol))
	if rec.Code != http.StatusServiceUnavailable || e.Flags != FlagOverflow || time.Since(start) > time.Second {
		t.Errorf("third request: %d flags %v after %v; want 503 UO at once", rec.Code, e.Flags, time.Since(start))
	}
	e, rec = serveWith(cb, grpcRequest(), withPolicy(pol))
	if rec.Header().Get("Grpc-Status") != "14" || e.Flags != FlagOverflow {
		t.Errorf("gRPC overflow: grpc-status %q flags %v; want 14 UO", rec.Header().Get("Grpc-Status"), e.Flags)
	}
	if got := testutil.ToFloat64(m.overflows.WithLabelValues("greeter.default.svc.cluster.local", "requests")); got != 2 {
		t.Errorf("tender_upstream_overflows_total{limit=requests} = %v, want 2", got)
	}
	close(release)
	done.Wait()
	if n := pol.State.Active.Load(); n != 0 {
		t.Errorf("%d requests still counted in flight", n)
	}
	if e, rec := serveWith(cb, httptest.NewRequest(http.MethodGet, "/", nil), withPolicy(pol)); rec.Code != 200 || e.Flags != 0 {
		t.Errorf("after the others finished: %d %v, want 200", rec.Code, e.Flags)
	}
}

// script is an upstream for Retry: each try gets the next outcome, and
// what it sent is recorded.
type script struct {
	mu       sync.Mutex
	outcomes []func(*http.Request) (*http.Response, error)
	bodies   []string
	headers  []http.Header
}

func (s *script) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
	}
	s.mu.Lock()
	i := len(s.bodies)
	s.bodies = append(s.bodies, string(body))
	s.headers = append(s.headers, r.Header.Clone())
	s.mu.Unlock()
	if e := FromContext(r.Context()); e != nil {
		e.Tried = append(e.Tried, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80))
	}
	if i >= len(s.outcomes) {
		return status(200)(r)
	}
	return s.outcomes[i](r)
}

func status(code int) func(*http.Request) (*http.Response, error) {
	return func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: code, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
}

func grpcStatus(code string) func(*http.Request) (*http.Response, error) {
	return func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Grpc-Status": {code}}, Body: http.NoBody, Request: r}, nil
	}
}

func connectRefused(*http.Request) (*http.Response, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
}

func hang(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

func TestRetry(t *testing.T) {
	big := strings.Repeat("x", MaxReplayBytes+1)
	retry5xx := &RetryPolicy{Attempts: 2, On: ParseRetryOn("5xx,connect-failure"), BackoffBase: time.Millisecond}
	tests := []struct {
		name     string
		method   string
		body     string
		header   map[string]string
		grpc     bool
		policy   *Policy
		outcomes []func(*http.Request) (*http.Response, error)
		// state before the request: retries already in flight
		retrying    int64
		wantTries   int
		wantStatus  int // 0: an error
		wantFlags   Flags
		wantRetries int
	}{
		{name: "503 then 200", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "body replayed", method: "PUT", body: "hello", policy: &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){status(502), status(500)}, wantTries: 3, wantStatus: 200, wantRetries: 2},
		{name: "attempts exhausted", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes:  []func(*http.Request) (*http.Response, error){status(503), status(503), status(503)},
			wantTries: 3, wantStatus: 503, wantFlags: FlagRetryLimit, wantRetries: 2},
		{name: "4xx not retried", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){status(404)}, wantTries: 1, wantStatus: 404},
		{name: "POST not retried", method: "POST", body: "order", policy: &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 1, wantStatus: 503},
		{name: "POST retried on connect failure", method: "POST", body: "order", policy: &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){connectRefused}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "POST opted in", method: "POST", body: "order", header: map[string]string{RetryOnHeader: "5xx"},
			policy:   &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "body beyond the replay bound", method: "PUT", body: big, policy: &Policy{Retry: retry5xx},
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 1, wantStatus: 503},
		{name: "retriable status code", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("retriable-status-codes"), StatusCodes: []uint32{409}}},
			outcomes: []func(*http.Request) (*http.Response, error){status(409)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "status code not listed", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("retriable-status-codes"), StatusCodes: []uint32{409}}},
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 1, wantStatus: 503},
		{name: "gRPC unavailable", grpc: true,
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("unavailable")}},
			outcomes: []func(*http.Request) (*http.Response, error){grpcStatus("14")}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "gRPC not found not retried", grpc: true,
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("unavailable,cancelled")}},
			outcomes: []func(*http.Request) (*http.Response, error){grpcStatus("5")}, wantTries: 1, wantStatus: 200},
		{name: "per-try timeout", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("gateway-error"), PerTryTimeout: 20 * time.Millisecond}},
			outcomes: []func(*http.Request) (*http.Response, error){hang}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "per-try timeout, out of tries", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("gateway-error"), PerTryTimeout: 20 * time.Millisecond}},
			outcomes: []func(*http.Request) (*http.Response, error){hang, hang}, wantTries: 2, wantFlags: FlagRetryLimit, wantRetries: 1},
		{name: "budget spent", method: "GET", policy: &Policy{Retry: retry5xx, BudgetPercent: 20, MinRetryConcurrency: 3}, retrying: 3,
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 1, wantStatus: 503, wantFlags: FlagRetryOverflow},
		{name: "budget grows with load", method: "GET", policy: &Policy{Retry: retry5xx, BudgetPercent: 50, MinRetryConcurrency: 1},
			retrying: 3, outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "no limit", method: "GET", policy: &Policy{Retry: retry5xx}, retrying: 100,
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "max retries", method: "GET", policy: &Policy{Retry: retry5xx, MaxRetries: 3}, retrying: 3,
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 1, wantStatus: 503, wantFlags: FlagRetryOverflow},
		{name: "no policy", method: "GET",
			outcomes: []func(*http.Request) (*http.Response, error){status(503)}, wantTries: 1, wantStatus: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := NewResilienceMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			up := &script{outcomes: tt.outcomes}
			var r *http.Request
			if tt.grpc {
				r = grpcRequest()
			} else {
				r = httptest.NewRequest(tt.method, "http://greeter/", strings.NewReader(tt.body))
			}
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			e := &Exchange{Direction: Outbound, Service: "greeter"}
			if tt.policy != nil {
				withPolicy(tt.policy)(e)
				tt.policy.State.Retrying.Store(tt.retrying)
				// The 10 requests in flight the budget is a share of.
				tt.policy.State.Active.Store(10)
			}
			resp, err := Retry(m)(up).RoundTrip(r.WithContext(WithExchange(r.Context(), e)))
			got := 0
			if err == nil {
				got = resp.StatusCode
				resp.Body.Close()
			}
			if len(up.bodies) != tt.wantTries || got != tt.wantStatus || e.Flags != tt.wantFlags || e.Retries != tt.wantRetries {
				t.Errorf("tries %d status %d (err %v) flags %v retries %d; want %d %d %v %d",
					len(up.bodies), got, err, e.Flags, e.Retries, tt.wantTries, tt.wantStatus, tt.wantFlags, tt.wantRetries)
			}
			for i, b := range up.bodies {
				if b != tt.body && !tt.grpc {
					t.Errorf("try %d sent a body of %d bytes, want %d", i, len(b), len(tt.body))
				}
				if up.headers[i].Get(RetryOnHeader) != "" {
					t.Errorf("try %d carried %s upstream", i, RetryOnHeader)
				}
			}
			if c := testutil.ToFloat64(m.retries.WithLabelValues("greeter")); int(c) != tt.wantRetries {
				t.Errorf("tender_upstream_retries_total = %v, want %d", c, tt.wantRetries)
			}
			if tt.policy != nil && tt.policy.State.Retrying.Load() != tt.retrying {
				t.Errorf("retries in flight %d after the request, want %d", tt.policy.State.Retrying.Load(), tt.retrying)
			}
		})
	}
}

// A client that leaves during the backoff ends the retries.
func TestRetryClientGone(t *testing.T) {
	pol := &Policy{Retry: &RetryPolicy{Attempts: 5, On: ParseRetryOn("5xx"), BackoffBase: time.Hour, BackoffMax: time.Hour}}
	up := &script{outcomes: []func(*http.Request) (*http.Response, error){status(503), status(503)}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	e := &Exchange{}
	withPolicy(pol)(e)
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(WithExchange(ctx, e))
	start := time.Now()
	_, err := Retry(nil)(up).RoundTrip(r)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second || len(up.bodies) != 1 {
		t.Errorf("err %v after %v and %d tries; want the deadline, at once, after 1 try", err, time.Since(start), len(up.bodies))
	}
	if pol.State.Retrying.Load() != 0 {
		t.Error("a retry abandoned in its backoff is still counted in flight")
	}
}

func TestBackoff(t *testing.T) {
	rp := &RetryPolicy{BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	for attempt, ceiling := range []time.Duration{10, 20, 40, 50, 50, 50} {
		ceiling *= time.Millisecond
		var longest time.Duration
		for range 200 {
			d := backoff(rp, attempt)
			if d <= 0 || d > ceiling {
				t.Fatalf("attempt %d waits %v, want (0, %v]", attempt, d, ceiling)
			}
			longest = max(longest, d)
		}
		if longest < ceiling/2 {
			t.Errorf("attempt %d: longest of 200 waits %v, want jitter over (0, %v]", attempt, longest, ceiling)
		}
	}
}

func newEndpoints(n int) []*balancer.Endpoint {
	eps := make([]*balancer.Endpoint, n)
	for i := range eps {
		eps[i] = &balancer.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80), Stats: &balancer.Stats{}}
	}
	return eps
}

func TestOutlierConsecutive(t *testing.T) {
	eps := newEndpoints(3)
	o := &OutlierPolicy{Consecutive5xx: 5, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50, Interval: time.Hour}
	now := time.Now()
	st := eps[0].Stats
	for i := 1; i <= 4; i++ {
		if o.RecordOutcome(st, eps, 503, false, now, nil) != 0 {
			t.Fatalf("ejected after %d errors, want 5", i)
		}
	}
	// A success in between starts the count again.
	o.RecordOutcome(st, eps, 200, false, now, nil)
	for range 4 {
		o.RecordOutcome(st, eps, 500, false, now, nil)
	}
	var told []netip.AddrPort
	if o.RecordOutcome(st, eps, 500, false, now, func(e *balancer.Endpoint) { told = append(told, e.Addr) }) != 1 ||
		!st.Ejected(now.UnixNano()) || len(told) != 1 || told[0] != eps[0].Addr {
		t.Fatalf("after 5 consecutive errors: ejected %v, told %v", st.Ejected(now.UnixNano()), told)
	}
	if !st.Ejected(now.Add(29*time.Second).UnixNano()) || st.Ejected(now.Add(31*time.Second).UnixNano()) {
		t.Error("the first ejection should last the base ejection time, 30s")
	}
	// At most 50% of 3 endpoints (one) out at once.
	for range 5 {
		if o.RecordOutcome(eps[1].Stats, eps, 0, true, now, nil) != 0 {
			t.Fatal("ejected a second endpoint beyond max ejection percent")
		}
	}
	// Back, failing again: the second ejection lasts twice as long.
	later := now.Add(31 * time.Second)
	for range 5 {
		o.RecordOutcome(st, eps, 503, false, later, nil)
	}
	if !st.Ejected(later.Add(59*time.Second).UnixNano()) || st.Ejected(later.Add(61*time.Second).UnixNano()) {
		t.Errorf("second ejection until %v after its start, want 60s", time.Duration(st.EjectedUntil.Load()-later.UnixNano()))
	}
	// Gateway errors alone, when only they are enforced.
	gw := &OutlierPolicy{ConsecutiveGateway: 2, MaxEjectionPercent: 100}
	st2 := eps[2].Stats
	gw.RecordOutcome(st2, eps, 500, false, now, nil)
	gw.RecordOutcome(st2, eps, 500, false, now, nil)
	if st2.Ejected(now.UnixNano()) {
		t.Error("500s ejected under a gateway-error-only policy")
	}
	gw.RecordOutcome(st2, eps, 502, false, now, nil)
	if gw.RecordOutcome(st2, eps, 0, true, now, nil) != 1 {
		t.Error("two consecutive gateway errors did not eject")
	}
	var none *OutlierPolicy
	if none.RecordOutcome(st2, eps, 503, false, now, nil) != 0 {
		t.Error("a nil policy ejected")
	}
}

func TestOutlierEjectionTime(t *testing.T) {
	eps := newEndpoints(2)
	o := &OutlierPolicy{Consecutive5xx: 1, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 25 * time.Second,
		MaxEjectionPercent: 100, Interval: time.Second}
	st := eps[0].Stats
	now := time.Now()
	for k := 1; k <= 4; k++ {
		o.RecordOutcome(st, eps, 503, false, now, nil)
		want := min(time.Duration(k)*10*time.Second, 25*time.Second)
		if got := time.Duration(st.EjectedUntil.Load() - now.UnixNano()); got != want {
			t.Errorf("ejection %d lasts %v, want %v (base × ejections, at most the max)", k, got, want)
		}
		now = time.Unix(0, st.EjectedUntil.Load())
	}
	// Healthy intervals lower the count again, one per interval.
	for range 3 {
		now = now.Add(1100 * time.Millisecond)
		o.RecordOutcome(st, eps, 200, false, now, nil)
	}
	if k := st.Ejections.Load(); k != 1 {
		t.Errorf("after 3 healthy intervals past the ejection: %d ejections counted, want 4-3 = 1", k)
	}
}

func TestOutlierSuccessRate(t *testing.T) {
	eps := newEndpoints(6)
	o := &OutlierPolicy{MaxEjectionPercent: 50, Interval: 10 * time.Second,
		SuccessRateStdevFactor: 1900, SuccessRateMinimumHosts: 5, SuccessRateRequestVolume: 100}
	now := time.Now()
	o.RecordOutcome(eps[0].Stats, eps, 200, false, now, nil) // starts the interval
	// Endpoint 5 fails 40% of its tries, the others 1%; not in a row, so
	// only the success rate can tell.
	for i := range 200 {
		for j, e := range eps {
			code := 200
			if (j == 5 && i%5 < 2) || (j < 5 && i%100 == 0) {
				code = 503
			}
			o.RecordOutcome(e.Stats, eps, code, false, now, nil)
		}
	}
	if n := o.RecordOutcome(eps[0].Stats, eps, 200, false, now.Add(9*time.Second), nil); n != 0 {
		t.Fatalf("ejected %d before the interval ended", n)
	}
	var told []netip.AddrPort
	if n := o.RecordOutcome(eps[0].Stats, eps, 200, false, now.Add(11*time.Second), func(e *balancer.Endpoint) { told = append(told, e.Addr) }); n != 1 ||
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
			o.RecordOutcome(e.Stats, few, code, false, now.Add(12*time.Second), nil)
		}
	}
	if n := o.RecordOutcome(few[0].Stats, few, 200, false, now.Add(25*time.Second), nil); n != 0 {
		t.Errorf("ejected %d with 3 endpoints, under the 5 minimum hosts", n)
	}
}

package interceptor

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func withPolicy(p *Policy) func(*Exchange) {
	return func(e *Exchange) {
		if p.State == nil {
			p.State = &PolicyState{}
		}
		e.Policy = p
	}
}

// serveWith runs r through h, as the engine does, with an outbound
// Exchange set up by opts.
func serveWith(h Handler, r *fakeRequest, opts ...func(*Exchange)) (*Exchange, Response) {
	e := &Exchange{Direction: Outbound, Start: time.Now(), Service: "greeter.default.svc.cluster.local"}
	if r != nil {
		e.Req = r
	}
	for _, o := range opts {
		o(e)
	}
	resp, _ := run(h, e)
	return e, resp
}

func statusOf(r Response) int {
	if r == nil {
		return 0
	}
	return r.StatusCode()
}

func TestFault(t *testing.T) {
	called := 0
	next := final(func(*Exchange) Response { called++; return response(200) })
	t.Run("abort", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{AbortPercent: 100, AbortStatus: 418}}
		e, resp := serveWith(Fault(next), newRequest(http.MethodGet, "/"), withPolicy(pol))
		if statusOf(resp) != 418 || e.Status != 418 || e.Flags != FlagFaultInjected || called != 0 {
			t.Errorf("got %d flags %v, upstream called %d times; want 418 FI 0", statusOf(resp), e.Flags, called)
		}
		e, resp = serveWith(Fault(next), grpcRequest(), withPolicy(&Policy{Fault: &FaultPolicy{AbortPercent: 100, AbortStatus: 503}}))
		lr, _ := resp.(*LocalReply)
		if lr == nil || lr.GRPCStatus() != "14" || e.Status != 200 || e.GRPCStatus != "14" || e.Flags != FlagFaultInjected {
			t.Errorf("gRPC abort: got %v status %d grpc-status %q flags %v; want a local reply, 200 14 FI", resp, e.Status, e.GRPCStatus, e.Flags)
		}
	})
	t.Run("delay", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{DelayPercent: 100, Delay: 30 * time.Millisecond}}
		start := time.Now()
		e, resp := serveWith(Fault(next), newRequest(http.MethodGet, "/"), withPolicy(pol))
		if took := time.Since(start); took < 30*time.Millisecond || e.Flags != FlagDelayInjected || called != 1 || statusOf(resp) != 200 {
			t.Errorf("took %v flags %v called %d code %d; want >=30ms DI 1 200", took, e.Flags, called, statusOf(resp))
		}
	})
	t.Run("delay ends at the deadline", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{DelayPercent: 100, Delay: time.Hour}}
		start := time.Now()
		e, _ := serveWith(Fault(next), newRequest(http.MethodGet, "/"), withPolicy(pol),
			func(e *Exchange) { e.Deadline = start.Add(20 * time.Millisecond) })
		if took := time.Since(start); took < 20*time.Millisecond || took > 5*time.Second || e.Flags&FlagDelayInjected == 0 {
			t.Errorf("took %v flags %v; want the delay cut to the 20ms deadline, DI", took, e.Flags)
		}
	})
	t.Run("share", func(t *testing.T) {
		called = 0
		pol := &Policy{Fault: &FaultPolicy{AbortPercent: 30, AbortStatus: 503}}
		const n = 2000
		aborted := 0
		for range n {
			if e, _ := serveWith(Fault(next), newRequest(http.MethodGet, "/"), withPolicy(pol)); e.Flags == FlagFaultInjected {
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
		if e, resp := serveWith(Fault(next), newRequest(http.MethodGet, "/")); statusOf(resp) != 200 || e.Flags != 0 || called != 1 {
			t.Errorf("got %d flags %v called %d", statusOf(resp), e.Flags, called)
		}
	})
}

func TestTimeout(t *testing.T) {
	var seen time.Time
	next := final(func(x *Exchange) Response { seen = x.Deadline; return response(200) })
	tests := []struct {
		name   string
		policy time.Duration
		grpc   string
		before time.Duration // a deadline already set, after Start; 0: none
		want   time.Duration // after Start; -1: no deadline
	}{
		{name: "route timeout", policy: 200 * time.Millisecond, want: 200 * time.Millisecond},
		{name: "shorter grpc deadline", policy: time.Second, grpc: "100m", want: 100 * time.Millisecond},
		{name: "grpc deadline, no route timeout", grpc: "3S", want: 3 * time.Second},
		{name: "longer grpc deadline", policy: 200 * time.Millisecond, grpc: "5S", want: 200 * time.Millisecond},
		{name: "passed grpc deadline", policy: 200 * time.Millisecond, grpc: "0n", want: 0},
		{name: "passed grpc deadline, no route timeout", grpc: "0m", want: 0},
		{name: "huge grpc deadline", grpc: "99999999H", want: maxGRPCTimeout},
		{name: "malformed grpc-timeout ignored", grpc: "soon", want: -1},
		{name: "malformed grpc-timeout, route timeout", policy: time.Second, grpc: "-1S", want: time.Second},
		{name: "sooner deadline kept", policy: time.Second, before: 50 * time.Millisecond, want: 50 * time.Millisecond},
		{name: "later deadline cut", policy: time.Second, before: time.Hour, want: time.Second},
		{name: "none", want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(http.MethodGet, "/")
			if tt.grpc != "" {
				r.SetHeader("Grpc-Timeout", tt.grpc)
			}
			seen = time.Time{}
			start := time.Now().Add(-time.Minute) // not now: the deadline counts from the request's start
			e, _ := serveWith(Timeout(next), r, withPolicy(&Policy{Timeout: tt.policy}), func(e *Exchange) {
				e.Start = start
				if tt.before != 0 {
					e.Deadline = start.Add(tt.before)
				}
			})
			want := time.Time{}
			if tt.want >= 0 {
				want = start.Add(tt.want)
			}
			if !seen.Equal(want) || !e.Deadline.Equal(want) {
				t.Errorf("deadline %v after start (seen by the next handler: %v), want %v",
					e.Deadline.Sub(start), seen.Sub(start), tt.want)
			}
		})
	}
	t.Run("no policy", func(t *testing.T) {
		r := newRequest(http.MethodGet, "/")
		r.SetHeader("grpc-timeout", "5S")
		e, _ := serveWith(Timeout(next), r)
		if !e.Deadline.Equal(e.Start.Add(5 * time.Second)) {
			t.Errorf("deadline %v after start, want 5s", e.Deadline.Sub(e.Start))
		}
		e, _ = serveWith(Timeout(next), nil)
		if !e.Deadline.IsZero() {
			t.Errorf("deadline set without a request or policy: %v", e.Deadline)
		}
	})
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
	// Eight digits of hours would overflow a Duration: they are capped.
	for _, v := range []string{"99999999H", "99999999M", "10000000H", "100001H"} {
		if got, ok := ParseGRPCTimeout(v); !ok || got != maxGRPCTimeout {
			t.Errorf("ParseGRPCTimeout(%q) = %v %v, want the cap %v", v, got, ok, maxGRPCTimeout)
		}
	}
	for v, want := range map[string]time.Duration{"100000H": maxGRPCTimeout, "99999999S": 99999999 * time.Second,
		"99999999n": 99999999, "0n": 0, "5S": 5 * time.Second} {
		if got, ok := ParseGRPCTimeout(v); !ok || got != want {
			t.Errorf("ParseGRPCTimeout(%q) = %v %v, want %v", v, got, ok, want)
		}
	}
	if v := FormatGRPCTimeout(maxGRPCTimeout + time.Hour); len(v) > 9 {
		t.Errorf("FormatGRPCTimeout of a long deadline = %q, over the header's 8 digits", v)
	}
}

func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"100m", "5S", "99999999H", "0n", "-1S", "+1S", "1x", "", "12345678u", "9223372036854775807n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseGRPCTimeout(v)
		if d < 0 || d > maxGRPCTimeout {
			t.Fatalf("ParseGRPCTimeout(%q) = %v, %v: out of [0, %v]", v, d, ok, maxGRPCTimeout)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseGRPCTimeout(%q) refused, yet returned %v", v, d)
		}
		if ok && d < maxGRPCTimeout {
			// What parses formats back to no more than it.
			if back, ok2 := ParseGRPCTimeout(FormatGRPCTimeout(d)); !ok2 || back > d {
				t.Fatalf("%q: %v formats as %q, which parses as %v %v", v, d, FormatGRPCTimeout(d), back, ok2)
			}
		}
	})
}

func TestCircuitBreaker(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewResilienceMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	slow := final(func(*Exchange) Response {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return response(200)
	})
	pol := &Policy{MaxRequests: 2, State: &PolicyState{}}
	cb := CircuitBreaker(m)(slow)
	var done sync.WaitGroup
	for range 2 {
		done.Go(func() { serveWith(cb, newRequest(http.MethodGet, "/"), withPolicy(pol)) })
	}
	<-entered
	<-entered
	start := time.Now()
	e, resp := serveWith(cb, newRequest(http.MethodGet, "/"), withPolicy(pol))
	if _, local := resp.(*LocalReply); !local || statusOf(resp) != http.StatusServiceUnavailable || e.Status != 503 ||
		e.Flags != FlagOverflow || time.Since(start) > time.Second {
		t.Errorf("third request: %v status %d flags %v after %v; want a local 503 UO at once", resp, e.Status, e.Flags, time.Since(start))
	}
	e, resp = serveWith(cb, grpcRequest(), withPolicy(pol))
	if lr, _ := resp.(*LocalReply); lr == nil || lr.GRPCStatus() != "14" || e.GRPCStatus != "14" || e.Flags != FlagOverflow {
		t.Errorf("gRPC overflow: %v grpc-status %q flags %v; want 14 UO", resp, e.GRPCStatus, e.Flags)
	}
	if got := testutil.ToFloat64(m.overflows.WithLabelValues("greeter.default.svc.cluster.local", "requests")); got != 2 {
		t.Errorf("tender_upstream_overflows_total{limit=requests} = %v, want 2", got)
	}
	// A refused request leaves the count as it found it.
	if n := pol.State.Active.Load(); n != 2 {
		t.Errorf("%d requests counted in flight, want the 2 admitted", n)
	}
	close(release)
	done.Wait()
	if n := pol.State.Active.Load(); n != 0 {
		t.Errorf("%d requests still counted in flight", n)
	}
	if e, resp := serveWith(cb, newRequest(http.MethodGet, "/"), withPolicy(pol)); statusOf(resp) != 200 || e.Flags != 0 {
		t.Errorf("after the others finished: %d %v, want 200", statusOf(resp), e.Flags)
	}
	// In flight until the exchange finishes, not until the chain returns.
	x := &Exchange{Req: newRequest(http.MethodGet, "/")}
	withPolicy(pol)(x)
	if _, err := CircuitBreaker(m)(final(func(*Exchange) Response { return response(200) })).Handle(x); err != nil {
		t.Fatal(err)
	}
	if n := pol.State.Active.Load(); n != 1 {
		t.Errorf("%d requests in flight while the response is relayed, want 1", n)
	}
	x.Finish()
	if n := pol.State.Active.Load(); n != 0 {
		t.Errorf("%d requests in flight after Finish, want 0", n)
	}
}

// script is the innermost handler for Retry: each try gets the next
// outcome, and what it sent is recorded.
type script struct {
	mu       sync.Mutex
	outcomes []func(*Exchange) (Response, error)
	bodies   []string
	headers  []header
	// tryDeadlines the per-try deadline each try had, attempts its
	// Exchange.Attempt.
	tryDeadlines []time.Time
	attempts     []int
	responses    []*fakeResponse
}

func (s *script) Handle(x *Exchange) (Response, error) {
	body := ""
	if r, ok := x.Body.(*Replay); ok {
		b, err := io.ReadAll(r.Reader())
		if err != nil {
			return nil, fmt.Errorf("%w: reading the body: %w", ErrReset, err)
		}
		body = string(b)
	}
	s.mu.Lock()
	i := len(s.bodies)
	s.bodies = append(s.bodies, body)
	if r, ok := x.Req.(*fakeRequest); ok {
		s.headers = append(s.headers, r.headers())
	} else {
		s.headers = append(s.headers, header{})
	}
	s.tryDeadlines = append(s.tryDeadlines, x.TryDeadline)
	s.attempts = append(s.attempts, x.Attempt)
	s.mu.Unlock()
	x.Tried = append(x.Tried, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80))
	out := status(200)
	if i < len(s.outcomes) {
		out = s.outcomes[i]
	}
	resp, err := out(x)
	if fr, ok := resp.(*fakeResponse); ok {
		s.mu.Lock()
		s.responses = append(s.responses, fr)
		s.mu.Unlock()
	}
	return resp, err
}

func status(code int) func(*Exchange) (Response, error) {
	return func(*Exchange) (Response, error) { return response(code), nil }
}

func grpcStatus(code string) func(*Exchange) (Response, error) {
	return func(*Exchange) (Response, error) { return response(200, "Grpc-Status", code), nil }
}

func fail(err error) func(*Exchange) (Response, error) {
	return func(*Exchange) (Response, error) { return nil, err }
}

var (
	connectRefused = fail(fmt.Errorf("%w: dial tcp 10.0.0.1:80: connection refused", ErrConnect))
	reset          = fail(fmt.Errorf("%w: EOF", ErrReset))
	perTryTimeout  = fail(ErrPerTryTimeout)
	// The peer sidecar's 503 for its app refusing the connection.
	peerUnprocessed = func(e *Exchange) (Response, error) { e.Unprocessed = true; return response(503), nil }
)

func TestRetry(t *testing.T) {
	big := strings.Repeat("x", MaxReplayBytes+1)
	retry5xx := &RetryPolicy{Attempts: 2, On: ParseRetryOn("5xx,connect-failure"), BackoffBase: time.Millisecond}
	type outcomes = []func(*Exchange) (Response, error)
	tests := []struct {
		name   string
		method string
		body   string // sent through a Replay; "": a fakeBody
		// noRewind: the fakeBody cannot be sent again
		noRewind bool
		header   map[string]string
		grpc     bool
		policy   *Policy
		outcomes outcomes
		// state before the request: retries already in flight
		retrying    int64
		wantTries   int
		wantStatus  int   // 0: an error
		wantErr     error // with wantStatus 0
		wantFlags   Flags
		wantRetries int
	}{
		{name: "503 then 200", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "body replayed", method: "PUT", body: "hello", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{status(502), status(500)}, wantTries: 3, wantStatus: 200, wantRetries: 2},
		{name: "attempts exhausted", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes:  outcomes{status(503), status(503), status(503)},
			wantTries: 3, wantStatus: 503, wantFlags: FlagRetryLimit, wantRetries: 2},
		{name: "4xx not retried", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{status(404)}, wantTries: 1, wantStatus: 404},
		{name: "POST not retried", method: "POST", body: "order", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "POST not retried on reset", method: "POST", body: "order", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{reset}, wantTries: 1, wantErr: ErrReset},
		{name: "POST retried on connect failure", method: "POST", body: "order", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{connectRefused}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "connect failure, out of tries", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes:  outcomes{connectRefused, connectRefused, connectRefused},
			wantTries: 3, wantErr: ErrConnect, wantFlags: FlagRetryLimit, wantRetries: 2},
		{name: "reset retried", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{reset}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "reset not named", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("connect-failure")}},
			outcomes: outcomes{reset}, wantTries: 1, wantErr: ErrReset},
		{name: "POST opted in", method: "POST", body: "order", header: map[string]string{RetryOnHeader: "5xx"},
			policy:   &Policy{Retry: retry5xx},
			outcomes: outcomes{status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "opt-in names the conditions", method: "GET", header: map[string]string{RetryOnHeader: "connect-failure"},
			policy:   &Policy{Retry: retry5xx},
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "body beyond the replay bound", method: "PUT", body: big, policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "body that cannot be rewound", method: "PUT", noRewind: true, policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "retriable status code", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("retriable-status-codes"), StatusCodes: []uint32{409}}},
			outcomes: outcomes{status(409)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "status code not listed", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("retriable-status-codes"), StatusCodes: []uint32{409}}},
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "gRPC unavailable", grpc: true,
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("unavailable")}},
			outcomes: outcomes{grpcStatus("14")}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "gRPC not found not retried", grpc: true,
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("unavailable,cancelled")}},
			outcomes: outcomes{grpcStatus("5")}, wantTries: 1, wantStatus: 200},
		{name: "per-try timeout", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("gateway-error"), PerTryTimeout: 20 * time.Millisecond}},
			outcomes: outcomes{perTryTimeout}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "per-try timeout, out of tries", method: "GET",
			policy:   &Policy{Retry: &RetryPolicy{Attempts: 1, On: ParseRetryOn("gateway-error"), PerTryTimeout: 20 * time.Millisecond}},
			outcomes: outcomes{perTryTimeout, perTryTimeout}, wantTries: 2, wantErr: ErrPerTryTimeout, wantFlags: FlagRetryLimit, wantRetries: 1},
		{name: "request timeout not retried", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{fail(ErrTimeout)}, wantTries: 1, wantErr: ErrTimeout},
		{name: "client gone not retried", method: "GET", policy: &Policy{Retry: retry5xx},
			outcomes: outcomes{fail(ErrClientGone)}, wantTries: 1, wantErr: ErrClientGone},
		{name: "budget spent", method: "GET", policy: &Policy{Retry: retry5xx, BudgetPercent: 20, MinRetryConcurrency: 3}, retrying: 3,
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503, wantFlags: FlagRetryOverflow},
		{name: "budget grows with load", method: "GET", policy: &Policy{Retry: retry5xx, BudgetPercent: 50, MinRetryConcurrency: 1},
			retrying: 3, outcomes: outcomes{status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "no limit", method: "GET", policy: &Policy{Retry: retry5xx}, retrying: 100,
			outcomes: outcomes{status(503)}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "max retries", method: "GET", policy: &Policy{Retry: retry5xx, MaxRetries: 3}, retrying: 3,
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503, wantFlags: FlagRetryOverflow},
		{name: "no policy", method: "GET",
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "no retry policy: connect failure goes elsewhere", method: "POST", body: "order", policy: &Policy{},
			outcomes: outcomes{connectRefused, connectRefused}, wantTries: 3, wantStatus: 200, wantRetries: 2},
		{name: "no retry policy: at most twice", method: "GET", policy: &Policy{},
			outcomes:  outcomes{connectRefused, connectRefused, connectRefused},
			wantTries: 3, wantErr: ErrConnect, wantFlags: FlagRetryLimit, wantRetries: 2},
		{name: "no retry policy: 503 not retried", method: "GET", policy: &Policy{},
			outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "no retry policy: nothing to opt into", method: "POST", body: "order", header: map[string]string{RetryOnHeader: "5xx"},
			policy: &Policy{}, outcomes: outcomes{status(503)}, wantTries: 1, wantStatus: 503},
		{name: "no retry policy: its own budget", method: "GET", policy: &Policy{}, retrying: 3,
			outcomes: outcomes{connectRefused}, wantTries: 1, wantErr: ErrConnect, wantFlags: FlagRetryOverflow},
		{name: "peer could not reach its app", method: "POST", body: "order", policy: &Policy{},
			outcomes: outcomes{peerUnprocessed}, wantTries: 2, wantStatus: 200, wantRetries: 1},
		{name: "retries turned off", method: "GET", policy: &Policy{Retry: &RetryPolicy{Attempts: 1}},
			outcomes: outcomes{connectRefused}, wantTries: 1, wantErr: ErrConnect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := NewResilienceMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			up := &script{outcomes: tt.outcomes}
			var r *fakeRequest
			if tt.grpc {
				r = grpcRequest()
			} else {
				r = newRequest(tt.method, "http://greeter/")
			}
			for k, v := range tt.header {
				r.SetHeader(k, v)
			}
			e := &Exchange{Direction: Outbound, Service: "greeter", Req: r}
			fb := &fakeBody{ok: !tt.noRewind}
			if tt.body != "" {
				e.Body = NewReplay(io.NopCloser(strings.NewReader(tt.body)))
			} else if !tt.grpc {
				e.Body = fb
			}
			if tt.policy != nil {
				withPolicy(tt.policy)(e)
				tt.policy.State.Retrying.Store(tt.retrying)
				// The 10 requests in flight the budget is a share of.
				tt.policy.State.Active.Store(10)
			}
			resp, err := Retry(m)(up).Handle(e)
			got := 0
			if err == nil {
				got = resp.StatusCode()
			} else if resp != nil {
				t.Errorf("an error (%v) with a response %v", err, resp)
			}
			if len(up.bodies) != tt.wantTries || got != tt.wantStatus || e.Flags != tt.wantFlags || e.Retries != tt.wantRetries {
				t.Errorf("tries %d status %d (err %v) flags %v retries %d; want %d %d %v %d",
					len(up.bodies), got, err, e.Flags, e.Retries, tt.wantTries, tt.wantStatus, tt.wantFlags, tt.wantRetries)
			}
			if tt.wantStatus == 0 && !errors.Is(err, tt.wantErr) {
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
			if e.Attempt != len(up.bodies) || len(e.Tried) != len(up.bodies) {
				t.Errorf("attempts %d, tried %v; want %d each", e.Attempt, e.Tried, len(up.bodies))
			}
			for i, b := range up.bodies {
				if b != tt.body && !tt.grpc {
					t.Errorf("try %d sent a body of %d bytes, want %d", i, len(b), len(tt.body))
				}
				if up.headers[i].Get(RetryOnHeader) != "" {
					t.Errorf("try %d carried %s upstream", i, RetryOnHeader)
				}
				if up.attempts[i] != i+1 {
					t.Errorf("try %d saw Attempt %d", i, up.attempts[i])
				}
				if rp := tt.policy; rp != nil && rp.Retry != nil && rp.Retry.PerTryTimeout > 0 {
					if left := time.Until(up.tryDeadlines[i]); left > rp.Retry.PerTryTimeout || left < rp.Retry.PerTryTimeout-time.Second {
						t.Errorf("try %d had its per-try deadline in %v, want about %v", i, left, rp.Retry.PerTryTimeout)
					}
				} else if !up.tryDeadlines[i].IsZero() {
					t.Errorf("try %d had a per-try deadline without a per-try timeout", i)
				}
			}
			if !e.TryDeadline.IsZero() {
				t.Error("the per-try deadline outlived the tries")
			}
			// Every response but the one returned is discarded, once.
			for i, fr := range up.responses {
				want := int32(1)
				if Response(fr) == resp {
					want = 0
				}
				if n := fr.discarded.Load(); n != want {
					t.Errorf("response of try %d (%d) discarded %d times, want %d", i, fr.status, n, want)
				}
			}
			if e.Body == fb && fb.rewinds != tt.wantRetries+btoi(tt.noRewind) {
				t.Errorf("body rewound %d times, want %d", fb.rewinds, tt.wantRetries+btoi(tt.noRewind))
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

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A request whose deadline comes during the backoff ends at its deadline.
func TestRetryDeadline(t *testing.T) {
	pol := &Policy{Retry: &RetryPolicy{Attempts: 5, On: ParseRetryOn("5xx"), BackoffBase: time.Hour, BackoffMax: time.Hour}}
	up := &script{outcomes: []func(*Exchange) (Response, error){status(503), status(503)}}
	start := time.Now()
	e := &Exchange{Req: newRequest(http.MethodGet, "/"), Start: start, Deadline: start.Add(50 * time.Millisecond)}
	withPolicy(pol)(e)
	_, err := Retry(nil)(up).Handle(e)
	if took := time.Since(start); !errors.Is(err, ErrTimeout) || took > 5*time.Second || took < 50*time.Millisecond || len(up.bodies) != 1 {
		t.Errorf("err %v after %v and %d tries; want the timeout, at the deadline, after 1 try", err, took, len(up.bodies))
	}
	if pol.State.Retrying.Load() != 0 {
		t.Error("a retry abandoned in its backoff is still counted in flight")
	}
	if lr := ReplyFor(e, err, nil); lr == nil || lr.Status != 504 || e.Flags&FlagUpstreamTimeout == 0 {
		t.Errorf("answered %v flags %v, want 504 UT", lr, e.Flags)
	}
	if n := up.responses[0].discarded.Load(); n != 1 {
		t.Errorf("the 503 the retry replaced was discarded %d times, want 1", n)
	}
}

func TestParseRetryOn(t *testing.T) {
	for s, want := range map[string]uint32{
		"5xx":                               retry5xx,
		" 5xx , connect-failure,":           retry5xx | retryConnectFailure,
		"gateway-error,reset,unknown-thing": retryGatewayError | retryReset,
		"cancelled,deadline-exceeded":       retryCancelled | retryDeadlineExceeded,
		"resource-exhausted,unavailable":    retryResourceExhausted | retryUnavailable,
		"retriable-status-codes":            retryStatusCodes,
		"":                                  0,
		"5XX":                               0,
	} {
		if got := ParseRetryOn(s); got != want {
			t.Errorf("ParseRetryOn(%q) = %b, want %b", s, got, want)
		}
	}
}

func FuzzParseRetryOn(f *testing.F) {
	for _, s := range []string{"5xx,connect-failure", "", ",,,", "unavailable, cancelled", "\xff,5xx"} {
		f.Add(s)
	}
	var all uint32
	for _, b := range retryNames {
		all |= b
	}
	f.Fuzz(func(t *testing.T, s string) {
		on := ParseRetryOn(s)
		if on&^all != 0 {
			t.Errorf("ParseRetryOn(%q) = %b, beyond the known conditions %b", s, on, all)
		}
		// Each condition named is one the result has.
		for _, c := range strings.Split(s, ",") {
			if b, ok := retryNames[strings.TrimSpace(c)]; ok && on&b == 0 {
				t.Errorf("ParseRetryOn(%q) = %b lacks %q", s, on, c)
			}
		}
	})
}

// Replay sends each try the whole body, and cuts a superseded try off.
func TestReplay(t *testing.T) {
	r := NewReplay(io.NopCloser(strings.NewReader("hello world")))
	first := r.Reader()
	buf := make([]byte, 5)
	if n, err := io.ReadFull(first, buf); n != 5 || err != nil || string(buf) != "hello" {
		t.Fatalf("first try read %q %v", buf[:n], err)
	}
	if !r.Rewind() {
		t.Fatal("a small body cannot be rewound")
	}
	if _, err := first.Read(buf); !errors.Is(err, errSuperseded) {
		t.Errorf("a superseded try read on: %v", err)
	}
	b, err := io.ReadAll(r.Reader())
	if err != nil || string(b) != "hello world" {
		t.Errorf("second try read %q %v, want the whole body", b, err)
	}
	if !r.Rewind() {
		t.Fatal("a body read to its end cannot be rewound")
	}
	if b, err := io.ReadAll(r.Reader()); err != nil || string(b) != "hello world" {
		t.Errorf("third try read %q %v", b, err)
	}

	big := strings.Repeat("x", MaxReplayBytes+1)
	r = NewReplay(io.NopCloser(strings.NewReader(big)))
	if b, err := io.ReadAll(r.Reader()); err != nil || len(b) != len(big) {
		t.Errorf("a body beyond the bound read %d bytes %v, want all %d", len(b), err, len(big))
	}
	if r.Rewind() {
		t.Error("a body beyond MaxReplayBytes was rewound")
	}
}

// Only a peer sidecar's own reply, over mutual TLS, says the request
// never reached the app; an app's answer relayed by its sidecar carries
// the PeerHeader, and plaintext answers are anyone's.
func TestPeerUnprocessed(t *testing.T) {
	const refused = "upstream connect error: dial tcp 10.244.0.6:8080: connect: connection refused"
	for _, tt := range []struct {
		mtls        bool
		status      int
		peer, error string
		want        bool
	}{
		{true, 503, "", refused, true},
		{true, 503, "shop/greeter", refused, false},
		{false, 503, "", refused, false},
		{true, 503, "", "upstream reset before response: EOF", false},
		{true, 503, "", "", false},
		{true, 502, "", refused, false},
		{true, 200, "", refused, false},
	} {
		if got := PeerUnprocessed(tt.mtls, tt.status, tt.peer, tt.error); got != tt.want {
			t.Errorf("mtls %v, %d, peer %q, error %q: %v, want %v", tt.mtls, tt.status, tt.peer, tt.error, got, tt.want)
		}
	}
	// What ReplyFor answers a connect failure with is what the peer reads.
	r := ReplyFor(&Exchange{}, fmt.Errorf("%w: dial tcp: connection refused", ErrConnect), nil)
	if !PeerUnprocessed(true, r.StatusCode(), "", r.Header(ErrorHeader)) {
		t.Errorf("ReplyFor(ErrConnect) = %d %q, not read as unprocessed", r.StatusCode(), r.Header(ErrorHeader))
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

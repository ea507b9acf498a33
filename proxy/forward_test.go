package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// recorder keeps the exchanges the chain finished, as the metrics
// interceptor sees them (deferred, so broken-off responses count too).
type recorder struct {
	mu   sync.Mutex
	done []recorded
}

type recorded struct {
	Status int
	Flags  interceptor.Flags
}

func (rec *recorder) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			e := interceptor.FromContext(r.Context())
			rec.done = append(rec.done, recorded{Status: e.Status, Flags: e.Flags})
		}()
		next.ServeHTTP(w, r)
	})
}

func (rec *recorder) last(t *testing.T) recorded {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.done)
		rec.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.done) == 0 {
		t.Fatal("no exchange recorded")
	}
	return rec.done[len(rec.done)-1]
}

// front serves requests through p's chain to upstream, routed as the
// sidecar's outbound listener routes a one-endpoint cluster.
func front(t *testing.T, upstream http.Handler) (*httptest.Server, *balancer.Stats) {
	t.Helper()
	fr, st, _ := frontRecorded(t, upstream)
	return fr, st
}

func frontRecorded(t *testing.T, upstream http.Handler) (*httptest.Server, *balancer.Stats, *recorder) {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	to := netip.MustParseAddrPort(strings.TrimPrefix(up.URL, "http://"))
	rec := &recorder{}
	p := New(Options{Interceptors: []interceptor.Middleware{rec.middleware, interceptor.Observe}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	st := &balancer.Stats{}
	eps := []*balancer.Endpoint{{Addr: to, Stats: st, Healthy: true, Weight: 1}}
	picker, err := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	cl := &Cluster{Name: "test", Endpoints: eps, Picker: picker}
	fr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { route(p, w, r, to, cl) }))
	t.Cleanup(fr.Close)
	return fr, st, rec
}

// route runs r through p's chain as an outbound request to cl (nil:
// passthrough to dst) and returns what the proxy recorded.
func route(p *Proxy, w http.ResponseWriter, r *http.Request, dst netip.AddrPort, cl *Cluster) *request {
	req := &request{dst: dst, cl: cl}
	req.ex.Direction = interceptor.Outbound
	if cl != nil {
		req.ex.Service, req.ex.Policy = cl.Host, cl.Resilience
	}
	ctx := context.WithValue(interceptor.WithExchange(r.Context(), &req.ex), requestKey{}, req)
	p.chain.ServeHTTP(w, r.WithContext(ctx))
	return req
}

func TestForwardUpgrade(t *testing.T) {
	fr, _, rec := frontRecorded(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw) // echo frames
	}))
	c, err := net.Dial("tcp", strings.TrimPrefix(fr.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: greeter\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("got %v %v, want 101 Switching Protocols", resp, err)
	}
	fmt.Fprint(c, "ping over the upgraded connection")
	buf := make([]byte, len("ping over the upgraded connection"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping over the upgraded connection" {
		t.Fatalf("after the upgrade: got %q, %v", buf, err)
	}
	c.Close()
	if got := rec.last(t); got.Status != http.StatusSwitchingProtocols {
		t.Errorf("recorded status %d, want 101", got.Status)
	}
}

// TestForwardBrokenBody: an upstream that dies mid-body; the client sees
// the response break off, and the exchange is still recorded, flagged UC.
func TestForwardBrokenBody(t *testing.T) {
	fr, _, rec := frontRecorded(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	resp, err := http.Get(fr.URL + "/stream")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("the client read a complete body from an upstream that died mid-body")
	}
	if got := rec.last(t); got.Flags&interceptor.FlagUpstreamReset == 0 || got.Status != 200 {
		t.Errorf("recorded status %d flags %v, want 200 and UC", got.Status, got.Flags)
	}
}

func TestForwardTrailersAndStatus(t *testing.T) {
	fr, st := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Connection", "X-Hop") // hop-by-hop: must not reach the client
		w.Header().Set("X-Hop", "secret")
		io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
	}))
	resp, err := http.Get(fr.URL + "/data")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("got body %q trailer %q, want body and trailer X-Checksum=abc", body, resp.Trailer.Get("X-Checksum"))
	}
	if resp.Header.Get("X-Hop") != "" {
		t.Errorf("hop-by-hop header X-Hop reached the client")
	}
	resp, err = http.Get(fr.URL + "/fail")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The handler returns (and counts the request done) just after the
	// client has its answer.
	for deadline := time.Now().Add(5 * time.Second); st.Active.Load() != 0 && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	if resp.StatusCode != http.StatusServiceUnavailable || st.Failed.Load() != 1 || st.Total.Load() != 2 || st.Active.Load() != 0 {
		t.Errorf("got status %d, stats total=%d failed=%d active=%d; want 503, 2, 1, 0",
			resp.StatusCode, st.Total.Load(), st.Failed.Load(), st.Active.Load())
	}
}

func TestForwardDeadUpstream(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := netip.MustParseAddrPort(lis.Addr().String())
	lis.Close()
	p := New(Options{DialTimeout: time.Second})
	defer p.Shutdown(context.Background())
	for _, grpc := range []bool{false, true} {
		req := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader("hi"))
		if grpc {
			req.Header.Set("Content-Type", "application/grpc")
			req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
		}
		rec := httptest.NewRecorder()
		got := route(p, rec, req, dead, nil)
		if got.ex.Flags != interceptor.FlagUpstreamConnectFailure {
			t.Errorf("response flags %v, want UF", got.ex.Flags)
		}
		switch {
		case grpc && (rec.Code != http.StatusOK || rec.Header().Get("Grpc-Status") != "14"):
			t.Errorf("gRPC to a dead endpoint: got %d grpc-status %q, want 200 with grpc-status 14", rec.Code, rec.Header().Get("Grpc-Status"))
		case !grpc && rec.Code != http.StatusServiceUnavailable:
			t.Errorf("HTTP to a dead endpoint: got %d, want 503", rec.Code)
		}
	}
}

// upstreams starts one server per handler and returns a cluster over them
// with the given policy.
func upstreams(t *testing.T, pol *interceptor.Policy, handlers ...http.Handler) *Cluster {
	t.Helper()
	var eps []*balancer.Endpoint
	for _, h := range handlers {
		up := httptest.NewServer(h)
		t.Cleanup(up.Close)
		eps = append(eps, &balancer.Endpoint{Addr: netip.MustParseAddrPort(strings.TrimPrefix(up.URL, "http://")),
			Stats: &balancer.Stats{}, Healthy: true, Weight: 1})
	}
	picker, err := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	if pol.State == nil {
		pol.State = &interceptor.PolicyState{}
	}
	return &Cluster{Name: "test", Host: "greeter.default.svc.cluster.local", Endpoints: eps, Picker: picker, Resilience: pol}
}

func resilientProxy(t *testing.T) *Proxy {
	t.Helper()
	p := New(Options{DialTimeout: time.Second, Interceptors: []interceptor.Middleware{
		interceptor.Observe, interceptor.Fault, interceptor.Timeout, interceptor.CircuitBreaker(nil)}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

// A failing endpoint: each failed try is retried on the other endpoint,
// and outlier detection takes the failing one out after its consecutive
// errors.
func TestForwardRetryElsewhereAndEject(t *testing.T) {
	var badHits, goodHits int
	var mu sync.Mutex
	bad := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		badHits++
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	good := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		goodHits++
		mu.Unlock()
		if b, _ := io.ReadAll(r.Body); string(b) != "payload" {
			http.Error(w, "body not replayed: "+string(b), http.StatusBadRequest)
		}
	})
	pol := &interceptor.Policy{
		Retry:   &interceptor.RetryPolicy{Attempts: 1, On: interceptor.ParseRetryOn("5xx"), BackoffBase: time.Millisecond},
		Outlier: &interceptor.OutlierPolicy{Consecutive5xx: 3, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50},
	}
	cl := upstreams(t, pol, bad, good)
	p := resilientProxy(t)
	for i := range 20 {
		req := httptest.NewRequest(http.MethodPut, "/", strings.NewReader("payload"))
		rec := httptest.NewRecorder()
		got := route(p, rec, req, netip.AddrPort{}, cl)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: %d %s (flags %v)", i, rec.Code, rec.Body, got.ex.Flags)
		}
		if got.ex.Retries > 0 && (len(got.ex.Tried) != 2 || got.ex.Tried[0] == got.ex.Tried[1]) {
			t.Errorf("request %d retried on %v, want two different endpoints", i, got.ex.Tried)
		}
	}
	if badHits != 3 || goodHits != 20 {
		t.Errorf("failing endpoint got %d tries, healthy one %d; want 3 (then ejected) and 20", badHits, goodHits)
	}
	if !cl.Endpoints[0].Stats.Ejected(time.Now().UnixNano()) || cl.Endpoints[0].Stats.Failed.Load() != 3 {
		t.Errorf("failing endpoint ejected=%v failed=%d, want ejected after 3", cl.Endpoints[0].Stats.Ejected(time.Now().UnixNano()),
			cl.Endpoints[0].Stats.Failed.Load())
	}
	for _, ep := range cl.Endpoints {
		if n := ep.Stats.Active.Load(); n != 0 {
			t.Errorf("endpoint %v has %d requests still counted active", ep.Addr, n)
		}
	}
}

// A hanging endpoint: the route timeout answers 504 UT; with a per-try
// timeout and a retry the request succeeds on the other endpoint in time.
func TestForwardTimeouts(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hang := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	p := resilientProxy(t)

	cl := upstreams(t, &interceptor.Policy{Timeout: 100 * time.Millisecond}, hang)
	start := time.Now()
	rec := httptest.NewRecorder()
	got := route(p, rec, httptest.NewRequest(http.MethodGet, "/", nil), netip.AddrPort{}, cl)
	if rec.Code != http.StatusGatewayTimeout || got.ex.Flags != interceptor.FlagUpstreamTimeout || time.Since(start) > 2*time.Second {
		t.Errorf("route timeout: %d flags %v after %v; want 504 UT after about 100ms", rec.Code, got.ex.Flags, time.Since(start))
	}

	cl = upstreams(t, &interceptor.Policy{Timeout: 2 * time.Second, Retry: &interceptor.RetryPolicy{
		Attempts: 1, On: interceptor.ParseRetryOn("5xx"), PerTryTimeout: 100 * time.Millisecond, BackoffBase: time.Millisecond}}, hang, ok)
	for i := range 4 {
		start = time.Now()
		rec = httptest.NewRecorder()
		got = route(p, rec, httptest.NewRequest(http.MethodGet, "/", nil), netip.AddrPort{}, cl)
		if rec.Code != http.StatusOK || time.Since(start) > time.Second {
			t.Errorf("request %d with a per-try timeout: %d flags %v after %v; want 200 within the route timeout", i, rec.Code, got.ex.Flags, time.Since(start))
		}
	}

	// A gRPC deadline is passed on, shortened by the time spent.
	var sent string
	seen := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = r.Header.Get("Grpc-Timeout")
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "0")
	})
	h2 := httptest.NewUnstartedServer(seen)
	h2.EnableHTTP2 = true
	h2.Config.Protocols = new(http.Protocols)
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Start()
	t.Cleanup(h2.Close)
	cl = upstreams(t, &interceptor.Policy{}, seen)
	cl.Endpoints[0].Addr = netip.MustParseAddrPort(strings.TrimPrefix(h2.URL, "http://"))
	req := httptest.NewRequest(http.MethodPost, "/greeter.Greeter/SayHello", strings.NewReader(""))
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Grpc-Timeout", "1S")
	rec = httptest.NewRecorder()
	route(p, rec, req, netip.AddrPort{}, cl)
	d, ok2 := interceptor.ParseGRPCTimeout(sent)
	if rec.Code != 200 || !ok2 || d >= time.Second || d < 500*time.Millisecond {
		t.Errorf("upstream got grpc-timeout %q (status %d), want a little under 1S", sent, rec.Code)
	}
}

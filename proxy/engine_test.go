package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// testVIP is where the test clients' connections were "going": every
// connection to a test proxy is routed as if redirected from it.
var testVIP = netip.MustParseAddrPort("10.96.0.10:80")

// recorder keeps the exchanges the chain finished.
type recorder struct {
	mu   sync.Mutex
	done []recorded
	ch   chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1000)} }

func (rec *recorder) middleware(next interceptor.Handler) interceptor.Handler {
	save := func(x *interceptor.Exchange) {
		rec.mu.Lock()
		rec.done = append(rec.done, recorded{Status: x.Status, Flags: x.Flags, Retries: x.Retries,
			Tried: append([]netip.AddrPort(nil), x.Tried...), Upstream: x.Upstream, ResponseBytes: x.ResponseBytes,
			GRPCStatus: x.GRPCStatus, Service: x.Service, RequestBytes: x.RequestBytes()})
		rec.mu.Unlock()
		select {
		case rec.ch <- struct{}{}:
		default: // nobody waits for this many
		}
	}
	return interceptor.HandlerFunc(func(x *interceptor.Exchange) (interceptor.Response, error) {
		x.Defer(save)
		return next.Handle(x)
	})
}

// last waits for the next finished exchange and returns the latest.
// recorded is what a test checks of a finished exchange.
type recorded struct {
	Status                      int
	Flags                       interceptor.Flags
	Retries                     int
	Tried                       []netip.AddrPort
	Upstream                    netip.AddrPort
	ResponseBytes, RequestBytes int64
	GRPCStatus, Service         string
}

func (rec *recorder) last(t *testing.T) recorded {
	t.Helper()
	select {
	case <-rec.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no exchange recorded")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.done[len(rec.done)-1]
}

// testProxy is a proxy serving outbound on a loopback listener, every
// connection routed to testVIP's cluster.
type testProxy struct {
	p    *Proxy
	addr string
	rec  *recorder
}

func startProxy(tb testing.TB, cl *Cluster, mws ...interceptor.Middleware) *testProxy {
	tb.Helper()
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return testVIP, nil }
	tb.Cleanup(func() { originalDst = orig })
	rec := newRecorder()
	p := New(Options{DialTimeout: time.Second, HeaderTimeout: 2 * time.Second,
		Interceptors: append([]interceptor.Middleware{rec.middleware}, mws...)})
	table := NewTable()
	if cl != nil {
		table.ByVIP[testVIP] = cl
		table.Clusters[cl.Name] = cl
	}
	p.SetTable(table)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Serve(lis, Outbound); close(done) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		<-done
	})
	return &testProxy{p: p, addr: lis.Addr().String(), rec: rec}
}

// upstreams starts one server per handler and returns a cluster over them
// with the given policy.
func upstreams(tb testing.TB, pol *interceptor.Policy, handlers ...http.Handler) *Cluster {
	tb.Helper()
	var eps []*balancer.Endpoint
	for _, h := range handlers {
		up := httptest.NewUnstartedServer(h)
		up.Config.Protocols = new(http.Protocols)
		up.Config.Protocols.SetHTTP1(true)
		up.Config.Protocols.SetUnencryptedHTTP2(true)
		up.Config.ErrorLog = log.New(io.Discard, "", 0) // h2spec's malformed frames are logged otherwise
		up.Start()
		tb.Cleanup(up.Close)
		eps = append(eps, &balancer.Endpoint{Addr: netip.MustParseAddrPort(strings.TrimPrefix(up.URL, "http://")),
			Stats: &balancer.Stats{}, Healthy: true, Weight: 1})
	}
	picker, err := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	if err != nil {
		tb.Fatal(err)
	}
	if pol == nil {
		pol = &interceptor.Policy{}
	}
	if pol.State == nil {
		pol.State = &interceptor.PolicyState{}
	}
	return &Cluster{Name: "test", Host: "greeter.default.svc.cluster.local", Endpoints: eps, Picker: picker, Resilience: pol}
}

func (tp *testProxy) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", tp.addr)
		}}}
}

func (tp *testProxy) h2client() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", tp.addr)
		},
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// raw sends bytes on a fresh connection and reads one response.
func (tp *testProxy) raw(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response to %q: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestForwardKeepAliveAndPool(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s peer=%q", r.Method, r.URL, b, r.Header.Get(interceptor.PeerHeader))
	}))
	tp := startProxy(t, cl)
	c := tp.client()
	for i := range 5 {
		resp, err := c.Post("http://greeter/hello?x=1", "text/plain", strings.NewReader(fmt.Sprint("body", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("POST /hello?x=1 body%d peer=\"unknown/unknown\"", i); string(b) != want {
			t.Errorf("request %d: got %q, want %q", i, b, want)
		}
		if got := tp.rec.last(t); got.Status != 200 || got.Flags != 0 {
			t.Errorf("request %d recorded status %d flags %v, want 200 -", i, got.Status, got.Flags)
		}
	}
	if n := tp.p.pool.idle(poolKey{addr: cl.Endpoints[0].Addr}); n != 1 {
		t.Errorf("%d idle upstream connections after 5 sequential requests, want 1 (reused)", n)
	}
	if st := cl.Endpoints[0].Stats; st.Total.Load() != 5 || st.Active.Load() != 0 {
		t.Errorf("endpoint stats total=%d active=%d, want 5 and 0", st.Total.Load(), st.Active.Load())
	}
}

func TestForwardUpgrade(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	tp := startProxy(t, cl)
	c, err := net.Dial("tcp", tp.addr)
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
	if got := tp.rec.last(t); got.Status != http.StatusSwitchingProtocols {
		t.Errorf("recorded status %d, want 101", got.Status)
	}
}

// TestForwardBrokenBody: an upstream that dies mid-body; the client sees
// the response break off, and the exchange is still recorded, flagged UC.
func TestForwardBrokenBody(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	tp := startProxy(t, cl)
	resp, err := tp.client().Get("http://greeter/stream")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("the client read a complete body from an upstream that died mid-body")
	}
	if got := tp.rec.last(t); got.Flags&interceptor.FlagUpstreamReset == 0 || got.Status != 200 {
		t.Errorf("recorded status %d flags %v, want 200 and UC", got.Status, got.Flags)
	}
}

func TestForwardTrailersAndStatus(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	tp := startProxy(t, cl)
	st := cl.Endpoints[0].Stats
	for _, c := range []*http.Client{tp.client(), tp.h2client()} {
		resp, err := c.Get("http://greeter/data")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
			t.Errorf("%s: got body %q trailer %q, want body and trailer X-Checksum=abc", resp.Proto, body, resp.Trailer.Get("X-Checksum"))
		}
		// (HTTP/2 has no Connection header: the upstream's server drops it.)
		if resp.ProtoMajor == 1 && resp.Header.Get("X-Hop") != "" {
			t.Errorf("%s: hop-by-hop header X-Hop reached the client", resp.Proto)
		}
		resp, err = c.Get("http://greeter/fail")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: got status %d, want 503", resp.Proto, resp.StatusCode)
		}
	}
	// The proxy counts a request done just after the client has its answer.
	for deadline := time.Now().Add(5 * time.Second); st.Active.Load() != 0 && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	if st.Failed.Load() != 2 || st.Total.Load() != 4 || st.Active.Load() != 0 {
		t.Errorf("stats total=%d failed=%d active=%d; want 4, 2, 0", st.Total.Load(), st.Failed.Load(), st.Active.Load())
	}
}

func TestForwardDeadUpstream(t *testing.T) {
	dead := deadAddr(t)
	cl := upstreams(t, nil)
	cl.Endpoints = []*balancer.Endpoint{{Addr: dead, Stats: &balancer.Stats{}, Healthy: true}}
	cl.Picker, _ = balancer.New("ROUND_ROBIN", cl.Endpoints, balancer.Locality{})
	tp := startProxy(t, cl)
	resp, err := tp.client().Post("http://greeter/x", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Three tries (interceptor.DefaultRetry: connect failures twice more),
	// all to the one endpoint there is.
	if got := tp.rec.last(t); got.Flags != interceptor.FlagUpstreamConnectFailure|interceptor.FlagRetryLimit || got.Retries != 2 ||
		resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("HTTP to a dead endpoint: got %d, flags %v, %d retries, want 503 UF,URX after 2", resp.StatusCode, got.Flags, got.Retries)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://greeter/greeter.Greeter/SayHello", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err = tp.h2client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Grpc-Status") != "14" {
		t.Errorf("gRPC to a dead endpoint: got %d grpc-status %q, want 200 with grpc-status 14", resp.StatusCode, resp.Header.Get("Grpc-Status"))
	}
}

// An endpoint that refuses connections (its pod stopping before the
// control plane's word of it arrives) costs no request: the try goes to
// another endpoint (interceptor.DefaultRetry, even for a POST), and the
// refusing endpoint leaves the picks for a while, so later requests do not
// try it first.
func TestRefusedEndpointLeavesPicks(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	dead := &balancer.Endpoint{Addr: deadAddr(t), Stats: &balancer.Stats{}, Healthy: true, Weight: 1}
	cl.Endpoints = append([]*balancer.Endpoint{dead}, cl.Endpoints...)
	cl.Picker, _ = balancer.New("ROUND_ROBIN", cl.Endpoints, balancer.Locality{})
	tp := startProxy(t, cl)
	c := tp.client()
	for i := range 20 {
		resp, err := c.Post("http://greeter/order", "text/plain", strings.NewReader("one"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, resp.StatusCode, body)
		}
	}
	if n := dead.Stats.Total.Load(); n != 1 {
		t.Errorf("the refusing endpoint was tried %d times in 20 requests, want once", n)
	}
	if left := time.Until(time.Unix(0, dead.Stats.HeldUntil.Load())); left <= 0 || left > refusedHold {
		t.Errorf("the refusing endpoint is out for %v more, want up to %v", left, refusedHold)
	}
	// Outlier detection's bookkeeping is its own.
	if dead.Stats.EjectedUntil.Load() != 0 || dead.Stats.Ejections.Load() != 0 {
		t.Errorf("a held endpoint counted as ejected: until %d, %d ejections", dead.Stats.EjectedUntil.Load(), dead.Stats.Ejections.Load())
	}
}

// A small chunked body comes whole with its head, as most clients write
// it; it is kept so, and a retry sends it again, framing and all.
func TestChunkedBodyRetried(t *testing.T) {
	var mu sync.Mutex
	var got []string
	handler := func(status int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			got = append(got, fmt.Sprintf("%d %q %v", status, b, r.TransferEncoding))
			mu.Unlock()
			w.WriteHeader(status)
		})
	}
	// The route retries 5xx; the client opts its POST in.
	pol := &interceptor.Policy{Retry: &interceptor.RetryPolicy{Attempts: 1, On: interceptor.ParseRetryOn("5xx")}}
	cl := upstreams(t, pol, handler(http.StatusServiceUnavailable), handler(http.StatusOK))
	tp := startProxy(t, cl)
	// Head and body in one write, as Go's client usually (not always)
	// sends them.
	conn, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"name":"world"}`
	if _, err := fmt.Fprintf(conn, "POST /order HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\n%s: 5xx\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
		interceptor.RetryOnHeader, len(body), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := []string{`503 "{\"name\":\"world\"}" [chunked]`, `200 "{\"name\":\"world\"}" [chunked]`}
	if resp.StatusCode != http.StatusOK || !slices.Equal(got, want) {
		t.Errorf("got %d after %q, want 200 after %q", resp.StatusCode, got, want)
	}
}

func resilience() []interceptor.Middleware {
	return []interceptor.Middleware{interceptor.Fault, interceptor.Timeout, interceptor.CircuitBreaker(nil)}
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
		Retry: &interceptor.RetryPolicy{Attempts: 1, On: interceptor.ParseRetryOn("5xx"), BackoffBase: time.Millisecond},
	}
	cl := upstreams(t, pol, bad, good)
	cl.Outlier = &balancer.OutlierPolicy{Consecutive5xx: 3, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50}
	cl.OutlierClock = &balancer.OutlierClock{}
	tp := startProxy(t, cl, resilience()...)
	c := tp.client()
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodPut, "http://greeter/", strings.NewReader("payload"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := tp.rec.last(t)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s (flags %v)", i, resp.StatusCode, b, got.Flags)
		}
		if got.Retries > 0 && (len(got.Tried) != 2 || got.Tried[0] == got.Tried[1]) {
			t.Errorf("request %d retried on %v, want two different endpoints", i, got.Tried)
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

	cl := upstreams(t, &interceptor.Policy{Timeout: 100 * time.Millisecond}, hang)
	tp := startProxy(t, cl, resilience()...)
	for _, c := range []*http.Client{tp.client(), tp.h2client()} {
		start := time.Now()
		resp, err := c.Get("http://greeter/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := tp.rec.last(t)
		if resp.StatusCode != http.StatusGatewayTimeout || got.Flags != interceptor.FlagUpstreamTimeout || time.Since(start) > 5*time.Second {
			t.Errorf("%s route timeout: %d flags %v after %v; want 504 UT after about 100ms", resp.Proto, resp.StatusCode, got.Flags, time.Since(start))
		}
	}

	cl = upstreams(t, &interceptor.Policy{Timeout: 5 * time.Second, Retry: &interceptor.RetryPolicy{
		Attempts: 1, On: interceptor.ParseRetryOn("5xx"), PerTryTimeout: 100 * time.Millisecond, BackoffBase: time.Millisecond}}, hang, ok)
	tp = startProxy(t, cl, resilience()...)
	for _, c := range []*http.Client{tp.client(), tp.h2client()} {
		for i := range 4 {
			resp, err := c.Get("http://greeter/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := tp.rec.last(t)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s request %d with a per-try timeout: %d flags %v; want 200 within the route timeout", resp.Proto, i, resp.StatusCode, got.Flags)
			}
		}
	}

	// A gRPC deadline is passed on, shortened by the time spent.
	var sent string
	seen := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = r.Header.Get("Grpc-Timeout")
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "0")
	})
	tp = startProxy(t, upstreams(t, nil, seen), resilience()...)
	req, _ := http.NewRequest(http.MethodPost, "http://greeter/greeter.Greeter/SayHello", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Grpc-Timeout", "1S")
	resp, err := tp.h2client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d, ok2 := interceptor.ParseGRPCTimeout(sent)
	if resp.StatusCode != 200 || !ok2 || d >= time.Second || d < 500*time.Millisecond {
		t.Errorf("upstream got grpc-timeout %q (status %d), want a little under 1S", sent, resp.StatusCode)
	}
}

// deadAddr returns a loopback address that refuses connections for the
// whole test: a port bound by a socket that does not listen. (A closed
// listener's port goes back to the pool, and under a parallel test run
// another test's server got it.)
func deadAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
}

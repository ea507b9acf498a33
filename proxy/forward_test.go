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
		}
		rec := httptest.NewRecorder()
		got := route(p, rec, req, dead, nil)
		if got.ex.Flags != interceptor.FlagUpstreamConnectFailure {
			t.Errorf("response flags %v, want UF", got.ex.Flags)
		}
		switch {
		case grpc && (rec.Code != http.StatusOK || rec.Header().Get("Grpc-Status") != "14"):
			t.Errorf("gRPC to a dead endpoint: got %d grpc-status %q, want 200 with grpc-status 14", rec.Code, rec.Header().Get("Grpc-Status"))
		case !grpc && rec.Code != http.StatusBadGateway:
			t.Errorf("HTTP to a dead endpoint: got %d, want 502", rec.Code)
		}
	}
}

package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// countingListener counts the bytes its connections read: what reached
// the upstream.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// TestSmuggling sends what request smuggling and bad input are made of
// over raw connections: each is refused with its status before anything
// reaches the upstream, and a good request on a fresh connection works
// after it.
func TestSmuggling(t *testing.T) {
	var got atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	up.Listener = countingListener{up.Listener, &got}
	up.Start()
	t.Cleanup(up.Close)
	eps := []*balancer.Endpoint{{Addr: netip.MustParseAddrPort(up.Listener.Addr().String()), Stats: &balancer.Stats{}, Healthy: true}}
	picker, _ := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	cl := &Cluster{Name: "test", Host: "greeter", Endpoints: eps, Picker: picker, Resilience: &interceptor.Policy{State: &interceptor.PolicyState{}}}
	tp := startProxy(t, cl)
	big := "GET / HTTP/1.1\r\nHost: greeter\r\nX-Big: " + strings.Repeat("a", 61<<10) + "\r\n\r\n"
	for _, c := range []struct {
		name, req string
		status    int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: greeter\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
		{"two different CL", "POST / HTTP/1.1\r\nHost: greeter\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: greeter\r\nContent-Length: 4, 5\r\n\r\nabcde", 400},
		{"CL not a number", "POST / HTTP/1.1\r\nHost: greeter\r\nContent-Length: 4a\r\n\r\nabcd", 400},
		{"CL negative", "POST / HTTP/1.1\r\nHost: greeter\r\nContent-Length: -4\r\n\r\nabcd", 400},
		{"CL overflow", "POST / HTTP/1.1\r\nHost: greeter\r\nContent-Length: 99999999999999999999\r\n\r\nabcd", 400},
		{"TE last not chunked", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501}, // as net/http: a coding it does not implement
		{"TE gzip chunked", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},     // as net/http: a coding it does not implement
		{"TE identity", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: identity\r\n\r\n", 501},                       // as net/http: a coding it does not implement
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400},
		{"chunk size not hex", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n", 400},
		{"chunk without CRLF", "POST / HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy0\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: greeter\r\nX-A: 1\r\n  folded\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: greeter\r\nX-A : 1\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: greeter\r\nX-A: a\x00b\r\n\r\n", 400},
		{"control in name", "GET / HTTP/1.1\r\nHost: greeter\r\nX\x01A: 1\r\n\r\n", 400},
		{"bare CR", "GET / HTTP/1.1\r\nHost: greeter\r\nX-A: a\rb\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: greeter\n\n", 400},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad version", "GET / HTTP/1.2\r\nHost: greeter\r\n\r\n", 400},
		{"head over the limit", big, 431},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := got.Load()
			resp, _ := tp.raw(t, c.req)
			if resp.StatusCode != c.status {
				t.Errorf("got %d, want %d", resp.StatusCode, c.status)
			}
			if n := got.Load() - before; n != 0 {
				t.Errorf("%d bytes reached the upstream, want none", n)
			}
			resp, body := tp.raw(t, "GET / HTTP/1.1\r\nHost: greeter\r\n\r\n")
			if resp.StatusCode != 200 || body != "ok" {
				t.Errorf("the next request on a fresh connection: got %d %q, want 200 ok", resp.StatusCode, body)
			}
		})
	}
}

// TestSlowHead: a client that sends half a head and stops gets 408 after
// the header timeout, and its connection is closed.
func TestSlowHead(t *testing.T) {
	tp := startProxy(t, upstreams(t, nil, http.NotFoundHandler()))
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: gree")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 408 ") {
		t.Errorf("got %q, want a 408", b)
	}
	if d := time.Since(start); d < time.Second || d > 20*time.Second {
		t.Errorf("answered after %v, want after the 2 s header timeout", d)
	}
}

// TestConnectionCannotUnframe: a Connection header naming Content-Length
// must not strip the length from what is forwarded; the body stays a
// body (it was a second request the upstream ran, past every check, and
// its answer went to the next client).
func TestConnectionCannotUnframe(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		fmt.Fprintf(w, "%s got %d bytes", r.URL.Path, len(b))
	}))
	tp := startProxy(t, cl)
	inner := "GET /admin HTTP/1.1\r\nHost: greeter\r\n\r\n"
	resp, body := tp.raw(t, fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: greeter\r\nConnection: Content-Length\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner))
	if resp.StatusCode != 200 || body != fmt.Sprintf("/ok got %d bytes", len(inner)) {
		t.Errorf("got %d %q, want the POST answered with its whole body", resp.StatusCode, body)
	}
	_, body = tp.raw(t, "GET /victim HTTP/1.1\r\nHost: greeter\r\n\r\n")
	if body != "/victim got 0 bytes" {
		t.Errorf("the next client got %q, want its own answer", body)
	}
	mu.Lock()
	defer mu.Unlock()
	if d := cmp.Diff([]string{"/ok", "/victim"}, paths); d != "" {
		t.Errorf("requests the upstream ran (-want +got):\n%s", d)
	}
}

// TestUnrequestedSwitch: a 101 to a request that asked for no upgrade is
// a bad response (502 UPE), not a tunnel past every later check.
func TestUnrequestedSwitch(t *testing.T) {
	up, _ := scriptedUpstream(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n")
	eps := []*balancer.Endpoint{{Addr: up, Stats: &balancer.Stats{}, Healthy: true}}
	picker, _ := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	tp := startProxy(t, &Cluster{Name: "test", Host: "greeter", Endpoints: eps, Picker: picker,
		Resilience: &interceptor.Policy{State: &interceptor.PolicyState{}}})
	resp, _ := tp.raw(t, "GET / HTTP/1.1\r\nHost: greeter\r\n\r\n")
	if got := tp.rec.last(t); resp.StatusCode != http.StatusBadGateway || got.Flags&interceptor.FlagUpstreamProtocolError == 0 {
		t.Errorf("got %d flags %v, want 502 UPE", resp.StatusCode, got.Flags)
	}
}

// TestStaleBytesNotReused: bytes an upstream sends after a bodiless
// answer make its connection unusable; the next request goes on a fresh
// one and gets its own answer.
func TestStaleBytesNotReused(t *testing.T) {
	up, _ := scriptedUpstream(t, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
	eps := []*balancer.Endpoint{{Addr: up, Stats: &balancer.Stats{}, Healthy: true}}
	picker, _ := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	tp := startProxy(t, &Cluster{Name: "test", Host: "greeter", Endpoints: eps, Picker: picker,
		Resilience: &interceptor.Policy{State: &interceptor.PolicyState{}}})
	c := tp.client()
	for i := range 3 {
		resp, err := c.Get("http://greeter/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("request %d: got %d, want 204 (not the stale 200)", i, resp.StatusCode)
		}
	}
}

// TestStalledUpstream: with no route timeout, an upstream that stops
// mid-answer is given up on after the idle timeout (head: 504 UT; body:
// the response is cut, UC), not waited for until drain.
func TestStalledUpstream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
		}
		<-release
	}))
	tp := startProxy(t, cl)
	tp.p.opts.IdleTimeout = 300 * time.Millisecond
	start := time.Now()
	resp, _ := tp.raw(t, "GET /head HTTP/1.1\r\nHost: greeter\r\n\r\n")
	if got := tp.rec.last(t); resp.StatusCode != http.StatusGatewayTimeout || got.Flags&interceptor.FlagUpstreamTimeout == 0 || time.Since(start) > 5*time.Second {
		t.Errorf("silent upstream: %d flags %v after %v, want 504 UT after the 300 ms idle timeout", resp.StatusCode, got.Flags, time.Since(start))
	}
	start = time.Now()
	r, err := tp.client().Get("http://greeter/body")
	if err == nil {
		_, err = io.ReadAll(r.Body)
		r.Body.Close()
	}
	if got := tp.rec.last(t); err == nil || got.Flags&interceptor.FlagUpstreamReset == 0 || time.Since(start) > 5*time.Second {
		t.Errorf("stalled body: err %v flags %v after %v, want it cut (UC) after the idle timeout", err, got.Flags, time.Since(start))
	}
}

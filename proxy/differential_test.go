package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// The differential test: each request goes once through tender's engine
// and once through Go's httputil.ReverseProxy to an upstream that answers
// with a scripted raw response; what the upstream receives and what the
// client receives must match, after the documented differences:
//   - tender adds X-Tender-Peer to outbound requests (its peer header);
//   - net/http's server adds Date, and a Content-Type it sniffs, to
//     responses without one, and may re-frame a body (chunked ↔ length);
//     tender passes the upstream's framing and fields through as they are;
//   - request trailers: ReverseProxy names them but loses their values,
//     tender passes them on (the names are compared);
//   - the body of a close-delimited answer is compared, not its framing.

// seen is what one side of a proxied exchange saw.
type seen struct {
	Method, URI, Proto string
	Header             http.Header
	Body               string
	Trailer            http.Header
	Status             int
}

// scriptedUpstream accepts connections and answers each request with resp
// (raw bytes), reporting what it received.
func scriptedUpstream(tb testing.TB, resp string) (netip.AddrPort, <-chan seen) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ch := make(chan seen, 16)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if r.Header.Get("Expect") == "100-continue" {
						io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
					}
					b, _ := io.ReadAll(r.Body)
					ch <- seen{Method: r.Method, URI: r.RequestURI, Proto: r.Proto, Header: r.Header, Body: string(b), Trailer: r.Trailer}
					if _, err := io.WriteString(c, resp); err != nil {
						return
					}
					if strings.Contains(resp, "Connection: close") || !strings.Contains(resp, "Content-Length") && !strings.Contains(resp, "chunked") {
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(lis.Addr().String()), ch
}

// viaReverseProxy serves the reference: httputil.ReverseProxy to up.
func viaReverseProxy(tb testing.TB, up netip.AddrPort) string {
	tb.Helper()
	tr := &http.Transport{DisableCompression: true}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host = "http", up.String()
		pr.Out.Host = pr.In.Host
	}, Transport: tr}
	s := httptest.NewServer(rp)
	tb.Cleanup(func() { s.Close(); tr.CloseIdleConnections() })
	return strings.TrimPrefix(s.URL, "http://")
}

// viaTender serves the same through the engine.
func viaTender(t *testing.T, up netip.AddrPort) string {
	t.Helper()
	eps := []*balancer.Endpoint{{Addr: up, Stats: &balancer.Stats{}, Healthy: true}}
	picker, _ := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	cl := &Cluster{Name: "test", Host: "greeter", Endpoints: eps, Picker: picker,
		Resilience: &interceptor.Policy{State: &interceptor.PolicyState{}}}
	return startProxy(t, cl).addr
}

// exchange sends req on a fresh connection to addr and reads the answer,
// waiting at most wait.
func exchange(tb testing.TB, addr, req, method string, wait time.Duration) (seen, error) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, req); err != nil {
		return seen{}, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	for err == nil && resp.StatusCode == http.StatusContinue {
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
	}
	if err != nil {
		return seen{}, err
	}
	b, err := io.ReadAll(resp.Body)
	return seen{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Trailer: resp.Trailer}, err
}

// comparable drops the documented differences.
func comparable(s seen, response bool) seen {
	h := s.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Del(interceptor.PeerHeader)
	if !response {
		// ReverseProxy sends the target re-encoded from its parsed URL,
		// tender as the client sent it: compare them decoded.
		if u, err := url.PathUnescape(s.URI); err == nil {
			s.URI = u
		}
	}
	if !response && h.Get("Content-Length") == "0" {
		h.Del("Content-Length") // net/http's transport leaves out a zero length; tender passes it
	}
	if response {
		h.Del("Date")
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		if s.Status < 200 || s.Status == 204 || s.Status == 304 || h.Get("Content-Type") == "text/plain; charset=utf-8" {
			h.Del("Content-Type")
		}
		h.Del("Connection")
	}
	s.Header = h
	if len(s.Trailer) == 0 {
		s.Trailer = nil
	}
	if !response && s.Trailer != nil {
		// ReverseProxy announces request trailers but loses their
		// values; tender passes them on. Compare the names.
		names := http.Header{}
		for k := range s.Trailer {
			names[k] = nil
		}
		s.Trailer = names
	}
	return s
}

var differentialCases = []struct {
	name, req, resp string
}{
	{"GET", "GET /greet?name=a%20b HTTP/1.1\r\nHost: greeter\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Resp: 1\r\n\r\nhello"},
	{"POST with length", "POST /p HTTP/1.1\r\nHost: greeter\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
		"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"},
	{"chunked both ways with trailers", "POST /c HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Check\r\n\r\n4\r\nbody\r\n0\r\nX-Check: ok\r\n\r\n"},
	{"close-delimited response", "GET /stream HTTP/1.1\r\nHost: greeter\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"},
	{"HEAD", "HEAD /h HTTP/1.1\r\nHost: greeter\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"},
	{"204", "DELETE /d HTTP/1.1\r\nHost: greeter\r\n\r\n", "HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n"},
	{"304", "GET /cached HTTP/1.1\r\nHost: greeter\r\nIf-None-Match: \"x\"\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n"},
	{"hop-by-hop fields", "GET /hop HTTP/1.1\r\nHost: greeter\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"},
	{"repeated fields keep their order", "GET /r HTTP/1.1\r\nHost: greeter\r\nX-Multi: 1\r\nX-Other: a\r\nX-Multi: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"},
	{"Expect 100-continue", "PUT /e HTTP/1.1\r\nHost: greeter\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
	{"HTTP/1.0 client", "GET /old HTTP/1.0\r\nHost: greeter\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nold"},
	{"upstream 500", "GET /fail HTTP/1.1\r\nHost: greeter\r\n\r\n", "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nboom"},
	{"large body", "POST /big HTTP/1.1\r\nHost: greeter\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("b", 100000),
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("r", 200000)},
}

func TestDifferentialReverseProxy(t *testing.T) {
	for _, c := range differentialCases {
		t.Run(c.name, func(t *testing.T) {
			differential(t, c.req, c.resp, 10*time.Second)
		})
	}
}

// differential runs req through both proxies and compares, waiting at
// most wait for each answer.
func differential(t *testing.T, req, resp string, wait time.Duration) {
	t.Helper()
	method, _, _ := strings.Cut(req, " ")
	var got [2]struct {
		up     seen
		upOK   bool
		client seen
		err    error
	}
	for i, via := range []func(*testing.T, netip.AddrPort) string{viaReverseProxy2, viaTender} {
		up, ch := scriptedUpstream(t, resp)
		addr := via(t, up)
		got[i].client, got[i].err = exchange(t, addr, req, method, wait)
		select {
		case got[i].up = <-ch:
			got[i].upOK = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	ref, ten := got[0], got[1]
	if ten.err == nil && !ten.upOK && (ten.client.Status == http.StatusBadRequest || ten.client.Status == http.StatusNotImplemented) && stricter(req) {
		// tender refuses on purpose what net/http takes, or waits on
		// for more (a chunked body whose trailers never end, where a
		// Content-Length beside it said the body was complete).
		return
	}
	if (ref.err != nil) != (ten.err != nil) {
		t.Fatalf("ReverseProxy: err %v; tender: err %v", ref.err, ten.err)
	}
	if !ref.upOK && !ten.upOK && ref.client.Status >= 400 && ref.client.Status == ten.client.Status {
		return // both refused it, each in its own words
	}
	if ref.upOK != ten.upOK {
		t.Fatalf("reached the upstream: ReverseProxy %v, tender %v (reference answered %d, tender %d)", ref.upOK, ten.upOK, ref.client.Status, ten.client.Status)
	}
	if ref.upOK {
		ru, tu := comparable(ref.up, false), comparable(ten.up, false)
		// ReverseProxy sends every request as HTTP/1.1 and adds
		// Accept-Encoding only when the client did (it does not here).
		ru.Proto, tu.Proto = "", ""
		if d := cmp.Diff(ru, tu); d != "" {
			t.Errorf("what the upstream received (-ReverseProxy +tender):\n%s", d)
		}
	}
	if ref.err == nil {
		if d := cmp.Diff(comparable(ref.client, true), comparable(ten.client, true)); d != "" {
			t.Errorf("what the client received (-ReverseProxy +tender):\n%s", d)
		}
	}
}

// stricter reports whether req is one tender refuses on purpose while
// net/http takes it: Transfer-Encoding together with Content-Length
// (net/http lets the first win; tender refuses, as request smuggling
// defences do), a Transfer-Encoding other than chunked, and a fragment in
// the request target (RFC 9112 §3.2.1: origin-form is a path and a query;
// net/http drops what follows '#').
func stricter(req string) bool {
	head, _, _ := strings.Cut(strings.ToLower(req), "\r\n\r\n")
	line, _, _ := strings.Cut(head, "\r\n")
	return strings.Contains(head, "\r\ntransfer-encoding:") || strings.Contains(line, "#")
}

func viaReverseProxy2(t *testing.T, up netip.AddrPort) string {
	t.Helper()
	return viaReverseProxy(t, up)
}

// FuzzDifferential builds requests from fuzzed parts: whatever net/http's
// server refuses, tender refuses; what both take, both forward alike.
func FuzzDifferential(f *testing.F) {
	f.Add(uint8(0), "/a?b=c", "X-A", "1", "")
	f.Add(uint8(1), "/p", "Content-Type", "text/plain", "body")
	f.Add(uint8(0), "/%2e%2e/x", "X-B", "a b", "")
	f.Add(uint8(2), "/u", "Transfer-Encoding", "chunked", "0\r\n\r\n")
	// The methods sniffing takes for HTTP (others are opaque TCP).
	methods := []string{"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "TRACE"}
	f.Fuzz(func(t *testing.T, m uint8, target, name, value, body string) {
		method := methods[int(m)%len(methods)]
		if len(method)+len(target)+len(name)+len(value)+len(body) > 4096 {
			return
		}
		req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: greeter\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s", method, target, name, value, len(body), body)
		if !strings.HasPrefix(target, "/") {
			return // origin form only: tender takes the other forms only with the method they belong to (wire's doc)
		}
		if bytes.ContainsAny([]byte(target), " \r\n") || strings.ContainsAny(name+value, "\r\n") {
			return // another request line or field: not one field's content
		}
		// A shorter wait than the fixed cases: a request both sides
		// wait on for more bytes would hold the fuzzer 20 s per input.
		differential(t, req, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", 3*time.Second)
	})
}

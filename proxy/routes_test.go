package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/xds"
)

// namedUpstream answers every request with its name, the path and
// authority it got, and the x-route header, and sets x-upstream and
// server on the response.
func namedUpstream(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "upstream")
		w.Header().Set("X-Upstream", name)
		io.Copy(io.Discard, r.Body) //nolint:errcheck // a test upstream
		fmt.Fprintf(w, "%s %s %s %s", name, r.URL.RequestURI(), r.Host, r.Header.Get("X-Route"))
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// routedProxy translates mesh (a mesh.yaml with routes) as the control
// plane does, builds the sidecar's table from it and serves outbound,
// every connection sent to vip.
func routedProxy(t *testing.T, mesh string, vip netip.AddrPort, mws ...interceptor.Middleware) *testProxy {
	t.Helper()
	cfg, err := file.Parse("mesh.yaml", strings.NewReader(mesh))
	if err != nil {
		t.Fatal(err)
	}
	res, status, err := xds.TranslateRoutes(cfg.Static, cfg.Routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range status {
		for _, ps := range st.Parents {
			if !ps.Accepted.OK {
				t.Logf("route %s: %s", st.Key(), ps.Accepted.Message)
			}
		}
	}
	xc := configOf(res)
	table, err := BuildTable(xc, nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	cl := table.ByVIP[vip]
	if cl == nil {
		t.Fatalf("no cluster for %s", vip)
	}
	tp := startProxy(t, nil, mws...)
	table.ByVIP[testVIP] = cl
	tp.p.SetTable(table)
	return tp
}

func endpointYAML(addr string) string {
	ap := netip.MustParseAddrPort(addr)
	return fmt.Sprintf("[{address: %s, port: %d}]", ap.Addr(), ap.Port())
}

func routesMesh(t *testing.T) string {
	t.Helper()
	v1, v2, api := namedUpstream(t, "v1"), namedUpstream(t, "v2"), namedUpstream(t, "api")
	return `
services:
  - name: web
    vip: 10.96.0.10
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: ` + endpointYAML(v1) + `
  - name: web-v2
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: ` + endpointYAML(v2) + `
  - name: api
    ports: [{name: http, port: 8000, protocol: HTTP}]
    endpoints: ` + endpointYAML(api) + `
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web}
    spec:
      parentRefs: [{group: "", kind: Service, name: web, port: 80}]
      rules:
        - matches: [{headers: [{name: x-canary, value: "true"}]}]
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-route, value: canary}]}
            - type: ResponseHeaderModifier
              responseHeaderModifier: {add: [{name: x-canary-seen, value: "yes"}], remove: [server]}
          backendRefs: [{name: web-v2, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}}]
          filters:
            - type: URLRewrite
              urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}
          backendRefs: [{name: api, port: 8000}]
        - matches: [{path: {type: Exact, value: /old}}]
          filters:
            - type: RequestRedirect
              requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}
        - matches: [{path: {type: Exact, value: /broken}}]
          backendRefs: [{name: missing, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /}, queryParams: [{name: only, value: v1}]}]
          backendRefs: [{name: web, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /split}}]
          backendRefs: [{name: web, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
`
}

// TestRoutesHTTP follows a Gateway API HTTPRoute through the sidecar,
// over HTTP/1.1 and h2c: header match, weights, prefix rewrite, redirect,
// header edits both ways, a missing backend and no match.
func TestRoutesHTTP(t *testing.T) {
	tp := routedProxy(t, routesMesh(t), netip.MustParseAddrPort("10.96.0.10:80"))
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			c := tp.client()
			if proto == "h2c" {
				c = tp.h2client()
			}
			get := func(path string, hdr ...string) (*http.Response, string) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, "http://web.default.svc.cluster.local"+path, nil)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp, string(b)
			}

			// The canary header reaches v2 only, with the header set and
			// the response edited. (On /split it would not: a longer
			// path prefix ranks before a header match.)
			for range 20 {
				resp, body := get("/x", "x-canary", "true")
				if !strings.HasPrefix(body, "v2 /x ") || !strings.HasSuffix(body, " canary") {
					t.Fatalf("canary request: %q", body)
				}
				if resp.Header.Get("X-Canary-Seen") != "yes" || resp.Header.Get("Server") != "" {
					t.Fatalf("canary response headers: %v", resp.Header)
				}
			}
			// 90/10 over 2,000 requests: v2 gets 10% ± 2%.
			v2 := 0
			const n = 2000
			for range n {
				_, body := get("/split/y")
				switch {
				case strings.HasPrefix(body, "v2 "):
					v2++
				case !strings.HasPrefix(body, "v1 "):
					t.Fatalf("split request: %q", body)
				}
			}
			if share := float64(v2) / n; share < 0.08 || share > 0.12 {
				t.Errorf("v2 got %.1f%% of the split, want 10%% ± 2%%", share*100)
			}
			// /api/... goes to api, rewritten to /v1/... with its host.
			if _, body := get("/api/users?id=1"); body != "api /v1/users?id=1 api.internal " {
				t.Errorf("prefix rewrite: %q", body)
			}
			if _, body := get("/apis"); strings.HasPrefix(body, "api ") {
				t.Errorf("/apis matched the /api prefix: %q", body)
			}
			// The redirect answers itself.
			c2 := *c
			c2.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			req, _ := http.NewRequest(http.MethodGet, "http://web.default.svc.cluster.local/old?q=1", nil)
			resp, err := c2.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "http://web.default.svc.cluster.local/new?q=1" {
				t.Errorf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			// A backend that does not resolve: 500; a request no rule
			// matches: 404.
			if resp, _ := get("/broken"); resp.StatusCode != http.StatusInternalServerError {
				t.Errorf("missing backend: %d, want 500", resp.StatusCode)
			}
			if resp, body := get("/elsewhere"); resp.StatusCode != http.StatusNotFound {
				t.Errorf("no match: %d %q, want 404", resp.StatusCode, body)
			}
			// Query parameter match.
			if _, body := get("/elsewhere?only=v1"); !strings.HasPrefix(body, "v1 ") {
				t.Errorf("query match: %q", body)
			}
		})
	}
}

// TestRoutesReplaceTable checks that routes follow a new table at once:
// weights moved to 0/100 send nothing to the old backend.
func TestRoutesReplaceTable(t *testing.T) {
	mesh := routesMesh(t)
	tp := routedProxy(t, mesh, netip.MustParseAddrPort("10.96.0.10:80"))
	moved := strings.Replace(mesh, "{name: web, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}",
		"{name: web, port: 80, weight: 0}, {name: web-v2, port: 80, weight: 100}", 1)
	tp2 := routedProxy(t, moved, netip.MustParseAddrPort("10.96.0.10:80"))
	tp.p.SetTable(tp2.p.table.Load())
	c := tp.client()
	for range 50 {
		resp, err := c.Get("http://web/split")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), "v2 ") {
			t.Fatalf("after the move: %q", b)
		}
	}
}

// BenchmarkRouteMatch is the cost of evaluating a service's routes: 20
// rules (35 Envoy routes), the request matching the last.
func BenchmarkRouteMatch(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`
services:
  - name: web
    vip: 10.96.0.10
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: [{address: 10.0.0.1, port: 8080}]
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web}
    spec:
      parentRefs: [{group: "", kind: Service, name: web, port: 80}]
      rules:
`)
	for i := range 15 {
		if i == 10 { // at most 16 rules a route: a second route
			sb.WriteString(`  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web2}
    spec:
      parentRefs: [{group: "", kind: Service, name: web, port: 80}]
      rules:
`)
		}
		fmt.Fprintf(&sb, "        - matches: [{path: {type: PathPrefix, value: /svc%d}, headers: [{name: x-tenant, value: t%d}]}]\n          backendRefs: [{name: web, port: 80}]\n", i, i)
	}
	for i := range 4 {
		fmt.Fprintf(&sb, "        - matches: [{path: {type: RegularExpression, value: \"/re%d/[a-z]+\"}}]\n          backendRefs: [{name: web, port: 80}]\n", i)
	}
	sb.WriteString("        - backendRefs: [{name: web, port: 80, weight: 90}, {name: web, port: 80, weight: 10}]\n")
	cfg, err := file.Parse("mesh.yaml", strings.NewReader(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	res, _, err := xds.TranslateRoutes(cfg.Static, cfg.Routes, nil)
	if err != nil {
		b.Fatal(err)
	}
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	cl := &Cluster{Name: "outbound|80||web.default.svc.cluster.local"}
	rt, refused := compileRoutes(rc, cl, map[string]*Cluster{cl.Name: cl}, newRegexCompiler(nil))
	if refused != nil {
		b.Fatal(refused)
	}
	// 15 prefix rules are 30 Envoy routes (the path and the path/
	// prefix), 4 regular expressions and the split one each.
	if len(rt.routes) != 35 {
		b.Fatalf("%d routes, want 35", len(rt.routes))
	}
	q := &fakeRoutable{path: "/other/path", headers: map[string]string{"x-tenant": "t99", "user-agent": "bench"}}
	b.ReportAllocs()
	for b.Loop() {
		e := rt.match(q, q.path, "a=1")
		if e == nil || e.pick().cl != cl {
			b.Fatal("no match")
		}
	}
}

type fakeRoutable struct {
	path    string
	headers map[string]string
}

func (f *fakeRoutable) Method() string            { return http.MethodGet }
func (f *fakeRoutable) Authority() string         { return "web" }
func (f *fakeRoutable) Path() string              { return f.path }
func (f *fakeRoutable) Proto() string             { return "HTTP/1.1" }
func (f *fakeRoutable) Header(name string) string { return f.headers[strings.ToLower(name)] }
func (f *fakeRoutable) HasHeader(name string) bool {
	_, ok := f.headers[strings.ToLower(name)]
	return ok
}
func (f *fakeRoutable) SetHeader(name, value string) {
	f.headers[strings.ToLower(name)] = value
}
func (f *fakeRoutable) AddHeader(name, value string) { f.SetHeader(name, value) }
func (f *fakeRoutable) DelHeader(name string)        { delete(f.headers, strings.ToLower(name)) }
func (f *fakeRoutable) SetPath(p string)             { f.path = p }
func (f *fakeRoutable) SetAuthority(string)          {}
func (f *fakeRoutable) Query() string                { return "" }

// TestRoutesMirror: a mirror gets a copy of each request (body and
// edited head, host marked -shadow) while the client gets the primary's
// answer at once, even when the mirror is slow.
func TestRoutesMirror(t *testing.T) {
	v1 := namedUpstream(t, "v1")
	got := make(chan string, 100)
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + " " + r.Host + " " + string(b)
		time.Sleep(3 * time.Second) // slow: the client must not wait for it
	}))
	t.Cleanup(shadow.Close)
	mesh := `
services:
  - name: web
    vip: 10.96.0.10
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: ` + endpointYAML(v1) + `
  - name: shadow
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: ` + endpointYAML(strings.TrimPrefix(shadow.URL, "http://")) + `
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web}
    spec:
      parentRefs: [{group: "", kind: Service, name: web, port: 80}]
      rules:
        - filters:
            - type: RequestMirror
              requestMirror: {backendRef: {name: shadow, port: 80}}
          backendRefs: [{name: web, port: 80}]
`
	tp := routedProxy(t, mesh, netip.MustParseAddrPort("10.96.0.10:80"))
	c := tp.client()
	for i := range 5 {
		start := time.Now()
		resp, err := c.Post("http://web:80/orders", "text/plain", strings.NewReader(fmt.Sprintf("order %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), "v1 /orders ") {
			t.Fatalf("primary answer: %q", b)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the client waited %v: the slow mirror held it", d)
		}
		select {
		case m := <-got:
			if want := fmt.Sprintf("POST /orders web-shadow:80 order %d", i); m != want {
				t.Fatalf("mirror got %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the mirror got no copy")
		}
	}
	if n := tp.p.Stats.Mirrored.Load(); n != 5 {
		t.Errorf("Mirrored = %d, want 5", n)
	}
}

// TestRoutesTimeoutAndRetry: a rule's timeouts and retry (GEP-1294,
// GEP-1731) apply to the requests it matches, and only to them.
func TestRoutesTimeoutAndRetry(t *testing.T) {
	var calls atomic.Int64
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/slow":
			time.Sleep(1500 * time.Millisecond)
		case calls.Add(1)%3 != 0: // two 503s, then an answer
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok") //nolint:errcheck // a test upstream
	}))
	t.Cleanup(flaky.Close)
	mesh := `
services:
  - name: web
    vip: 10.96.0.10
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: ` + endpointYAML(strings.TrimPrefix(flaky.URL, "http://")) + `
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web}
    spec:
      parentRefs: [{group: "", kind: Service, name: web, port: 80}]
      rules:
        - matches: [{path: {type: Exact, value: /slow}}]
          timeouts: {request: 300ms}
          backendRefs: [{name: web, port: 80}]
        - matches: [{path: {type: Exact, value: /retried}}]
          retry: {codes: [503], attempts: 2, backoff: 1ms}
          backendRefs: [{name: web, port: 80}]
        - backendRefs: [{name: web, port: 80}]
`
	tp := routedProxy(t, mesh, netip.MustParseAddrPort("10.96.0.10:80"), resilience()...)
	c := tp.client()
	start := time.Now()
	resp, err := c.Get("http://web/slow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 1200*time.Millisecond {
		t.Errorf("/slow with a 300ms request timeout: %d after %v, want 504 at once", resp.StatusCode, time.Since(start))
	}
	calls.Store(0)
	resp, err = c.Get("http://web/retried")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || calls.Load() != 3 {
		t.Errorf("/retried: %d after %d tries, want 200 after 3", resp.StatusCode, calls.Load())
	}
	calls.Store(0)
	resp, err = c.Get("http://web/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || calls.Load() != 1 {
		t.Errorf("/other (no retry rule): %d after %d tries, want 503 after 1", resp.StatusCode, calls.Load())
	}
}

// TestRoutesRefusedOneByOne: a route the sidecar cannot follow (a header
// value that would split the head, a rewrite to a path with CRLF, a
// regular expression over the budget) costs that route only: the table
// builds, the others serve, it answers 500 or matches nothing, and
// Refused says why.
func TestRoutesRefusedOneByOne(t *testing.T) {
	own := &Cluster{Name: "outbound|80||web.default.svc.cluster.local"}
	clusters := map[string]*Cluster{own.Name: own}
	fwd := &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: own.Name}}}
	exact := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}}
	}
	huge := strings.Repeat(".{1000}", 2)
	rc := &routev3.RouteConfiguration{Name: "web", VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{
		{Name: "split-head", Match: exact("/a"), Action: fwd, RequestHeadersToAdd: []*corev3.HeaderValueOption{{
			Header: &corev3.HeaderValue{Key: "x", Value: "1\r\nContent-Length: 0"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}},
		{Name: "crlf-rewrite", Match: exact("/b"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: own.Name},
			RegexRewrite:     &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: ".*"}, Substitution: "/x HTTP/1.1\r\nHost: y\r\n\r\nGET /z"}}}},
		{Name: "huge-regex", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: huge}}}, Action: fwd},
		{Name: "fine", Match: exact("/c"), Action: fwd},
	}}}}
	rt, refused := compileRoutes(rc, own, clusters, newRegexCompiler(nil))
	if len(refused) != 3 {
		t.Fatalf("refused %d routes, want 3: %v", len(refused), refused)
	}
	q := &fakeRoutable{headers: map[string]string{}}
	for path, want := range map[string]int{"/a": 500, "/b": 500, "/c": 0} {
		e := rt.match(q, path, "")
		switch {
		case e == nil:
			t.Errorf("%s matched nothing", path)
		case want == 500 && (e.reply == nil || e.reply.Status != 500):
			t.Errorf("%s: %+v, want a 500", path, e.reply)
		case want == 0 && (e.reply != nil || e.pick().cl != own):
			t.Errorf("%s: the good route does not forward", path)
		}
	}
	if e := rt.match(q, "/"+strings.Repeat("x", 2000), ""); e != nil {
		t.Errorf("the over-budget regular expression matched: %s", e.name)
	}
}

// TestRegexBudget: a route configuration's regular expressions together
// are bounded (many each under the limit), and an unchanged one is not
// compiled again on the next push.
func TestRegexBudget(t *testing.T) {
	own := &Cluster{Name: "outbound|80||web.default.svc.cluster.local"}
	var routes []*routev3.Route
	for i := range 40 {
		routes = append(routes, &routev3.Route{Name: fmt.Sprint(i), Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: fmt.Sprintf("/%d.{1000}.{500}", i)}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: own.Name}}}})
	}
	rc := &routev3.RouteConfiguration{Name: "web", VirtualHosts: []*routev3.VirtualHost{{Routes: routes}}}
	rx := newRegexCompiler(nil)
	rt, refused := compileRoutes(rc, own, map[string]*Cluster{own.Name: own}, rx)
	if len(refused) == 0 || len(rt.routes)+len(refused) != 40 {
		t.Fatalf("%d routes, %d refused: want some refused over the budget", len(rt.routes), len(refused))
	}
	kept := len(rt.routes)
	prev := &Table{regexes: rx.next}
	rx2 := newRegexCompiler(prev)
	rt2, _ := compileRoutes(rc, own, map[string]*Cluster{own.Name: own}, rx2)
	if len(rt2.routes) != kept || rt2.routes[0].path.re != rt.routes[0].path.re {
		t.Error("the next push compiled the same regular expression again")
	}
}

// TestMirrorsBounded: with maxMirrors copies in flight, the next is
// dropped and counted, not queued (a slow mirror costs no memory without
// end); one goes again once a token is back.
func TestMirrorsBounded(t *testing.T) {
	p := New(Options{})
	defer p.Shutdown(t.Context())
	for range maxMirrors {
		p.mirrors <- struct{}{}
	}
	picker, err := balancer.New("ROUND_ROBIN", nil, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	cl := &Cluster{Name: "shadow", Picker: picker} // no endpoint: the copy goes nowhere
	req := []byte("GET / HTTP/1.1\r\n\r\n")
	p.sendMirror(cl, req)
	if d, m := p.Stats.MirrorsDropped.Load(), p.Stats.Mirrored.Load(); d != 1 || m != 0 {
		t.Errorf("with %d in flight: %d dropped, %d sent; want 1 and 0", maxMirrors, d, m)
	}
	<-p.mirrors
	p.sendMirror(cl, req)
	if d, m := p.Stats.MirrorsDropped.Load(), p.Stats.Mirrored.Load(); d != 1 || m != 1 {
		t.Errorf("with a token back: %d dropped, %d sent; want 1 and 1", d, m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(p.mirrors) == maxMirrors && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the copy's goroutine hands its token back
	}
	if len(p.mirrors) == maxMirrors {
		t.Error("the sent copy never gave its token back")
	}
}

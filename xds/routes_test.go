package xds

import (
	"fmt"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/file"
)

// translateRoutes parses a mesh.yaml and translates it, routes marked as
// coming from source.
func translateRoutes(t *testing.T, mesh, source string) (map[string]*routev3.RouteConfiguration, []RouteStatus) {
	t.Helper()
	cfg, err := file.Parse("mesh.yaml", strings.NewReader(mesh))
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Routes {
		cfg.Routes[i].Source = source
	}
	res, status, err := TranslateRoutes(cfg.Static, cfg.Routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*routev3.RouteConfiguration{}
	for _, r := range res[resource.RouteType] {
		rc := r.(*routev3.RouteConfiguration)
		out[rc.GetName()] = rc
	}
	return out, status
}

const twoServices = `services:
  - {name: web, ports: [{name: http, port: 80}]}
  - {name: web-v2, ports: [{name: http, port: 80}]}
`

func httpRoute(rules string) string {
	return twoServices + `routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: r}
    spec:
      parentRefs: [{group: "", kind: Service, name: web}]
      rules:
` + rules
}

// TestRouteValuesRefused: values the sidecar could not follow safely (a
// header value that splits the head, a path with a space, a framing
// header, a regular expression too large as a program) make their rule
// answer 500 and are reported; they never reach the sidecars as they are.
func TestRouteValuesRefused(t *testing.T) {
	big := strings.Repeat(".{1000}", 3)
	for name, rule := range map[string]string{
		"header value with LF":   `        - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: "a\nb"}]}}]` + "\n          backendRefs: [{name: web-v2, port: 80}]\n",
		"Content-Length removed": `        - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [Content-Length]}}]` + "\n          backendRefs: [{name: web-v2, port: 80}]\n",
		"peer header set":        `        - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Tender-Peer, value: x}]}}]` + "\n          backendRefs: [{name: web-v2, port: 80}]\n",
		"redirect path space":    `        - filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: "/a b"}}}]` + "\n",
		"rewrite path CRLF":      `        - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: "/x HTTP/1.1\r\nHost: y"}}}]` + "\n          backendRefs: [{name: web-v2, port: 80}]\n",
		"empty rewrite host":     `        - filters: [{type: URLRewrite, urlRewrite: {hostname: ""}}]` + "\n          backendRefs: [{name: web-v2, port: 80}]\n",
		"regex program too big":  fmt.Sprintf("        - matches: [{path: {type: RegularExpression, value: %q}}]\n          backendRefs: [{name: web-v2, port: 80}]\n", "/"+big),
	} {
		t.Run(name, func(t *testing.T) {
			rcs, status := translateRoutes(t, httpRoute(rule+"        - matches: [{path: {type: PathPrefix, value: /ok}}]\n          backendRefs: [{name: web-v2, port: 80}]\n"), "")
			ps := status[0].Parents[0]
			if ps.PartiallyInvalid == nil || !ps.Accepted.OK {
				t.Fatalf("status: %+v, want Accepted with PartiallyInvalid", ps)
			}
			rc := rcs["web.default.svc.cluster.local:80"]
			for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
				if strings.HasPrefix(r.GetName(), "HTTPRoute/default/r/rule/0/") && r.GetDirectResponse().GetStatus() != 500 {
					t.Errorf("the bad rule is programmed as %v, want a 500", r)
				}
			}
			if !strings.Contains(fmt.Sprint(rc), "/ok") {
				t.Error("the good rule is gone too")
			}
		})
	}
}

// TestHostSetIsAHostRewrite: setting Host is the authority's rewrite, as
// Envoy takes it (it refuses Host among the headers to add).
func TestHostSetIsAHostRewrite(t *testing.T) {
	rcs, _ := translateRoutes(t, httpRoute(`        - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: api.internal}]}}]
          backendRefs: [{name: web-v2, port: 80}]
`), "")
	r := rcs["web.default.svc.cluster.local:80"].GetVirtualHosts()[0].GetRoutes()[0]
	if r.GetRoute().GetHostRewriteLiteral() != "api.internal" || len(r.GetRequestHeadersToAdd()) != 0 {
		t.Errorf("route %v: want host_rewrite_literal api.internal and no header to add", r)
	}
}

// TestRoutesOnlyOwnSource: a route from Kubernetes names only Kubernetes
// services (whoever may write routes in a namespace cannot take over the
// Consul service of the same name); mesh.yaml's routes name any.
func TestRoutesOnlyOwnSource(t *testing.T) {
	cfg, err := file.Parse("mesh.yaml", strings.NewReader(httpRoute("        - backendRefs: [{name: web-v2, port: 80}]\n")))
	if err != nil {
		t.Fatal(err)
	}
	services := cfg.Static
	services[0].Source, services[1].Source = "consul", "kubernetes"
	for _, c := range []struct {
		source string
		ok     bool
	}{{"kubernetes", false}, {"file", true}} {
		routes := []discovery.Route{cfg.Routes[0]}
		routes[0].Source = c.source
		_, status, err := TranslateRoutes(services, routes, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := status[0].Parents[0].Accepted.OK; got != c.ok {
			t.Errorf("a route from %s on a Consul service: accepted %v, want %v (%s)", c.source, got, c.ok, status[0].Parents[0].Accepted.Message)
		}
	}
}

// TestHTTPAndGRPCRoutesNotMerged: the Gateway API does not merge the two
// kinds on one parent: the older route's kind keeps the port.
func TestHTTPAndGRPCRoutesNotMerged(t *testing.T) {
	_, status := translateRoutes(t, twoServices+`routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: a, creationTimestamp: "2026-01-01T00:00:00Z"}
    spec:
      parentRefs: [{group: "", kind: Service, name: web}]
      rules: [{backendRefs: [{name: web-v2, port: 80}]}]
  - apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {name: b, creationTimestamp: "2026-02-01T00:00:00Z"}
    spec:
      parentRefs: [{group: "", kind: Service, name: web}]
      rules: [{backendRefs: [{name: web-v2, port: 80}]}]
`, "")
	for _, st := range status {
		want := st.Kind == discovery.KindHTTPRoute
		if got := st.Parents[0].Accepted.OK; got != want {
			t.Errorf("%s: accepted %v, want %v (%s)", st.Key(), got, want, st.Parents[0].Accepted.Message)
		}
	}
}

// TestRoutesGRPCGoAccepts checks the translation of every kind of rule
// against what grpc-go's RDS parser refuses outright (it drops the whole
// RouteConfiguration): path_separated_prefix, num_retries 0, a zero
// backoff base interval.
func TestRoutesGRPCGoAccepts(t *testing.T) {
	rcs, _ := translateRoutes(t, httpRoute(`        - matches: [{path: {type: PathPrefix, value: /api}}]
          timeouts: {backendRequest: 1s}
          backendRefs: [{name: web-v2, port: 80}]
        - matches: [{path: {type: Exact, value: /x}}]
          retry: {attempts: 0, backoff: 0s}
          backendRefs: [{name: web-v2, port: 80}]
        - matches: [{path: {type: Exact, value: /y}}]
          retry: {attempts: 2, codes: [503], backoff: 0s}
          backendRefs: [{name: web-v2, port: 80}]
`), "")
	for _, rc := range rcs {
		for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
			if r.GetMatch().GetPathSeparatedPrefix() != "" {
				t.Errorf("%s: path_separated_prefix", r.GetName())
			}
			rp := r.GetRoute().GetRetryPolicy()
			if rp == nil {
				continue
			}
			if rp.GetNumRetries() != nil && rp.GetNumRetries().GetValue() < 1 {
				t.Errorf("%s: num_retries %d", r.GetName(), rp.GetNumRetries().GetValue())
			}
			if b := rp.GetRetryBackOff(); b != nil && b.GetBaseInterval().AsDuration() <= 0 {
				t.Errorf("%s: retry base interval %v", r.GetName(), b.GetBaseInterval().AsDuration())
			}
		}
	}
}

// attempts: 0 turns retries off, the sidecar's default retry of connect
// failures included: the route carries a policy that retries on nothing
// (no policy at all would let interceptor.DefaultRetry apply).
func TestRetriesOff(t *testing.T) {
	rcs, _ := translateRoutes(t, httpRoute(`        - matches: [{path: {type: Exact, value: /x}}]
          retry: {attempts: 0}
          backendRefs: [{name: web-v2, port: 80}]
`), "")
	found := false
	for _, rc := range rcs {
		for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
			if r.GetMatch().GetPath() != "/x" {
				continue
			}
			found = true
			rp := r.GetRoute().GetRetryPolicy()
			if rp == nil || rp.GetRetryOn() != "" || rp.GetNumRetries().GetValue() != 1 {
				t.Errorf("HTTPRoute retry attempts 0: retry policy %v, want num_retries 1 on nothing", rp)
			}
		}
	}
	if !found {
		t.Fatal("no route for /x")
	}
	route := &routev3.Route{Action: &routev3.Route_Route{Route: &routev3.RouteAction{}}}
	if err := setRouteResilience(route, &discovery.Resilience{Retries: &discovery.RetryPolicy{Attempts: 0}}); err != nil {
		t.Fatal(err)
	}
	if rp := route.GetRoute().GetRetryPolicy(); rp == nil || rp.GetRetryOn() != "" || rp.GetNumRetries().GetValue() != 1 {
		t.Errorf("mesh.yaml retries.attempts 0: retry policy %v, want num_retries 1 on nothing", rp)
	}
}

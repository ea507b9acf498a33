package proxy

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/xds"
)

// FuzzRoutes feeds the route compiler route configurations from the wire
// (RDS bytes) and requests to match against what it accepts: it refuses
// what it cannot follow with an error, and never panics, whatever the
// bytes, path, header or query.
func FuzzRoutes(f *testing.F) {
	cfg, err := file.Parse("mesh.yaml", strings.NewReader(`
services:
  - {name: web, vip: 10.96.0.10, ports: [{name: http, port: 80}]}
  - {name: web-v2, ports: [{name: http, port: 80}]}
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web}
    spec:
      parentRefs: [{group: "", kind: Service, name: web, port: 80}]
      rules:
        - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}, headers: [{name: x-a, type: RegularExpression, value: "a.*"}], queryParams: [{name: q, value: "1"}]}]
          filters:
            - type: URLRewrite
              urlRewrite: {hostname: other, path: {type: ReplaceFullPath, replaceFullPath: /x}}
          backendRefs: [{name: web-v2, port: 80}]
        - matches: [{path: {type: PathPrefix, value: /api}}]
          filters:
            - type: URLRewrite
              urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
            - type: ResponseHeaderModifier
              responseHeaderModifier: {set: [{name: a, value: b}], remove: [c]}
          backendRefs: [{name: web, port: 80, weight: 3}, {name: web-v2, port: 80, weight: 1}, {name: nope, port: 80}]
        - matches: [{path: {type: Exact, value: /old}}]
          filters:
            - type: RequestRedirect
              requestRedirect: {scheme: https, hostname: h, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /n}}
`))
	if err != nil {
		f.Fatal(err)
	}
	res, _, err := xds.TranslateRoutes(cfg.Static, cfg.Routes, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range res[resource.RouteType] {
		b, err := proto.Marshal(r.(*routev3.RouteConfiguration))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "/api/v1/x", "abc", "q=1&r=%41")
		f.Add(b, "/old", "", "")
	}
	own := &Cluster{Name: "outbound|80||web.default.svc.cluster.local"}
	v2 := &Cluster{Name: "outbound|80||web-v2.default.svc.cluster.local"}
	clusters := map[string]*Cluster{own.Name: own, v2.Name: v2}
	f.Fuzz(func(t *testing.T, data []byte, path, header, query string) {
		var rc routev3.RouteConfiguration
		if proto.Unmarshal(data, &rc) != nil {
			return
		}
		rt, _ := compileRoutes(&rc, own, clusters, newRegexCompiler(nil))
		q := &fakeRoutable{path: path, headers: map[string]string{"x-a": header}}
		e := rt.match(q, path, query)
		if e == nil || e.reply != nil {
			return
		}
		if e.redirect != nil {
			if r := e.redirectReply(q, path, query); r.Status < 300 || r.Status > 399 {
				t.Fatalf("redirect with status %d", r.Status)
			}
			return
		}
		if tg := e.pick(); tg == nil {
			t.Fatal("a route with targets picked none")
		}
		e.applyRequest(q, path)
	})
}

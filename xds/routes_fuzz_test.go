package xds

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tender-mesh/tender/discovery/file"
)

// FuzzTranslateRoutes feeds the Gateway API compiler mesh.yaml files with
// routes (what a user, or the API server, hands it): it never panics,
// every route it accepts gets a status, and what it emits marshals.
func FuzzTranslateRoutes(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "routes.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add(`services: [{name: a, vip: 10.0.0.1, ports: [{port: 80}]}]
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {name: r}
    spec:
      parentRefs: [{group: "", kind: Service, name: a}]
      rules: [{matches: [{method: {type: RegularExpression, service: "a.*", method: "(b|c)"}}], backendRefs: [{name: a, port: 80}]}]
`)
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := file.Parse("fuzz.yaml", strings.NewReader(in))
		if err != nil {
			return
		}
		res, status, err := TranslateRoutes(cfg.Static, cfg.Routes, nil)
		if err != nil {
			return
		}
		for _, st := range status {
			for _, ps := range st.Parents {
				if ps.Accepted.Reason == "" || ps.ResolvedRefs.Reason == "" {
					t.Fatalf("%s: a condition without a reason: %+v", st.Key(), ps)
				}
			}
		}
		for _, items := range res {
			for _, r := range items {
				if _, err := proto.Marshal(r); err != nil {
					t.Fatalf("emitted a resource that does not marshal: %v", err)
				}
			}
		}
	})
}

package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func loadServices(t *testing.T, name string) *file.Config {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := file.Parse(name, f)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return cfg
}

// TestTranslateGolden pins the resources of testdata/mesh.yaml: one file
// per type, compared after normalising protojson's unstable spacing.
func TestTranslateGolden(t *testing.T) {
	cfg := loadServices(t, "mesh.yaml")
	res, err := Translate(cfg.Static, &Security{MTLS: cfg.Security.MTLS, Authorization: cfg.Security.Authorization,
		RootCAs: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	for _, typ := range typeOrder {
		t.Run(shortType(typ), func(t *testing.T) {
			var buf bytes.Buffer
			for _, r := range res[typ] {
				b, err := protojson.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Indent(&buf, compact(t, b), "", "  "); err != nil {
					t.Fatal(err)
				}
				buf.WriteByte('\n')
			}
			golden := filepath.Join("testdata", "mesh."+shortType(typ)+".golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./xds -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), buf.String()); diff != "" {
				t.Errorf("%s differs from the golden file (-want +got):\n%s", typ, diff)
			}
		})
	}
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestTranslateCounts(t *testing.T) {
	cfg := loadServices(t, "mesh.yaml")
	res, err := Translate(cfg.Static, nil)
	if err != nil {
		t.Fatal(err)
	}
	ports := 0
	for _, s := range cfg.Static {
		ports += len(s.Ports)
	}
	for _, typ := range typeOrder {
		if typ == resource.SecretType {
			continue // the trust bundle, when there is one
		}
		want := ports
		if typ == resource.ClusterType || typ == resource.EndpointType {
			want++ // the mesh's default modes, and their empty load assignment
		}
		got := 0
		for _, r := range res[typ] {
			if _, ok := xdsclient.ParseAddressIndexName(cachev3.GetResourceName(r)); !ok {
				got++ // but the address indexes
			}
		}
		if got != want {
			t.Errorf("%s: got %d resources, want one per service port (%d)", shortType(typ), got, want)
		}
	}
}

// TestLBPolicyReadableByGRPC checks what grpc-go needs: a legacy lb_policy
// it knows for every policy, and, where the exact policy is one grpc-go
// lacks, a load_balancing_policy whose last entry it supports.
func TestLBPolicyReadableByGRPC(t *testing.T) {
	grpcKnows := map[clusterv3.Cluster_LbPolicy]bool{
		clusterv3.Cluster_ROUND_ROBIN: true, clusterv3.Cluster_LEAST_REQUEST: true, clusterv3.Cluster_RING_HASH: true,
	}
	cfg := loadServices(t, "mesh.yaml")
	res, err := Translate(cfg.Static, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		legacy clusterv3.Cluster_LbPolicy
		first  string
		tender string // what tender's sidecar reads back (xdsclient.LBPolicyOf)
	}{
		"outbound|8080||greeter.default.svc.cluster.local": {clusterv3.Cluster_ROUND_ROBIN, "", "ROUND_ROBIN"},
		"outbound|80||users.shop.svc.cluster.local":        {clusterv3.Cluster_RING_HASH, "", "RING_HASH"},
		"outbound|6379||cart.shop.svc.cluster.local":       {clusterv3.Cluster_RING_HASH, "envoy.load_balancing_policies.maglev", "MAGLEV"},
		"outbound|9090||search.shop.svc.cluster.local":     {clusterv3.Cluster_ROUND_ROBIN, "envoy.load_balancing_policies.random", "RANDOM"},
		"outbound|8080||pricing.shop.svc.cluster.local":    {clusterv3.Cluster_LEAST_REQUEST, "", "LEAST_REQUEST"},
	}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		w, ok := want[c.GetName()]
		if !ok {
			continue
		}
		t.Run(c.GetName(), func(t *testing.T) {
			if !grpcKnows[c.GetLbPolicy()] {
				t.Errorf("lb_policy %v: grpc-go would reject the cluster", c.GetLbPolicy())
			}
			if c.GetLbPolicy() != w.legacy {
				t.Errorf("got lb_policy %v, want %v", c.GetLbPolicy(), w.legacy)
			}
			got := ""
			if ps := c.GetLoadBalancingPolicy().GetPolicies(); len(ps) > 0 {
				got = ps[0].GetTypedExtensionConfig().GetName()
			}
			if got != w.first {
				t.Errorf("got first load_balancing_policy %q, want %q", got, w.first)
			}
			if got, err := xdsclient.LBPolicyOf(c); got != w.tender || err != nil {
				t.Errorf("the sidecar reads %q, %v; want %s", got, err, w.tender)
			}
		})
	}
}

// TestTranslateRoutesGolden pins the route configurations and the route
// status testdata/routes.yaml gives: each match and filter kind, weights,
// precedence across rules, and routes that are partly or wholly wrong.
func TestTranslateRoutesGolden(t *testing.T) {
	cfg := loadServices(t, "routes.yaml")
	res, status, err := TranslateRoutes(cfg.Static, cfg.Routes, nil)
	if err != nil {
		t.Fatalf("TranslateRoutes: %v", err)
	}
	var buf bytes.Buffer
	for _, r := range res[resource.RouteType] {
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Indent(&buf, compact(t, b), "", "  "); err != nil {
			t.Fatal(err)
		}
		buf.WriteByte('\n')
	}
	checkGolden(t, "routes.RouteConfiguration.golden", buf.Bytes())
	b, err := json.MarshalIndent(status, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "routes.status.golden", append(b, '\n'))
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./xds -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", name, diff)
	}
}

package main

import (
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/xds"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// translated is what tender's control plane sends for the translator's
// own test mesh, with one more service per load-balancing policy.
func translated(t *testing.T) *xdsclient.Config {
	t.Helper()
	f, err := os.Open("../../xds/testdata/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mesh, err := file.Parse("mesh.yaml", f)
	if err != nil {
		t.Fatal(err)
	}
	services := mesh.Static
	for _, lb := range []discovery.LBPolicy{discovery.LBRoundRobin, discovery.LBLeastRequest, discovery.LBRingHash, discovery.LBMaglev, discovery.LBRandom} {
		s := services[0]
		s.Name += "-" + strings.ToLower(string(lb))
		s.Policy.LB = lb
		services = append(services, s)
	}
	res, err := xds.Translate(services, &xds.Security{MTLS: mesh.Security.MTLS, Authorization: mesh.Security.Authorization})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	cfg := &xdsclient.Config{Clusters: map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{}, Routes: map[string]*routev3.RouteConfiguration{}}
	for _, r := range res[xdsclient.ClusterType] {
		c := r.(*clusterv3.Cluster)
		cfg.Clusters[c.GetName()] = c
	}
	for _, r := range res[xdsclient.EndpointType] {
		c := r.(*endpointv3.ClusterLoadAssignment)
		cfg.Endpoints[c.GetClusterName()] = c
	}
	for _, r := range res[xdsclient.RouteType] {
		c := r.(*routev3.RouteConfiguration)
		cfg.Routes[c.GetName()] = c
	}
	if len(cfg.Clusters) == 0 || len(cfg.Routes) == 0 {
		t.Fatalf("the translator made %d clusters and %d routes", len(cfg.Clusters), len(cfg.Routes))
	}
	return cfg
}

// anyTypes returns the type URL of every Any inside msgs, at any depth.
func anyTypes[M proto.Message](t *testing.T, msgs map[string]M, into map[string]bool) {
	t.Helper()
	for _, m := range msgs {
		err := protorange.Range(m.ProtoReflect(), func(v protopath.Values) error {
			a, ok := v.Index(-1).Value.Interface().(protoreflect.Message)
			if !ok || a.Descriptor().FullName() != "google.protobuf.Any" {
				return nil
			}
			into[a.Interface().(*anypb.Any).GetTypeUrl()] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDumpResolvesEveryType: every type the control plane wraps in an
// Any inside what the sidecar dumps is linked into the sidecar binary
// (this test binary links them all through package xds, so the dump
// alone would pass here whatever the sidecar links: the check is on `go
// list -deps`), and the dump of that config succeeds.
func TestDumpResolvesEveryType(t *testing.T) {
	cfg := translated(t)
	if _, _, _, err := dumpResources(cfg); err != nil {
		t.Fatalf("dump: %v", err)
	}
	urls := map[string]bool{}
	anyTypes(t, cfg.Clusters, urls)
	anyTypes(t, cfg.Endpoints, urls)
	anyTypes(t, cfg.Routes, urls)
	if len(urls) < 5 {
		t.Fatalf("found only %d Any types in the translator's output: %v", len(urls), urls)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-tags", buildTags, ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	linked := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		linked[p] = true
	}
	for url := range urls {
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
		if err != nil {
			t.Errorf("%s: %v", url, err)
			continue
		}
		pkg := reflect.TypeOf(mt.Zero().Interface()).Elem().PkgPath()
		if !linked[pkg] {
			t.Errorf("the control plane sends %s but the sidecar does not link %s: /config_dump would fail (add it to types.go)", url, pkg)
		}
	}
}

package proxy

import (
	"net/netip"
	"os"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/xds"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// FuzzBuildTable feeds the table build what a control plane could send: a
// cluster, its load assignment and its route configuration, each as
// protobuf bytes (seeded with the translator's own output for its test
// mesh). A config the sidecar cannot use is an ErrInvalidConfig, never a
// panic; the table it builds answers lookups, and builds again over
// itself as it does on the next push.
func FuzzBuildTable(f *testing.F) {
	mf, err := os.Open("../xds/testdata/mesh.yaml")
	if err != nil {
		f.Fatal(err)
	}
	mesh, err := file.Parse("mesh.yaml", mf)
	mf.Close()
	if err != nil {
		f.Fatal(err)
	}
	res, err := xds.Translate(mesh.Static, &xds.Security{MTLS: mesh.Security.MTLS, Authorization: mesh.Security.Authorization})
	if err != nil {
		f.Fatal(err)
	}
	routes := map[string][]byte{}
	for _, r := range res[xdsclient.RouteType] {
		b, _ := proto.Marshal(r)
		routes[r.(*routev3.RouteConfiguration).GetName()] = b
	}
	assignments := map[string][]byte{}
	for _, r := range res[xdsclient.EndpointType] {
		b, _ := proto.Marshal(r)
		assignments[r.(*endpointv3.ClusterLoadAssignment).GetClusterName()] = b
	}
	for _, r := range res[xdsclient.ClusterType] {
		c := r.(*clusterv3.Cluster)
		b, _ := proto.Marshal(c)
		f.Add(b, assignments[c.GetName()], routes[xdsclient.RouteNameOf(c)])
	}
	f.Fuzz(func(t *testing.T, cluster, cla, route []byte) {
		c, e, r := &clusterv3.Cluster{}, &endpointv3.ClusterLoadAssignment{}, &routev3.RouteConfiguration{}
		if proto.Unmarshal(cluster, c) != nil || proto.Unmarshal(cla, e) != nil || proto.Unmarshal(route, r) != nil {
			return // not a resource: the xDS client refuses it before the table
		}
		cfg := &xdsclient.Config{
			Clusters:  map[string]*clusterv3.Cluster{c.GetName(): c},
			Endpoints: map[string]*endpointv3.ClusterLoadAssignment{c.GetName(): e},
			Routes:    map[string]*routev3.RouteConfiguration{xdsclient.RouteNameOf(c): r},
		}
		local := balancer.Locality{Zone: "a"}
		tab, err := BuildTable(cfg, nil, local)
		if err != nil {
			return
		}
		if _, err := BuildTable(cfg, tab, local); err != nil {
			t.Fatalf("the same config built once and then refused: %v", err)
		}
		for _, cl := range tab.Clusters {
			for _, ep := range cl.Endpoints {
				if got := tab.Endpoint(ep.Addr); got == nil {
					t.Errorf("endpoint %v of cluster %s not found by its address", ep.Addr, cl.Name)
				}
				tab.InboundClusters(ep.Addr)
				tab.Strict(ep.Addr)
			}
		}
		tab.Strict(netip.MustParseAddrPort("10.0.0.1:80"))
	})
}

package xdsclient

import (
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// FuzzMerge applies two delta responses from the wire, in order, to an
// empty config: bytes that are no response, or a response with a resource
// that does not decode, are an error, never a panic; a response that
// merges leaves the config it started from as it was, holds every
// resource it named under that name and none it removed.
func FuzzMerge(f *testing.F) {
	seed := func(r *discoveryv3.DeltaDiscoveryResponse) []byte {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	clusters := seed(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType, SystemVersionInfo: "1",
		Resources: []*discoveryv3.Resource{resourceOf(f, "a", &clusterv3.Cluster{Name: "a"})}})
	endpoints := seed(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: EndpointType, SystemVersionInfo: "2",
		Resources:        []*discoveryv3.Resource{resourceOf(f, "a", &endpointv3.ClusterLoadAssignment{ClusterName: "a"})},
		RemovedResources: []string{"b"}})
	removal := seed(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType, SystemVersionInfo: "3", RemovedResources: []string{"a"}})
	f.Add(clusters, endpoints)
	f.Add(clusters, removal)
	f.Add(endpoints, clusters)
	f.Fuzz(func(t *testing.T, first, second []byte) {
		cur := emptyConfig()
		for _, b := range [][]byte{first, second} {
			resp := &discoveryv3.DeltaDiscoveryResponse{}
			if proto.Unmarshal(b, resp) != nil {
				return
			}
			before := slices.Sorted(maps.Keys(cur.Clusters))
			next, err := merge(cur, resp)
			if err != nil {
				return
			}
			if after := slices.Sorted(maps.Keys(cur.Clusters)); !slices.Equal(before, after) {
				t.Fatalf("merge changed the config it started from: clusters %v, then %v", before, after)
			}
			names := map[string]bool{}
			for _, r := range resp.GetResources() {
				names[r.GetName()] = true
			}
			for _, name := range resp.GetRemovedResources() {
				names[name] = false
			}
			for name, present := range names {
				var ok bool
				switch resp.GetTypeUrl() {
				case ClusterType:
					_, ok = next.Clusters[name]
				case EndpointType:
					_, ok = next.Endpoints[name]
				case RouteType:
					_, ok = next.Routes[name]
				case SecretType:
					_, ok = next.Secrets[name]
				}
				if ok != present {
					t.Fatalf("%s %q: in the merged config %v, want %v", resp.GetTypeUrl(), name, ok, present)
				}
			}
			cur = next
		}
	})
}

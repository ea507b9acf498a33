package xdsclient

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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

// FuzzAddressIndex reads route configurations from the wire as address
// indexes and pod localities: never a panic; an index that reads names
// clusters sorted, once each, none the mesh defaults; and what
// AddressIndex writes reads back the same.
func FuzzAddressIndex(f *testing.F) {
	for _, rc := range []*routev3.RouteConfiguration{
		AddressIndex(AddressIndexName(netip.MustParseAddr("10.96.0.1")), []string{"outbound|80||a.default.svc.cluster.local"}),
		AddressIndex(AddressIndexName(netip.MustParseAddr("fd00::1")), nil),
		PodLocalityResource(PodLocalityName("default/client"), Locality{Region: "r1", Zone: "z1"}),
	} {
		b, err := proto.Marshal(rc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rc := &routev3.RouteConfiguration{}
		if proto.Unmarshal(b, rc) != nil {
			return
		}
		PodLocality(rc)
		IsPodLocalityName(rc.GetName())
		names, err := IndexClusters(rc)
		if err != nil {
			return
		}
		if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) || slices.Contains(names, MeshDefaultsCluster) {
			t.Fatalf("IndexClusters = %q: want sorted, each once, no mesh defaults", names)
		}
		back, err := IndexClusters(AddressIndex(rc.GetName(), names))
		if err != nil || !slices.Equal(back, names) {
			t.Fatalf("written again and read: %q, %v; want %q", back, err, names)
		}
	})
}

// FuzzParsePreload: a preload list is an error or names that read back
// the same, never a panic.
func FuzzParsePreload(f *testing.F) {
	for _, s := range []string{"greeter.default.svc.cluster.local:8080", "a:1, b.c:65535", "", ",", "x:0", "[::1]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := ParsePreload(v)
		if err != nil {
			return
		}
		again, err := ParsePreload(strings.Join(got, ","))
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("ParsePreload(%q) = %q, read again: %q, %v", v, got, again, err)
		}
	})
}

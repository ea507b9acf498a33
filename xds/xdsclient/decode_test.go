package xdsclient

import (
	"errors"
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func resourceOf(tb testing.TB, name string, m proto.Message) *discoveryv3.Resource {
	tb.Helper()
	a, err := anypb.New(m)
	if err != nil {
		tb.Fatal(err)
	}
	return &discoveryv3.Resource{Name: name, Resource: a}
}

func TestMerge(t *testing.T) {
	cur := emptyConfig()
	next, err := merge(cur, &discoveryv3.DeltaDiscoveryResponse{
		TypeUrl: ClusterType, SystemVersionInfo: "1",
		Resources: []*discoveryv3.Resource{resourceOf(t, "a", &clusterv3.Cluster{Name: "a"}), resourceOf(t, "b", &clusterv3.Cluster{Name: "b"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	next, err = merge(next, &discoveryv3.DeltaDiscoveryResponse{
		TypeUrl: EndpointType, SystemVersionInfo: "1",
		Resources: []*discoveryv3.Resource{resourceOf(t, "a", &endpointv3.ClusterLoadAssignment{ClusterName: "a"}),
			resourceOf(t, "b", &endpointv3.ClusterLoadAssignment{ClusterName: "b"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	before := next
	// Removing a cluster removes its load assignment, in a new Config.
	next, err = merge(before, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType, SystemVersionInfo: "2", RemovedResources: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a"}, slices.Sorted(maps.Keys(next.Endpoints))); diff != "" {
		t.Errorf("load assignments after removing b (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{ClusterType: "2", EndpointType: "1"}, next.Versions); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
	if got := len(before.Clusters) + len(before.Endpoints); got != 4 {
		t.Errorf("got %d resources in the config merged from, want it unchanged with 4", got)
	}
	if before.Versions[ClusterType] != "1" {
		t.Errorf("got cluster version %q in the config merged from, want it unchanged at 1", before.Versions[ClusterType])
	}
}

// TestMergeKeepsEarlyAssignment: on demand a load assignment may come
// before its cluster; a cluster response that does not remove it keeps
// it (the server would not send it again).
func TestMergeKeepsEarlyAssignment(t *testing.T) {
	next, err := merge(emptyConfig(), &discoveryv3.DeltaDiscoveryResponse{TypeUrl: EndpointType,
		Resources: []*discoveryv3.Resource{resourceOf(t, "a", &endpointv3.ClusterLoadAssignment{ClusterName: "a"})}})
	if err != nil {
		t.Fatal(err)
	}
	next, err = merge(next, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType,
		Resources: []*discoveryv3.Resource{resourceOf(t, "b", &clusterv3.Cluster{Name: "b"})}})
	if err != nil {
		t.Fatal(err)
	}
	if next.Endpoints["a"] == nil {
		t.Fatal("a's load assignment, come before its cluster, was dropped by a response for another cluster")
	}
}

func TestMergeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp *discoveryv3.DeltaDiscoveryResponse
	}{
		{"wrong type in the Any", &discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType,
			Resources: []*discoveryv3.Resource{resourceOf(t, "a", &endpointv3.ClusterLoadAssignment{})}}},
		{"no Any", &discoveryv3.DeltaDiscoveryResponse{TypeUrl: RouteType, Resources: []*discoveryv3.Resource{{Name: "r"}}}},
		{"unknown type", &discoveryv3.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := merge(emptyConfig(), tc.resp); !errors.Is(err, errBadResource) {
				t.Errorf("got %v, want errBadResource", err)
			}
		})
	}
}

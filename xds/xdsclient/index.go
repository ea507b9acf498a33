package xdsclient

import (
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// maxIndexClusters bounds the clusters one address index may name: an
// address serves a few service ports, not thousands.
const maxIndexClusters = 4096

// AddressIndex builds the index of an address (AddressIndexName) naming
// clusters; the translator's side of the contract.
func AddressIndex(name string, clusters []string) *routev3.RouteConfiguration {
	vals := make([]*structpb.Value, len(clusters))
	for i, c := range clusters {
		vals[i] = structpb.NewStringValue(c)
	}
	return &routev3.RouteConfiguration{
		Name: name,
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: {Fields: map[string]*structpb.Value{
			indexClustersKey: structpb.NewListValue(&structpb.ListValue{Values: vals}),
		}}}},
	}
}

// IndexClusters returns the clusters an address index names, sorted and
// without repeats; an error for an index that is not one.
func IndexClusters(rc *routev3.RouteConfiguration) ([]string, error) {
	if _, ok := ParseAddressIndexName(rc.GetName()); !ok {
		return nil, fmt.Errorf("%.80q is no address index", rc.GetName())
	}
	md := rc.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()
	vals := md[indexClustersKey].GetListValue().GetValues()
	if len(vals) > maxIndexClusters {
		return nil, fmt.Errorf("index %s: %d clusters, more than %d", rc.GetName(), len(vals), maxIndexClusters)
	}
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok || s.StringValue == "" || s.StringValue == MeshDefaultsCluster {
			return nil, fmt.Errorf("index %s: a cluster name that is none", rc.GetName())
		}
		out = append(out, s.StringValue)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// PodLocalityPrefix starts the name of a pod's locality, the route
// configuration PodLocalityPrefix+NAMESPACE/NAME: its MetadataKey
// metadata holds "region", "zone" and "subzone", from the node the pod
// runs on (a sidecar does not know its node; the control plane does).
// A sidecar subscribes to its own; an empty one means none is known.
const PodLocalityPrefix = "tender.dev|pod|"

// PodLocalityName names the locality of pod "namespace/name".
func PodLocalityName(pod string) string { return PodLocalityPrefix + pod }

// IsPodLocalityName reports whether name names a pod's locality.
func IsPodLocalityName(name string) bool {
	pod, ok := strings.CutPrefix(name, PodLocalityPrefix)
	if !ok || len(pod) > 253+1+63 {
		return false
	}
	ns, n, ok := strings.Cut(pod, "/")
	return ok && ns != "" && n != "" && !strings.Contains(n, "/")
}

// Locality is where a pod runs.
type Locality struct{ Region, Zone, SubZone string }

// PodLocalityResource builds the locality resource name for l; the
// translator's side of the contract.
func PodLocalityResource(name string, l Locality) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: {Fields: map[string]*structpb.Value{
			"region":  structpb.NewStringValue(l.Region),
			"zone":    structpb.NewStringValue(l.Zone),
			"subzone": structpb.NewStringValue(l.SubZone),
		}}}},
	}
}

// PodLocality reads a locality resource; ok is false when it names none.
func PodLocality(rc *routev3.RouteConfiguration) (l Locality, ok bool) {
	md := rc.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()
	l = Locality{Region: md["region"].GetStringValue(), Zone: md["zone"].GetStringValue(), SubZone: md["subzone"].GetStringValue()}
	return l, l != (Locality{})
}

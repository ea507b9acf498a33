package xdsclient

import (
	"net/netip"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func withMeta(s *structpb.Struct) *clusterv3.Cluster {
	return &clusterv3.Cluster{Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: s}}}
}

// TestClusterMeta: what the translator writes reads back the same, and
// what a sidecar cannot place is refused, not guessed.
func TestClusterMeta(t *testing.T) {
	m := ClusterMeta{Service: "greeter", Namespace: "default", Hostname: "greeter.default.svc.cluster.local", Port: 8080,
		PortName: "http", Protocol: "HTTP", VIP: netip.MustParseAddr("10.96.0.10"), HashHeader: "x-user", MTLS: MTLSStrict}
	got, err := ClusterMetaOf(withMeta(m.Struct()))
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, m)
	}
	if got.RouteName() != "greeter.default.svc.cluster.local:8080" {
		t.Errorf("route name %q", got.RouteName())
	}
	if got, err := ClusterMetaOf(&clusterv3.Cluster{}); err != nil || got.MTLS != MTLSPermissive || got.RouteName() != "" {
		t.Errorf("a cluster without metadata: %+v, %v", got, err)
	}
	for name, v := range map[string]map[string]*structpb.Value{
		"port 0":           {metaPort: structpb.NewNumberValue(0)},
		"port 70000":       {metaPort: structpb.NewNumberValue(70000)},
		"port 80.5":        {metaPort: structpb.NewNumberValue(80.5)},
		"vip not an IP":    {metaVIP: structpb.NewStringValue("greeter")},
		"unknown mtls":     {metaMTLS: structpb.NewStringValue("OPTIONAL")},
		"unknown protocol": {metaProtocol: structpb.NewStringValue("SMTP")},
	} {
		if _, err := ClusterMetaOf(withMeta(&structpb.Struct{Fields: v})); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzClusterMeta decodes arbitrary Cluster bytes (from the network, in a
// sidecar): no panic; what decodes encodes and decodes back the same.
func FuzzClusterMeta(f *testing.F) {
	seed, _ := proto.Marshal(withMeta(ClusterMeta{Hostname: "a.b.svc", Port: 80, VIP: netip.MustParseAddr("fd00::1")}.Struct()))
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &clusterv3.Cluster{}
		if proto.Unmarshal(b, c) != nil {
			return
		}
		LBPolicyOf(c) //nolint:errcheck // only: no panic
		m, err := ClusterMetaOf(c)
		if err != nil {
			return
		}
		back, err := ClusterMetaOf(withMeta(m.Struct()))
		if err != nil || back != m {
			t.Fatalf("%+v encodes to something that reads back as %+v, %v", m, back, err)
		}
	})
}

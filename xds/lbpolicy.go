package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tender-mesh/tender/discovery"
)

// minRingSize is the ring size for RING_HASH and MAGLEV fallbacks: big
// enough to spread a handful of endpoints evenly.
const minRingSize = 1024

// setLBPolicy expresses policy the way both Envoy and grpc-go read it.
//
// grpc-go checks the legacy lb_policy enum first and rejects the whole
// cluster on a value it does not know (MAGLEV, RANDOM), even when
// load_balancing_policy is set. So the enum always holds the nearest policy
// grpc-go supports, and load_balancing_policy lists the exact policy first
// and the same fallback second: Envoy, which prefers load_balancing_policy,
// uses the exact one; grpc-go skips what it does not support and uses the
// fallback.
func setLBPolicy(c *clusterv3.Cluster, policy discovery.LBPolicy) error {
	ringHash := &clusterv3.Cluster_RingHashLbConfig{
		HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
		MinimumRingSize: wrapperspb.UInt64(minRingSize),
	}
	switch policy {
	case "", discovery.LBRoundRobin:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	case discovery.LBLeastRequest:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount: wrapperspb.UInt32(2),
		}}
	case discovery.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: ringHash}
	case discovery.LBMaglev:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: ringHash}
		lbp, err := policies(
			namedPolicy{"envoy.load_balancing_policies.maglev", &maglevv3.Maglev{}},
			namedPolicy{"envoy.load_balancing_policies.ring_hash", &ringhashv3.RingHash{
				HashFunction:    ringhashv3.RingHash_XX_HASH,
				MinimumRingSize: wrapperspb.UInt64(minRingSize),
			}})
		if err != nil {
			return err
		}
		c.LoadBalancingPolicy = lbp
	case discovery.LBRandom:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		lbp, err := policies(
			namedPolicy{"envoy.load_balancing_policies.random", &randomv3.Random{}},
			namedPolicy{"envoy.load_balancing_policies.round_robin", &roundrobinv3.RoundRobin{}})
		if err != nil {
			return err
		}
		c.LoadBalancingPolicy = lbp
	default:
		return fmt.Errorf("%w %q", discovery.ErrUnknownLBPolicy, policy)
	}
	return nil
}

// namedPolicy is one entry of a load_balancing_policy.
type namedPolicy struct {
	name   string
	config proto.Message
}

// policies builds a load_balancing_policy, most preferred entry first.
func policies(entries ...namedPolicy) (*clusterv3.LoadBalancingPolicy, error) {
	lbp := &clusterv3.LoadBalancingPolicy{}
	for _, e := range entries {
		cfg, err := anypb.New(e.config)
		if err != nil {
			return nil, fmt.Errorf("lb policy %s: %w", e.name, err)
		}
		lbp.Policies = append(lbp.Policies, &clusterv3.LoadBalancingPolicy_Policy{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: e.name, TypedConfig: cfg},
		})
	}
	return lbp, nil
}

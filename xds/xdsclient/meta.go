package xdsclient

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// ClusterMeta is tender's own metadata of a Cluster (its MetadataKey
// filter metadata): what a sidecar needs to match a captured destination
// and that no standard field of the Cluster carries. The translator
// writes it with Struct, the sidecar and tenderctl read it with
// ClusterMetaOf; the load balancing policy is read from the standard
// fields (LBPolicyOf), not from here.
type ClusterMeta struct {
	Service, Namespace string
	// Hostname is the service's name in DNS (NAME.NAMESPACE.svc.DOMAIN).
	Hostname string
	// Port and PortName are the service port the cluster serves.
	Port     uint32
	PortName string
	// Protocol is HTTP, HTTP2, GRPC, TCP or "" (detected).
	Protocol string
	// VIP is the service's virtual IP; invalid for a headless service.
	VIP netip.Addr
	// HashHeader is the header RING_HASH and MAGLEV hash on ("" the
	// client address).
	HashHeader string
	// MTLS is the inbound mode of the service's own sidecars:
	// MTLSPermissive or MTLSStrict.
	MTLS string
}

// The keys of ClusterMeta in the metadata.
const (
	metaService    = "service"
	metaNamespace  = "namespace"
	metaHostname   = "hostname"
	metaPort       = "port"
	metaPortName   = "portName"
	metaProtocol   = "protocol"
	metaVIP        = "vip"
	metaHashHeader = "hashHeader"
	metaMTLS       = "mtls"
)

// errBadMeta wraps what ClusterMetaOf refuses.
var errBadMeta = errors.New("bad tender.dev cluster metadata")

// Struct encodes m as the MetadataKey filter metadata.
func (m ClusterMeta) Struct() *structpb.Struct {
	vip := ""
	if m.VIP.IsValid() {
		vip = m.VIP.String()
	}
	s := func(v string) *structpb.Value { return structpb.NewStringValue(v) }
	out := &structpb.Struct{Fields: map[string]*structpb.Value{
		metaService:    s(m.Service),
		metaNamespace:  s(m.Namespace),
		metaHostname:   s(m.Hostname),
		metaPortName:   s(m.PortName),
		metaProtocol:   s(m.Protocol),
		metaVIP:        s(vip),
		metaHashHeader: s(m.HashHeader),
		metaMTLS:       s(m.MTLS),
	}}
	if m.Port != 0 {
		out.Fields[metaPort] = structpb.NewNumberValue(float64(m.Port))
	}
	return out
}

// ClusterMetaOf decodes c's MetadataKey filter metadata, checking it: a
// port in 1-65535 when set, a VIP that parses, a known protocol and mTLS
// mode (none is MTLSPermissive). A cluster without the metadata (not the
// translator's) gives the zero ClusterMeta and MTLSPermissive.
func ClusterMetaOf(c *clusterv3.Cluster) (ClusterMeta, error) {
	md := c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()
	str := func(k string) string { return md[k].GetStringValue() }
	m := ClusterMeta{
		Service: str(metaService), Namespace: str(metaNamespace), Hostname: str(metaHostname),
		PortName: str(metaPortName), Protocol: str(metaProtocol), HashHeader: str(metaHashHeader), MTLS: str(metaMTLS),
	}
	if v, ok := md[metaPort]; ok {
		n := v.GetNumberValue()
		if n < 1 || n > 65535 || n != float64(uint32(n)) {
			return ClusterMeta{}, fmt.Errorf("%w: port %v", errBadMeta, n)
		}
		m.Port = uint32(n)
	}
	if vip := str(metaVIP); vip != "" {
		a, err := netip.ParseAddr(vip)
		if err != nil {
			return ClusterMeta{}, fmt.Errorf("%w: vip %.64q", errBadMeta, vip)
		}
		m.VIP = a.Unmap()
	}
	switch m.Protocol {
	case "", "HTTP", "HTTP2", "GRPC", "TCP":
	default:
		return ClusterMeta{}, fmt.Errorf("%w: protocol %.32q", errBadMeta, m.Protocol)
	}
	switch m.MTLS {
	case "":
		m.MTLS = MTLSPermissive
	case MTLSPermissive, MTLSStrict:
	default:
		return ClusterMeta{}, fmt.Errorf("%w: mtls mode %.32q", errBadMeta, m.MTLS)
	}
	return m, nil
}

// RouteName names the RouteConfiguration of the cluster (its listener's
// name, HOST:PORT); "" for a cluster the translator did not make.
func (m ClusterMeta) RouteName() string {
	if m.Hostname == "" || m.Port == 0 {
		return ""
	}
	return m.Hostname + ":" + strconv.Itoa(int(m.Port))
}

// The load balancing policies a sidecar knows, by the type of their
// typed_config, which Envoy and grpc-go choose an extension by (its name
// is only a label).
var lbExtensions = map[string]string{
	"type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":     "ROUND_ROBIN",
	"type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": "LEAST_REQUEST",
	"type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random":              "RANDOM",
	"type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":         "RING_HASH",
	"type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev":              "MAGLEV",
}

// LBPolicyOf reads c's load balancing policy from the standard fields, as
// Envoy does: the first entry of load_balancing_policy it knows, else the
// legacy lb_policy (MAGLEV and RANDOM included).
func LBPolicyOf(c *clusterv3.Cluster) (string, error) {
	if lbp := c.GetLoadBalancingPolicy(); lbp != nil {
		for _, p := range lbp.GetPolicies() {
			if name, ok := lbExtensions[p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl()]; ok {
				return name, nil
			}
		}
		return "", fmt.Errorf("%w: no load_balancing_policy entry this sidecar knows", errBadMeta)
	}
	switch p := c.GetLbPolicy(); p {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RING_HASH, clusterv3.Cluster_RANDOM:
		return p.String(), nil
	case clusterv3.Cluster_MAGLEV:
		return "MAGLEV", nil
	default:
		return "", fmt.Errorf("%w: lb_policy %s", errBadMeta, p)
	}
}

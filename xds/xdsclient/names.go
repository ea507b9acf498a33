package xdsclient

import (
	"net/netip"
	"strconv"
	"strings"
)

// The names below are the contract between the control plane's
// translator (package xds), which writes them, and the sidecar, which
// reads them. They live on the sidecar's side so that it needs nothing
// of the control plane's.

// MetadataKey is the filter_metadata key of tender's own cluster metadata
// (service, namespace, hostname, port, protocol, vip). Envoy and grpc-go
// ignore it; tender sidecars use it to match captured destinations.
const MetadataKey = "tender.dev"

// EndpointIdentity is the key, in an endpoint's MetadataKey metadata, of
// the SPIFFE ID the endpoint's server certificate must carry.
const EndpointIdentity = "identity"

// TransportSocketMatch is the endpoint metadata key Envoy's
// transport_socket_matches read; TLSModeMesh under "tlsMode" marks an
// endpoint that takes the mesh's mutual TLS.
const (
	TransportSocketMatch = "envoy.transport_socket_match"
	TLSModeMesh          = "tender"
)

// RootCAName names the SDS secret that holds the trust bundle, as Istio
// names it.
const RootCAName = "ROOTCA"

// Type URLs of the resources the sidecar subscribes to. They equal
// go-control-plane's resource.ClusterType and friends (package xds tests
// that), written out here because pkg/resource links the Listener and
// HttpConnectionManager types, which the sidecar never reads.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// MeshDefaultsCluster names the cluster that carries the mesh's default
// inbound modes: in its MetadataKey metadata, "mtls" is the mesh-wide
// mode and "namespaces" maps a namespace to its own. A sidecar applies
// them to an address or port of its pod that no service lists (a pod
// behind no Service, or not yet in EDS). It is a STATIC cluster with no
// endpoints: Envoy holds it harmlessly, proxyless gRPC never asks for it.
const MeshDefaultsCluster = "tender.dev|mesh-defaults"

// Inbound mutual TLS modes, the values of the "mtls" key of MetadataKey
// (discovery.MTLSMode on the control plane's side); none means
// MTLSPermissive.
const (
	MTLSPermissive = "PERMISSIVE"
	MTLSStrict     = "STRICT"
)

// AddressIndexPrefix starts the name of an address's index, the route
// configuration AddressIndexPrefix+IP (AddressIndexName). Its MetadataKey
// metadata lists under "clusters" the clusters whose service has IP as
// its VIP or as an endpoint address. An on-demand sidecar subscribes to
// the index of an address on the first connection to it, and to its own
// pod's addresses at start, then follows the clusters it names to their
// routes and endpoints. Envoy and grpc-go never ask for it (they name the
// route configurations their listeners name); an index of no cluster
// means the control plane knows nothing at that address.
const AddressIndexPrefix = "tender.dev|addr|"

// AddressIndexName names the index of ip.
func AddressIndexName(ip netip.Addr) string { return AddressIndexPrefix + ip.Unmap().String() }

// ParseAddressIndexName returns the address an index name names.
func ParseAddressIndexName(name string) (netip.Addr, bool) {
	rest, ok := strings.CutPrefix(name, AddressIndexPrefix)
	if !ok {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(rest)
	if err != nil || ip.Zone() != "" || ip != ip.Unmap() {
		return netip.Addr{}, false
	}
	return ip, true
}

// indexClustersKey is the key, in an index's MetadataKey metadata, of
// the list of cluster names.
const indexClustersKey = "clusters"

// InvalidClusterPrefix starts the cluster name a route's action carries
// for a backend that does not resolve: no such cluster exists, and
// requests sent to it get 500 (cluster_not_found_response_code). A
// sidecar does not subscribe to it.
const InvalidClusterPrefix = "invalid|"

// ClusterName names the cluster (and load assignment) of a service
// port: outbound|PORT||HOST, as in Istio. HOST is the service's host
// name (NAME.NAMESPACE.svc.cluster.local).
func ClusterName(host string, port uint32) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "||" + host
}

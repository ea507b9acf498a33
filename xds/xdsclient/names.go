package xdsclient

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

package xds

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/security"
	"github.com/tender-mesh/tender/security/authz"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// DefaultConnectTimeout is a cluster's connect timeout when the service
// sets none.
const DefaultConnectTimeout = 5 * time.Second

// Resources are the xDS resources of one registry snapshot, by type URL.
type Resources map[resource.Type][]types.Resource

// Security is what the translator adds for mutual TLS and authorization.
// The zero value adds nothing but the default mode, PERMISSIVE.
type Security struct {
	// TrustDomain of the SPIFFE IDs policies name; default cluster.local.
	TrustDomain string
	// MTLS sets each service's inbound mode, carried in its clusters'
	// metadata.
	MTLS *discovery.MTLSPolicy
	// Authorization policies go on the services' route configurations as
	// Envoy RBAC (per-route config of the RBAC HTTP filter).
	Authorization []authz.Policy
	// RootCAs is the mesh's trust bundle (PEM), served as the SDS secret
	// xdsclient.RootCAName; empty: no secret.
	RootCAs []byte
}

// Translate builds the xDS resources for services: for every service port
// a Listener (API listener), a RouteConfiguration, a Cluster (EDS) and a
// ClusterLoadAssignment; and the trust bundle as an SDS Secret. The output
// is deterministic: the same input gives the same resources in the same
// order.
func Translate(services []discovery.Service, sec *Security) (Resources, error) {
	res, _, err := TranslateRoutes(services, nil, sec)
	return res, err
}

// TranslateRoutes is Translate with the mesh's Gateway API routes: a
// service port that routes attach to gets their rules as its
// RouteConfiguration's routes (requests matching none get 404, as GAMMA
// says); the others one route to their own cluster. It also returns what
// it made of each route, for the routes' status.
func TranslateRoutes(services []discovery.Service, routes []discovery.Route, sec *Security) (Resources, []RouteStatus, error) {
	t := newTranslator(services, routes, sec)
	out := t.common()
	for i := range services {
		res, err := t.service(&services[i])
		if err != nil {
			return nil, nil, err
		}
		for typ, items := range res {
			out[typ] = append(out[typ], items...)
		}
	}
	out[resource.RouteType] = append(out[resource.RouteType], addressIndexes(services)...)
	return out, t.compiled.status, nil
}

// translator translates the services of one snapshot one at a time, so
// that the server translates again only the services that changed.
type translator struct {
	sec      *Security
	td       string // the trust domain, defaulted
	compiled routeSet
}

func newTranslator(services []discovery.Service, routes []discovery.Route, sec *Security) *translator {
	if sec == nil {
		sec = &Security{}
	}
	td := sec.TrustDomain
	if td == "" {
		td = "cluster.local"
	}
	return &translator{sec: sec, td: td, compiled: compileRoutes(services, routes)}
}

// common are the resources of no service: the mesh's default modes (and
// their empty load assignment) and the trust bundle.
func (t *translator) common() Resources {
	out := Resources{
		resource.ListenerType: nil,
		resource.RouteType:    nil,
		// Its empty load assignment is for sidecars of releases before it
		// that take it for a service and wait for its endpoints.
		resource.ClusterType:  {buildMeshDefaults(t.sec.MTLS)},
		resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: xdsclient.MeshDefaultsCluster}},
		resource.SecretType:   nil,
	}
	if len(t.sec.RootCAs) > 0 {
		out[resource.SecretType] = append(out[resource.SecretType], &tlsv3.Secret{
			Name: xdsclient.RootCAName,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: t.sec.RootCAs}},
			}},
		})
	}
	return out
}

// service builds a service's resources: per port a Listener (API
// listener), a RouteConfiguration, a Cluster (EDS) and a
// ClusterLoadAssignment.
func (t *translator) service(s *discovery.Service) (Resources, error) {
	rbac, err := authz.ForService(t.sec.Authorization, s.Namespace, s.Name, t.td)
	if err != nil {
		return nil, fmt.Errorf("xds: translate %s: authorization: %w", s.Key(), err)
	}
	out := make(Resources, 4)
	for _, p := range s.Ports {
		lis, err := buildListener(s, p)
		if err != nil {
			return nil, fmt.Errorf("xds: translate %s: %w", ListenerName(s, p), err)
		}
		c, err := buildCluster(s, p, t.sec.MTLS.For(s.Namespace, s.Name))
		if err != nil {
			return nil, fmt.Errorf("xds: translate %s: %w", ClusterName(s, p), err)
		}
		rc, err := buildRoute(s, p, rbac, t.compiled.byListener[ListenerName(s, p)])
		if err != nil {
			return nil, fmt.Errorf("xds: translate %s: %w", ListenerName(s, p), err)
		}
		out[resource.ListenerType] = append(out[resource.ListenerType], lis)
		out[resource.RouteType] = append(out[resource.RouteType], rc)
		out[resource.ClusterType] = append(out[resource.ClusterType], c)
		out[resource.EndpointType] = append(out[resource.EndpointType], buildLoadAssignment(s, p, t.td))
	}
	return out, nil
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func buildListener(s *discovery.Service, p discovery.Port) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	fault, err := anypb.New(&faultv3.HTTPFault{})
	if err != nil {
		return nil, err
	}
	name := ListenerName(s, p)
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: name,
		}},
		// The fault filter is idle unless a route configures it.
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       wellknown.Fault,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault},
		}, {
			Name:       wellknown.Router,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
	}, nil
}

func buildRoute(s *discovery.Service, p discovery.Port, rbac map[string]*anypb.Any, routes []*routev3.Route) (*routev3.RouteConfiguration, error) {
	name := ListenerName(s, p)
	if routes != nil {
		return &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:                 name,
				Domains:              domains(s, p),
				Routes:               routes,
				TypedPerFilterConfig: rbac,
			}},
		}, nil
	}
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(s, p)},
	}
	if h := s.Policy.HashHeader; h != "" {
		action.HashPolicy = []*routev3.RouteAction_HashPolicy{{
			PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h},
			},
		}}
	}
	route := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: action},
	}
	if err := setRouteResilience(route, &s.Policy.Resilience); err != nil {
		return nil, err
	}
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: domains(s, p),
			Routes:  []*routev3.Route{route},
			// The destination's sidecar enforces these; clients' filter
			// chains have no RBAC filter and skip them (optional).
			TypedPerFilterConfig: rbac,
		}},
	}, nil
}

func buildCluster(s *discovery.Service, p discovery.Port, mode discovery.MTLSMode) (*clusterv3.Cluster, error) {
	name := ClusterName(s, p)
	timeout := s.Policy.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		ConnectTimeout:       durationpb.New(timeout),
	}
	if err := setLBPolicy(c, s.Policy.LB); err != nil {
		return nil, err
	}
	setClusterResilience(c, &s.Policy.Resilience)
	md := xdsclient.ClusterMeta{
		Service: s.Name, Namespace: s.Namespace, Hostname: s.Hostname(),
		Port: p.Number, PortName: p.Name, Protocol: string(p.Protocol),
		VIP: s.VIP, HashHeader: s.Policy.HashHeader, MTLS: string(mode),
	}
	c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{xdsclient.MetadataKey: md.Struct()}}
	if p.Protocol == discovery.ProtocolGRPC || p.Protocol == discovery.ProtocolHTTP2 {
		// Tell Envoy to speak HTTP/2 upstream; grpc-go ignores it.
		opts, err := anypb.New(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		})
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts,
		}
	}
	return c, nil
}

func buildLoadAssignment(s *discovery.Service, p discovery.Port, trustDomain string) *endpointv3.ClusterLoadAssignment {
	type group struct {
		loc      discovery.Locality
		priority uint32
	}
	groups := make(map[group]*endpointv3.LocalityLbEndpoints)
	var keys []group
	priorities := make(map[uint32]bool)
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		g := group{e.Locality, e.Priority}
		lle, ok := groups[g]
		if !ok {
			lle = &endpointv3.LocalityLbEndpoints{
				Locality: &corev3.Locality{Region: e.Locality.Region, Zone: e.Locality.Zone, SubZone: e.Locality.SubZone},
			}
			groups[g] = lle
			keys = append(keys, g)
			priorities[e.Priority] = true
		}
		w := max(e.Weight, 1)
		lbe := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(e.Address.String(), e.TargetPort(p)),
			}},
			HealthStatus:        healthStatus(e.Health),
			LoadBalancingWeight: wrapperspb.UInt32(w),
		}
		if e.Meshed {
			// Where Envoy's transport_socket_matches look, as Istio marks
			// endpoints that take its mTLS.
			lbe.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				xdsclient.TransportSocketMatch: {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(xdsclient.TLSModeMesh)}},
			}}
			// The identity the endpoint's certificate must carry, as Istio
			// sends a cluster's SANs.
			if e.ServiceAccount != "" {
				id := security.ID{TrustDomain: trustDomain, Namespace: s.Namespace, ServiceAccount: e.ServiceAccount}
				lbe.Metadata.FilterMetadata[xdsclient.MetadataKey] = &structpb.Struct{Fields: map[string]*structpb.Value{
					xdsclient.EndpointIdentity: structpb.NewStringValue(id.String()),
				}}
			}
		}
		lle.LbEndpoints = append(lle.LbEndpoints, lbe)
	}
	// Priorities must be contiguous from 0 (grpc-go rejects gaps): map the
	// sources' priorities onto 0..n-1 keeping their order.
	order := make([]uint32, 0, len(priorities))
	for pr := range priorities {
		order = append(order, pr)
	}
	slices.Sort(order)
	slices.SortFunc(keys, func(a, b group) int {
		return cmp.Or(
			cmp.Compare(a.priority, b.priority),
			cmp.Compare(a.loc.Region, b.loc.Region),
			cmp.Compare(a.loc.Zone, b.loc.Zone),
			cmp.Compare(a.loc.SubZone, b.loc.SubZone),
		)
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: ClusterName(s, p)}
	for _, g := range keys {
		lle := groups[g]
		lle.Priority = uint32(slices.Index(order, g.priority))
		var sum uint32
		for _, lb := range lle.LbEndpoints {
			sum += lb.GetLoadBalancingWeight().GetValue()
		}
		// grpc-go ignores localities without a weight.
		lle.LoadBalancingWeight = wrapperspb.UInt32(sum)
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	return cla
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func healthStatus(h discovery.Health) corev3.HealthStatus {
	switch h {
	case discovery.HealthHealthy:
		return corev3.HealthStatus_HEALTHY
	case discovery.HealthUnhealthy:
		return corev3.HealthStatus_UNHEALTHY
	case discovery.HealthDraining:
		return corev3.HealthStatus_DRAINING
	}
	return corev3.HealthStatus_UNKNOWN
}

// buildMeshDefaults is xdsclient.MeshDefaultsCluster: the mesh-wide and
// per-namespace inbound modes, for the addresses and ports of a pod that
// no service lists. Sent always, PERMISSIVE when nothing is set: a sidecar
// that has none applies STRICT there.
func buildMeshDefaults(p *discovery.MTLSPolicy) *clusterv3.Cluster {
	mode := discovery.MTLSPermissive
	namespaces := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	if p != nil {
		if p.Mode != "" {
			mode = p.Mode
		}
		for ns, m := range p.Namespaces {
			if m != "" { // not set: the mesh's mode, as MTLSPolicy.For reads it
				namespaces.Fields[ns] = structpb.NewStringValue(string(m))
			}
		}
	}
	name := xdsclient.MeshDefaultsCluster
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: name},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{xdsclient.MetadataKey: {Fields: map[string]*structpb.Value{
			"mtls":       structpb.NewStringValue(string(mode)),
			"namespaces": structpb.NewStructValue(namespaces),
		}}}},
	}
}

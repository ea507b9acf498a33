package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/security"
	"github.com/tender-mesh/tender/security/authz"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// Cluster is one service port as the sidecar routes to it.
type Cluster struct {
	Name      string
	Service   string
	Namespace string
	// Host is the service's host name (greeter.default.svc.cluster.local),
	// as metrics and spans name the destination.
	Host       string
	Protocol   string // HTTP, HTTP2, GRPC, TCP or "" (detect)
	HashHeader string
	Policy     string
	// Hashing is set for RING_HASH and MAGLEV: only they need a request's
	// hash key, so only they pay for it.
	Hashing   bool
	Endpoints []*balancer.Endpoint
	Picker    balancer.Picker
	// Resilience: timeout, retries, circuit breaker, fault injection.
	Resilience *interceptor.Policy
	// base is Resilience without its route's parts, for the routes of
	// other services that send to this cluster.
	base *interceptor.Policy
	// Routes are the routes of the service port (from RDS) that requests
	// to its VIP follow.
	Routes *routeTable
	// Outlier is the cluster's outlier detection (nil: none); its clock
	// is carried from the cluster's previous version.
	Outlier      *balancer.OutlierPolicy
	OutlierClock *balancer.OutlierClock
	// MTLSMode is what the service's own sidecars accept inbound:
	// PERMISSIVE or STRICT.
	MTLSMode string
	// Authz holds the service's authorization policies, enforced on the
	// inbound side; nil allows everything.
	Authz *authz.Engine

	// src are the resources the cluster was built from: the next table
	// reuses the endpoints and picker (a MAGLEV table is 65,537 entries)
	// of a cluster whose Cluster and load assignment did not change, and
	// its policies when its route configuration did not either. The
	// delta client keeps an unchanged resource's pointer.
	src clusterSrc
	// vip and port are the service's VIP:port the cluster is matched
	// by (no VIP: headless).
	vip  netip.Addr
	port uint32
}

// pending reports whether the cluster's load assignment has not come
// yet (on demand, the cluster may come first); false for nil.
func (cl *Cluster) pending() bool { return cl != nil && cl.src.cla == nil }

// clusterSrc are the xDS resources one Cluster was built from.
type clusterSrc struct {
	c     *clusterv3.Cluster
	cla   *endpointv3.ClusterLoadAssignment
	rc    *routev3.RouteConfiguration
	local balancer.Locality
}

// Table maps captured destinations (VIP:port) to clusters. BuildTable
// fills it and SetTable publishes it; from then on nothing writes it: its
// maps are exported for reading (the admin handlers, tests), and a change
// is a new Table.
type Table struct {
	ByVIP    map[netip.AddrPort]*Cluster
	Clusters map[string]*Cluster
	// ByAddrPort and ByAddr list every cluster an endpoint address (and
	// its IP) serves: the inbound side applies the modes and policies of
	// all of them, and those of all the IP's services on a port no
	// service names.
	ByAddrPort map[netip.AddrPort][]*Cluster
	ByAddr     map[netip.Addr][]*Cluster
	// MeshedAddrs are the endpoints that take mutual TLS, for traffic
	// to them outside their service's VIP (headless services).
	// Each maps to the identities its servers may present (space
	// separated, sorted; empty when no service that lists it knows one).
	MeshedAddrs map[netip.AddrPort]string

	// Refused lists the routes the sidecar could not follow and why (each
	// matches nothing, or answers 500).
	Refused []string
	// regexes are the route configurations' compiled regular
	// expressions, by anchored pattern, for the next table to reuse.
	regexes map[string]*regexp.Regexp

	// What the sidecar knows of its own pod (Localize): its namespace,
	// and the clusters that list any of its addresses, whose modes and
	// policies apply to an address or port of the pod no service lists.
	namespace string
	own       []*Cluster
	// defaults are the mesh's default modes (MeshDefaultsCluster), nil
	// when the control plane sent none; ownStrict is what they (or their
	// absence) say for the pod's namespace.
	defaults  *defaultModes
	ownStrict bool
}

// defaultModes are the mesh-wide and per-namespace inbound modes.
type defaultModes struct {
	mesh       string
	namespaces map[string]string
}

// meshDefaults reads MeshDefaultsCluster's metadata.
func meshDefaults(md map[string]*structpb.Value) (*defaultModes, error) {
	check := func(m string) (string, error) {
		switch m {
		case "":
			return xdsclient.MTLSPermissive, nil
		case xdsclient.MTLSPermissive, xdsclient.MTLSStrict:
			return m, nil
		}
		return "", fmt.Errorf("mtls mode %.32q", m)
	}
	mesh, err := check(md["mtls"].GetStringValue())
	if err != nil {
		return nil, err
	}
	d := &defaultModes{mesh: mesh, namespaces: map[string]string{}}
	for ns, v := range md["namespaces"].GetStructValue().GetFields() {
		if d.namespaces[ns], err = check(v.GetStringValue()); err != nil {
			return nil, fmt.Errorf("namespace %.64q: %w", ns, err)
		}
	}
	return d, nil
}

// Localize tells the table which pod it serves: the pod's namespace
// (only services of that namespace may set the modes and policies of its
// addresses: a tenant cannot attach a deny-all, or STRICT, to another
// namespace's pod by listing its IP) and its addresses (an address no
// service lists, such as a second IP or the IPv6 address of a dual-stack
// pod, gets the strictest of the pod's own services, not none). Call it
// before the table is used.
func (t *Table) Localize(namespace string, addrs []netip.Addr) {
	if namespace == interceptor.Unknown {
		namespace = ""
	}
	t.namespace, t.own = namespace, nil
	// A pod behind no service (or not yet in EDS) gets its namespace's
	// mode, else the mesh's; with none sent, STRICT: unknown is not open.
	t.ownStrict = true
	if d := t.defaults; d != nil {
		m, ok := d.namespaces[namespace]
		if !ok {
			m = d.mesh
		}
		t.ownStrict = m == xdsclient.MTLSStrict
		if namespace == "" { // not known: the strictest of them all
			for _, m := range d.namespaces {
				t.ownStrict = t.ownStrict || m == xdsclient.MTLSStrict
			}
		}
	}
	for _, a := range addrs {
		for _, cl := range t.sameNamespace(t.ByAddr[a.Unmap()]) {
			if !slices.Contains(t.own, cl) {
				t.own = append(t.own, cl)
			}
		}
	}
}

// sameNamespace keeps the clusters of the pod's namespace (all when it
// is not known); it allocates only when it drops one.
func (t *Table) sameNamespace(cls []*Cluster) []*Cluster {
	if t.namespace == "" {
		return cls
	}
	for i, cl := range cls {
		if cl.Namespace != t.namespace {
			out := slices.Clone(cls[:i])
			for _, c := range cls[i+1:] {
				if c.Namespace == t.namespace {
					out = append(out, c)
				}
			}
			return out
		}
	}
	return cls
}

// Endpoint returns the cluster an endpoint address belongs to, so the
// inbound side can name the service a request was sent to: of an address
// in two clusters, the first by name; nil for none.
func (t *Table) Endpoint(addr netip.AddrPort) *Cluster {
	if cls := t.sameNamespace(t.ByAddrPort[addr]); len(cls) > 0 {
		return cls[0]
	}
	return nil
}

// InboundClusters returns the clusters whose modes and policies apply to
// an inbound connection to dst: those listing dst, else those listing its
// IP, else those of the pod's other addresses; only of the pod's
// namespace.
func (t *Table) InboundClusters(dst netip.AddrPort) []*Cluster {
	if cls := t.sameNamespace(t.ByAddrPort[dst]); len(cls) > 0 {
		return cls
	}
	if cls := t.sameNamespace(t.ByAddr[dst.Addr()]); len(cls) > 0 {
		return cls
	}
	return t.own
}

// Strict reports whether the inbound side refuses plaintext to dst: one
// of its services is STRICT.
//
// A destination no service lists by address and port (another port of a
// listed address, another address of the pod, a pod behind no service or
// not yet in EDS) takes the strictest of its clusters (InboundClusters)
// and the pod's default mode (its namespace's, else the mesh's).
func (t *Table) Strict(dst netip.AddrPort) bool {
	if cls := t.sameNamespace(t.ByAddrPort[dst]); len(cls) > 0 {
		return strict(cls)
	}
	return t.ownStrict || strict(t.InboundClusters(dst))
}

// strict reports whether any of clusters is STRICT.
func strict(clusters []*Cluster) bool {
	for _, cl := range clusters {
		if cl.MTLSMode == xdsclient.MTLSStrict {
			return true
		}
	}
	return false
}

// hasAuthz reports whether any of clusters has authorization policies.
func hasAuthz(clusters []*Cluster) bool {
	for _, cl := range clusters {
		if cl.Authz != nil {
			return true
		}
	}
	return false
}

// ErrInvalidConfig wraps every reason a config is rejected.
var ErrInvalidConfig = errors.New("invalid config")

// BuildTable turns an xDS config into a Table. Endpoint objects of prev
// are reused for the same cluster and address, so active-request counts
// survive pushes. local is the sidecar's locality.
func BuildTable(cfg *xdsclient.Config, prev *Table, local balancer.Locality) (*Table, error) {
	t := NewTable()
	if cfg.Defaults != nil {
		d, err := meshDefaults(cfg.Defaults.GetMetadata().GetFilterMetadata()[xdsclient.MetadataKey].GetFields())
		if err != nil {
			return nil, fmt.Errorf("%w: cluster %s: %w", ErrInvalidConfig, xdsclient.MeshDefaultsCluster, err)
		}
		t.defaults = d
	}
	for name, c := range cfg.Clusters {
		md, err := xdsclient.ClusterMetaOf(c)
		if err != nil {
			return nil, fmt.Errorf("%w: cluster %s: %w", ErrInvalidConfig, name, err)
		}
		policy, err := xdsclient.LBPolicyOf(c)
		if err != nil {
			return nil, fmt.Errorf("%w: cluster %s: %w", ErrInvalidConfig, name, err)
		}
		cl := &Cluster{
			Name: name, Service: md.Service, Namespace: md.Namespace, Host: md.Hostname,
			Protocol: md.Protocol, HashHeader: md.HashHeader, Policy: policy, MTLSMode: md.MTLS,
			vip: md.VIP, port: md.Port,
		}
		rc := cfg.Routes[md.RouteName()]
		cl.src = clusterSrc{c: c, cla: cfg.Endpoints[name], rc: rc, local: local}
		if pc := prevCluster(prev, name); pc != nil && pc.src.c == c && pc.src.local == local && pc.src.cla == cl.src.cla && pc.src.cla != nil {
			// Nothing of the cluster's own changed: the new table gets a
			// copy (its routes are compiled anew below, against the new
			// table's clusters); pickers and endpoints are immutable.
			ncl := *pc
			ncl.src, ncl.Routes = cl.src, nil
			if pc.src.rc != rc {
				var state *interceptor.PolicyState
				if pc.Resilience != nil {
					state = pc.Resilience.State
				}
				if err := ncl.setPolicies(rc, state); err != nil {
					return nil, err
				}
			}
			t.addCluster(&ncl)
			continue
		}
		var old map[netip.AddrPort]*balancer.Stats
		var state *interceptor.PolicyState
		clock := &balancer.OutlierClock{}
		if prev != nil {
			if pc := prev.Clusters[name]; pc != nil {
				if pc.Resilience != nil {
					state = pc.Resilience.State
				}
				if pc.OutlierClock != nil {
					clock = pc.OutlierClock
				}
				old = make(map[netip.AddrPort]*balancer.Stats, len(pc.Endpoints))
				for _, e := range pc.Endpoints {
					old[e.Addr] = e.Stats
				}
			}
		}
		for _, lle := range cfg.Endpoints[name].GetEndpoints() {
			loc := balancer.Locality{Region: lle.GetLocality().GetRegion(), Zone: lle.GetLocality().GetZone(), SubZone: lle.GetLocality().GetSubZone()}
			for _, lb := range lle.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				ip, err := netip.ParseAddr(sa.GetAddress())
				if err != nil || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
					return nil, fmt.Errorf("%w: cluster %s: endpoint %q port %d", ErrInvalidConfig, name, sa.GetAddress(), sa.GetPortValue())
				}
				addr := netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue()))
				e := &balancer.Endpoint{Addr: addr, Stats: old[addr]}
				if e.Stats == nil {
					e.Stats = &balancer.Stats{}
				}
				e.Weight = lb.GetLoadBalancingWeight().GetValue()
				e.Priority = lle.GetPriority()
				e.Locality = loc
				md := lb.GetMetadata().GetFilterMetadata()
				e.Meshed = md[xdsclient.TransportSocketMatch].GetFields()["tlsMode"].GetStringValue() == xdsclient.TLSModeMesh
				if id := md[xdsclient.MetadataKey].GetFields()[xdsclient.EndpointIdentity].GetStringValue(); id != "" {
					if _, err := security.ParseID(id); err != nil {
						return nil, fmt.Errorf("%w: cluster %s: endpoint %s: %w", ErrInvalidConfig, name, addr, err)
					}
					e.Identity = id
				}
				hs := lb.GetHealthStatus()
				e.Healthy = hs == corev3.HealthStatus_HEALTHY || hs == corev3.HealthStatus_UNKNOWN
				cl.Endpoints = append(cl.Endpoints, e)
			}
		}
		p, err := balancer.New(cl.Policy, cl.Endpoints, local)
		if err != nil {
			return nil, fmt.Errorf("%w: cluster %s: %w", ErrInvalidConfig, name, err)
		}
		cl.Picker = p
		cl.OutlierClock = clock
		if err := cl.setPolicies(rc, state); err != nil {
			return nil, err
		}
		cl.Hashing = cl.Policy == "RING_HASH" || cl.Policy == "MAGLEV"
		t.addCluster(cl)
	}
	for name, cl := range t.Clusters {
		if !cl.vip.IsValid() {
			continue
		}
		if cl.port == 0 {
			return nil, fmt.Errorf("%w: cluster %s: vip %s without a port", ErrInvalidConfig, name, cl.vip)
		}
		// Two clusters on one VIP:port (the control plane lets one keep
		// it; another may not): the first by name, in every sidecar
		// alike, not Go's map order.
		ap := netip.AddrPortFrom(cl.vip, uint16(cl.port))
		if prev := t.ByVIP[ap]; prev == nil || name < prev.Name {
			t.ByVIP[ap] = cl
		}
	}
	rx := newRegexCompiler(prev)
	for _, name := range t.Names() {
		cl := t.Clusters[name]
		rc := cl.src.rc
		rt, refused := compileRoutes(rc, cl, t.Clusters, rx)
		cl.Routes = rt
		t.Refused = append(t.Refused, refused...)
		for _, e := range cl.Endpoints {
			t.ByAddrPort[e.Addr] = append(t.ByAddrPort[e.Addr], cl)
			if !slices.Contains(t.ByAddr[e.Addr.Addr()], cl) {
				t.ByAddr[e.Addr.Addr()] = append(t.ByAddr[e.Addr.Addr()], cl)
			}
			if e.Meshed {
				t.MeshedAddrs[e.Addr] = addIdentity(t.MeshedAddrs[e.Addr], e.Identity)
			}
		}
	}
	t.regexes = rx.next
	return t, nil
}

// setPolicies sets the cluster's resilience, outlier detection and
// authorization from its Cluster and rc, carrying state (the breaker's
// and the budget's counts) over from the cluster's previous version.
func (cl *Cluster) setPolicies(rc *routev3.RouteConfiguration, state *interceptor.PolicyState) error {
	var err error
	if cl.Resilience, cl.base, cl.Outlier, err = buildPolicy(cl.src.c, rc, state); err != nil {
		return err
	}
	cl.Authz = nil
	if vhs := rc.GetVirtualHosts(); len(vhs) > 0 {
		if cl.Authz, err = authz.FromRoute(vhs[0].GetTypedPerFilterConfig()); err != nil {
			return fmt.Errorf("%w: route %s: %w", ErrInvalidConfig, rc.GetName(), err)
		}
	}
	return nil
}

// addCluster adds cl to the table being built.
func (t *Table) addCluster(cl *Cluster) { t.Clusters[cl.Name] = cl }

// prevCluster is the cluster named name of the previous table, if any.
func prevCluster(prev *Table, name string) *Cluster {
	if prev == nil {
		return nil
	}
	return prev.Clusters[name]
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{
		ByVIP:       map[netip.AddrPort]*Cluster{},
		Clusters:    map[string]*Cluster{},
		ByAddrPort:  map[netip.AddrPort][]*Cluster{},
		ByAddr:      map[netip.Addr][]*Cluster{},
		MeshedAddrs: map[netip.AddrPort]string{},
	}
}

// Names returns the cluster names, sorted.
func (t *Table) Names() []string {
	out := make([]string, 0, len(t.Clusters))
	for n := range t.Clusters {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// addIdentity adds id to the space separated, sorted set ids. An address
// two services list takes the identities of both; one that any service
// knows no identity for is checked against those the others know.
func addIdentity(ids, id string) string {
	if id == "" {
		return ids
	}
	set := strings.Fields(ids)
	if slices.Contains(set, id) {
		return ids
	}
	set = append(set, id)
	slices.Sort(set)
	return strings.Join(set, " ")
}

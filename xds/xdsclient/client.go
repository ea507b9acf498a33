package xdsclient

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Options configure a Client.
type Options struct {
	// Addr is the control plane's xDS address.
	Addr string
	// Credentials secure the channel (TLS to the control plane's :15012);
	// nil: plaintext.
	Credentials credentials.TransportCredentials
	// PerRPC adds the sidecar's token to every stream; nil: none.
	PerRPC credentials.PerRPCCredentials
	Node   *corev3.Node
	// Apply validates and installs a new config. An error rejects it: the
	// client NACKs with the error and keeps the previous config.
	Apply  func(*Config) error
	Logger *slog.Logger
	// OnState, if set, hears whether the stream is up.
	OnState func(connected bool)

	// OnDemand subscribes to what the pod uses rather than to the whole
	// mesh: the index of each address it connects to (Resolve), of its
	// own addresses (Own) and the route configurations in Preload, and
	// what they name. Without it the client subscribes to every cluster.
	OnDemand bool
	// Own are the pod's addresses: their services' modes and policies
	// apply inbound, so an on-demand client subscribes to them at start
	// and the config is not complete before they came.
	Own []netip.Addr
	// Preload names route configurations (HOST:PORT, a service's host
	// name and port) an on-demand client subscribes to at start.
	Preload []string
	// Idle drops the subscription of an address that carried no traffic
	// (Used: a connection or a request) for that long (not Own's); 0:
	// never.
	Idle time.Duration
	// Pod is the sidecar's pod, "namespace/name": the client subscribes
	// to its locality (PodLocalityName), which the control plane knows
	// from the pod's node. Empty: none.
	Pod string
}

// maxAddrs bounds the addresses an on-demand client holds: beyond it a
// new address is taken as unknown without asking.
const maxAddrs = 4096

// Client is a sidecar's delta ADS client. It subscribes to every cluster,
// or on demand to the addresses the pod uses, and follows what it gets to
// the route configurations and load assignments it needs; ACKs what Apply
// accepts, NACKs what it rejects, and reconnects with jittered backoff.
// Losing the control plane keeps the last config and subscriptions.
type Client struct {
	opts    Options
	current atomic.Pointer[Config]

	mu    sync.RWMutex // guards addrs
	addrs map[netip.Addr]*addrSub
	// addrsRead is a copy of addrs for lock-free reads (Used, per
	// request); now is a coarse clock for it, set by the stream loop's
	// idle ticker.
	addrsRead atomic.Pointer[map[netip.Addr]*addrSub]
	now       atomic.Int64
	overflow  atomic.Int64  // addresses taken as unknown past maxAddrs
	kick      chan struct{} // a new address to subscribe to
	// routeNames caches routeNameOf; the stream goroutine's.
	routeNames map[*clusterv3.Cluster]string
}

// addrSub is an on-demand subscription to an address's index.
type addrSub struct {
	own  bool
	used atomic.Int64 // unix nanoseconds of the last traffic
	done chan struct{}
	// timedOut is set once a wait for the answer ended unanswered.
	timedOut atomic.Bool
	// found is set, and then done closed, once the index and what it
	// names were applied (true) or the control plane said it knows
	// nothing there (false); read once done is closed.
	found bool
}

// New returns a Client; Run connects it.
func New(opts Options) *Client {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: opts, addrs: map[netip.Addr]*addrSub{}, kick: make(chan struct{}, 1), routeNames: map[*clusterv3.Cluster]string{}}
	c.now.Store(time.Now().UnixNano())
	if opts.OnDemand {
		for _, a := range opts.Own {
			c.addrs[a.Unmap()] = &addrSub{own: true, done: make(chan struct{})}
		}
	}
	c.publishAddrs()
	cfg := emptyConfig()
	cfg.Unresolved = len(c.addrs)
	c.current.Store(cfg)
	return c
}

// publishAddrs copies addrs for Used's lock-free reads; c.mu held (or
// not yet shared).
func (c *Client) publishAddrs() {
	m := maps.Clone(c.addrs)
	c.addrsRead.Store(&m)
}

// Current returns the applied config.
func (c *Client) Current() *Config { return c.current.Load() }

// Resolve subscribes an on-demand client to ip's index on the first call
// for it and waits, at most wait, until the control plane answered: true
// once ip's services are in the applied config (and so in the sidecar's
// table), false when no service has ip, when the wait ends first, or
// without OnDemand. Once answered, later calls return at once, with no
// lock, timer or allocation (the proxy calls it per request to a
// destination it does not know); after a wait that ended unanswered (the
// control plane slow or away), later calls do not wait again until the
// answer comes.
func (c *Client) Resolve(ip netip.Addr, wait time.Duration) bool {
	if !c.opts.OnDemand {
		return false
	}
	ip = ip.Unmap()
	a := (*c.addrsRead.Load())[ip]
	if a == nil {
		c.mu.Lock()
		if a = c.addrs[ip]; a == nil {
			if len(c.addrs) >= maxAddrs {
				c.mu.Unlock()
				if n := c.overflow.Add(1); n%1000 == 1 {
					c.opts.Logger.Warn("on demand: too many addresses held; a new one is taken as unknown without asking",
						"max", maxAddrs, "addr", ip, "refused_so_far", n)
				}
				return false
			}
			a = &addrSub{done: make(chan struct{})}
			c.addrs[ip] = a
			c.publishAddrs()
			select {
			case c.kick <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
	}
	c.touch(a)
	select {
	case <-a.done:
		return a.found // written before done was closed
	default:
	}
	if a.timedOut.Load() {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-a.done:
		return a.found
	case <-t.C:
		a.timedOut.Store(true)
		return false
	}
}

// Used notes traffic to ip (a connection or a request), which keeps its
// subscription. It takes no lock: the proxy calls it per request.
func (c *Client) Used(ip netip.Addr) {
	if !c.opts.OnDemand {
		return
	}
	if a := (*c.addrsRead.Load())[ip.Unmap()]; a != nil {
		c.touch(a)
	}
}

// touch marks a used now, by the coarse clock (a write only when it
// moved).
func (c *Client) touch(a *addrSub) {
	if now := c.now.Load(); a.used.Load() < now {
		a.used.Store(now)
	}
}

// Run keeps a stream to the control plane until ctx is done.
func (c *Client) Run(ctx context.Context) error {
	creds := c.opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20)),
	}
	if c.opts.PerRPC != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(c.opts.PerRPC))
	}
	conn, err := grpc.NewClient(c.opts.Addr, opts...)
	if err != nil {
		return fmt.Errorf("xdsclient: %w", err)
	}
	defer conn.Close() //nolint:errcheck // shutting down
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := c.stream(ctx, ads)
		if c.opts.OnState != nil {
			c.opts.OnState(false)
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 30*time.Second {
			backoff = 100 * time.Millisecond // the stream was healthy
		}
		// Full jitter around the backoff: [b/2, 3b/2).
		wait := backoff/2 + rand.N(backoff)
		c.opts.Logger.Warn("xds stream ended; keeping the last config", "addr", c.opts.Addr, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 15*time.Second)
	}
}

// stream runs one ADS stream until it fails.
func (c *Client) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	s := &session{c: c, st: st, subs: map[string]map[string]bool{}, gone: map[string]bool{}}
	cur := c.current.Load()
	// Tell a (possibly restarted) control plane what we have, so it sends
	// only what changed.
	if !c.opts.OnDemand {
		if err := s.send(&discoveryv3.DeltaDiscoveryRequest{
			TypeUrl: ClusterType, InitialResourceVersions: clusterVersions(cur),
		}); err != nil {
			return err
		}
	}
	// The trust bundle, to verify peers with as it changes (root rotation).
	if err := s.send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: SecretType, ResourceNamesSubscribe: []string{RootCAName},
		InitialResourceVersions: heldVersions(cur, SecretType, sortedKeys(cur.Secrets)),
	}); err != nil {
		return err
	}
	s.subs[SecretType] = map[string]bool{RootCAName: true}
	if err := s.sync(cur, nil); err != nil {
		return err
	}

	type recv struct {
		resp *discoveryv3.DeltaDiscoveryResponse
		err  error
	}
	recvc := make(chan recv)
	go func() {
		for {
			resp, err := st.Recv()
			select {
			case recvc <- recv{resp, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var tick <-chan time.Time
	if c.opts.OnDemand && c.opts.Idle > 0 {
		t := time.NewTicker(min(max(c.opts.Idle/4, 100*time.Millisecond), time.Minute))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.kick:
			if err := s.sync(c.current.Load(), nil); err != nil {
				return err
			}
		case now := <-tick:
			c.now.Store(now.UnixNano())
			if !c.expire() {
				continue
			}
			cur := c.current.Load()
			next, want := c.prune(cur)
			if next != cur {
				if err := c.opts.Apply(next); err != nil {
					c.opts.Logger.Warn("dropping idle subscriptions", "err", err)
				} else {
					c.current.Store(next)
				}
			}
			if err := s.sync(c.current.Load(), want); err != nil {
				return err
			}
		case r := <-recvc:
			if r.err != nil {
				return r.err
			}
			if err := s.receive(r.resp); err != nil {
				return err
			}
		}
	}
}

// session is one stream's state: what it subscribed to, by type, and the
// indexes the control plane removed (no service at that address).
type session struct {
	c    *Client
	st   discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	subs map[string]map[string]bool
	gone map[string]bool
	sent bool // the node was sent
}

func (s *session) send(req *discoveryv3.DeltaDiscoveryRequest) error {
	if !s.sent {
		req.Node, s.sent = s.c.opts.Node, true
	}
	return s.st.Send(req)
}

// receive applies a response, acknowledges it and follows it with the
// subscriptions it calls for.
func (s *session) receive(resp *discoveryv3.DeltaDiscoveryResponse) error {
	c := s.c
	if c.opts.OnState != nil {
		c.opts.OnState(true)
	}
	next, err := merge(c.current.Load(), resp)
	if err == nil {
		err = checkIndexes(next, resp)
	}
	var want map[string]map[string]bool
	if err == nil {
		next, want = c.prune(next)
		next.Unresolved = c.unresolvedOwn(next, s.gone, resp)
		err = c.opts.Apply(next)
	}
	ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
	if err != nil {
		c.opts.Logger.Warn("config rejected (NACK)", "type", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(), "err", err)
		ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		return s.send(ack)
	}
	if resp.GetTypeUrl() == RouteType {
		for _, name := range resp.GetRemovedResources() {
			// Only of what it still subscribes to: the server answers
			// an unsubscription with a removal too.
			if s.subs[RouteType][name] {
				s.gone[name] = true
			}
		}
		for _, r := range resp.GetResources() {
			delete(s.gone, r.GetName())
		}
	}
	c.current.Store(next)
	if err := s.send(ack); err != nil {
		return err
	}
	c.settle(next, s.gone)
	return s.sync(next, want)
}

// sync subscribes to what cfg and the client's addresses call for (want,
// when the caller has it; nil: computed) and unsubscribes from what they
// no longer do.
func (s *session) sync(cfg *Config, want map[string]map[string]bool) error {
	if want == nil {
		want = s.c.wanted(cfg)
	}
	for _, typ := range []string{ClusterType, RouteType, EndpointType} {
		w, ok := want[typ]
		if !ok {
			continue // wildcard
		}
		have := s.subs[typ]
		first := have == nil
		if first {
			have = map[string]bool{}
			s.subs[typ] = have
		}
		var sub, unsub []string
		for name := range w {
			if !have[name] {
				sub = append(sub, name)
				have[name] = true
				delete(s.gone, name) // asked again: no answer yet
			}
		}
		for name := range have {
			if !w[name] {
				unsub = append(unsub, name)
				delete(have, name)
				delete(s.gone, name)
			}
		}
		if len(sub)+len(unsub) == 0 {
			continue // nothing to ask for (yet)
		}
		slices.Sort(sub)
		slices.Sort(unsub)
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}
		if first {
			req.InitialResourceVersions = heldVersions(cfg, typ, sub)
		}
		if err := s.send(req); err != nil {
			return err
		}
	}
	return nil
}

// heldVersions are the versions of the names the client holds: the
// server resends only what differs from its own.
func heldVersions(cfg *Config, typ string, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		var ok bool
		switch typ {
		case ClusterType:
			_, ok = cfg.Clusters[n]
			ok = ok || (n == MeshDefaultsCluster && cfg.Defaults != nil)
		case RouteType:
			_, ok = cfg.Routes[n]
		case EndpointType:
			_, ok = cfg.Endpoints[n]
		case SecretType:
			_, ok = cfg.Secrets[n]
		}
		if ok {
			out[n] = versionOf(cfg, typ, n)
		}
	}
	return out
}

// versionOf is the version the client got a resource at; "known" when it
// has none (an older config).
func versionOf(cfg *Config, typ, name string) string {
	if v := cfg.ResourceVersions[typ][name]; v != "" {
		return v
	}
	return "known"
}

// wanted returns, per type, the names the client must subscribe to for
// cfg; a type it subscribes to as a wildcard is absent.
func (c *Client) wanted(cfg *Config) map[string]map[string]bool {
	clusters, routes := map[string]bool{}, map[string]bool{}
	if c.opts.Pod != "" {
		routes[PodLocalityName(c.opts.Pod)] = true
	}
	if c.opts.OnDemand {
		clusters[MeshDefaultsCluster] = true
		c.mu.RLock()
		for ip := range c.addrs {
			name := AddressIndexName(ip)
			routes[name] = true
			if rc := cfg.Routes[name]; rc != nil {
				names, _ := IndexClusters(rc) // checked when it came
				for _, n := range names {
					clusters[n] = true
				}
			}
		}
		c.mu.RUnlock()
		for _, p := range c.opts.Preload {
			routes[p] = true
			// And the service's own cluster, which maps its VIP: its
			// routes may send everything elsewhere.
			if i := strings.LastIndexByte(p, ':'); i > 0 {
				if port, err := strconv.ParseUint(p[i+1:], 10, 16); err == nil {
					clusters[ClusterName(p[:i], uint32(port))] = true
				}
			}
		}
	} else {
		for n := range cfg.Clusters {
			clusters[n] = true
		}
	}
	// Follow clusters to their route configurations and those to the
	// clusters they send to, each once.
	queue := make([]string, 0, len(clusters)+len(routes))
	for n := range clusters {
		queue = append(queue, n)
	}
	for r := range routes {
		queue = append(queue, r)
	}
	for len(queue) > 0 {
		n := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if clusters[n] {
			if r := c.routeNameOf(cfg.Clusters[n]); r != "" && !routes[r] {
				routes[r] = true
				queue = append(queue, r)
			}
		}
		if routes[n] {
			for _, b := range routeClusters(cfg.Routes[n]) {
				if !clusters[b] && (c.opts.OnDemand || cfg.Clusters[b] != nil) {
					clusters[b] = true
					queue = append(queue, b)
				}
			}
		}
	}
	endpoints := make(map[string]bool, len(clusters))
	for n := range clusters {
		if n != MeshDefaultsCluster {
			endpoints[n] = true
		}
	}
	out := map[string]map[string]bool{RouteType: routes, EndpointType: endpoints}
	if c.opts.OnDemand {
		out[ClusterType] = clusters
	}
	return out
}

// routeNameOf is RouteNameOf, remembered per cluster resource: wanted
// runs on every response, and decoding each cluster's metadata each time
// made resolving a new address cost the sidecar time in the number of
// addresses it held. Called from the stream goroutine only.
func (c *Client) routeNameOf(cl *clusterv3.Cluster) string {
	if cl == nil {
		return ""
	}
	if r, ok := c.routeNames[cl]; ok {
		return r
	}
	if len(c.routeNames) > 2*len(c.current.Load().Clusters)+64 {
		clear(c.routeNames) // forget replaced clusters
	}
	r := RouteNameOf(cl)
	c.routeNames[cl] = r
	return r
}

// routeClusters lists the clusters a route configuration sends to, but
// the names of backends that did not resolve (InvalidClusterPrefix).
func routeClusters(rc *routev3.RouteConfiguration) []string {
	if rc == nil {
		return nil
	}
	var out []string
	add := func(n string) {
		if n != "" && !strings.HasPrefix(n, InvalidClusterPrefix) {
			out = append(out, n)
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			add(a.GetCluster())
			for _, w := range a.GetWeightedClusters().GetClusters() {
				add(w.GetName())
			}
			for _, m := range a.GetRequestMirrorPolicies() {
				add(m.GetCluster())
			}
		}
	}
	return out
}

// prune drops from cfg what the client no longer subscribes to (an
// unsubscribed resource is the client's to forget). It returns the
// pruned config and what the client wants for it (pruning leaves that
// as it was: only what it does not want goes).
func (c *Client) prune(cfg *Config) (*Config, map[string]map[string]bool) {
	want := c.wanted(cfg)
	_, odClusters := want[ClusterType]
	if !unwanted(cfg.Routes, want[RouteType]) && !unwanted(cfg.Endpoints, want[EndpointType]) &&
		(!odClusters || !unwanted(cfg.Clusters, want[ClusterType])) {
		return cfg, want
	}
	next := *cfg
	keep := func(typ string) func(string) bool {
		return func(n string) bool { return want[typ][n] }
	}
	next.Routes = filterMap(cfg.Routes, keep(RouteType))
	next.Endpoints = filterMap(cfg.Endpoints, keep(EndpointType))
	next.ResourceVersions = maps.Clone(cfg.ResourceVersions)
	next.ResourceVersions[RouteType] = keepVersions(cfg.ResourceVersions[RouteType], next.Routes)
	next.ResourceVersions[EndpointType] = keepVersions(cfg.ResourceVersions[EndpointType], next.Endpoints)
	if odClusters {
		next.Clusters = filterMap(cfg.Clusters, keep(ClusterType))
		held := next.Clusters
		if next.Defaults != nil {
			held = maps.Clone(held)
			held[MeshDefaultsCluster] = next.Defaults
		}
		next.ResourceVersions[ClusterType] = keepVersions(cfg.ResourceVersions[ClusterType], held)
	}
	return &next, want
}

// unwanted reports whether m holds a name want lacks.
func unwanted[V any](m map[string]V, want map[string]bool) bool {
	for n := range m {
		if !want[n] {
			return true
		}
	}
	return false
}

func filterMap[V any](m map[string]V, keep func(string) bool) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		if keep(k) {
			out[k] = v
		}
	}
	return out
}

// settle closes the wait of every address whose answer cfg holds: its
// index and everything the index leads to, or the word that nothing is
// there.
func (c *Client) settle(cfg *Config, gone map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ip, a := range c.addrs {
		select {
		case <-a.done:
			continue
		default:
		}
		if found, ok := answered(cfg, gone, ip); ok {
			a.found = found
			close(a.done)
		}
	}
}

// unresolvedOwn counts the pod's own addresses cfg holds no answer for
// (the response being applied included).
func (c *Client) unresolvedOwn(cfg *Config, gone map[string]bool, resp *discoveryv3.DeltaDiscoveryResponse) int {
	g := gone
	if resp.GetTypeUrl() == RouteType && len(resp.GetRemovedResources()) > 0 {
		g = maps.Clone(gone)
		for _, n := range resp.GetRemovedResources() {
			g[n] = true
		}
	}
	n := 0
	c.mu.RLock()
	defer c.mu.RUnlock()
	for ip, a := range c.addrs {
		if _, ok := answered(cfg, g, ip); a.own && !ok {
			n++
		}
	}
	return n
}

// answered reports whether cfg answers for ip, and whether anything is
// there: the index, the clusters it names with their load assignments and
// route configurations, and the clusters those send to.
func answered(cfg *Config, gone map[string]bool, ip netip.Addr) (found, ok bool) {
	name := AddressIndexName(ip)
	rc := cfg.Routes[name]
	if rc == nil {
		return false, gone[name]
	}
	names, err := IndexClusters(rc)
	if err != nil || len(names) == 0 {
		return false, true
	}
	for len(names) > 0 {
		n := names[0]
		names = names[1:]
		cl := cfg.Clusters[n]
		if cl == nil || cfg.Endpoints[n] == nil {
			return false, false
		}
		if r := RouteNameOf(cl); r != "" {
			rt := cfg.Routes[r]
			if rt == nil {
				return false, false
			}
			for _, b := range routeClusters(rt) {
				if cfg.Clusters[b] == nil || cfg.Endpoints[b] == nil {
					return false, false
				}
			}
		}
	}
	return true, true
}

// expire drops the addresses no connection used for Options.Idle; true
// when it dropped any.
func (c *Client) expire() bool {
	cutoff := time.Now().Add(-c.opts.Idle).UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	dropped := false
	for ip, a := range c.addrs {
		if !a.own && a.used.Load() < cutoff {
			delete(c.addrs, ip) // a wait still on it ends with its context
			dropped = true
		}
	}
	if dropped {
		c.publishAddrs()
	}
	return dropped
}

// checkIndexes rejects a response carrying an address index that is
// none.
func checkIndexes(cfg *Config, resp *discoveryv3.DeltaDiscoveryResponse) error {
	if resp.GetTypeUrl() != RouteType {
		return nil
	}
	for _, r := range resp.GetResources() {
		if _, ok := ParseAddressIndexName(r.GetName()); !ok {
			continue
		}
		if _, err := IndexClusters(cfg.Routes[r.GetName()]); err != nil {
			return fmt.Errorf("%w: %w", errBadResource, err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// clusterVersions are the clusters a reconnecting wildcard client says
// it holds: MeshDefaultsCluster too, so that a control plane without it
// sends its removal.
func clusterVersions(cur *Config) map[string]string {
	names := sortedKeys(cur.Clusters)
	if cur.Defaults != nil {
		names = append(names, MeshDefaultsCluster)
	}
	return heldVersions(cur, ClusterType, names)
}

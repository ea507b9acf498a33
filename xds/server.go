package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/telemetry"
)

// nodeGroup is the cache key every node shares: all proxies see the same
// mesh-wide resources.
const nodeGroup = "mesh"

// typeOrder is the order resource types are hashed and listed in.
var typeOrder = []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

// Options configure a Server.
type Options struct {
	Logger  *slog.Logger
	Metrics *telemetry.ControlPlane
	// ShutdownGrace bounds how long Serve waits for streams to end after
	// its context is done; default 5 s.
	ShutdownGrace time.Duration
	// OnRouteStatus, if set, gets what every applied snapshot made of the
	// mesh's routes (to write their status back). It is called with the
	// server's config lock held: it must not block.
	OnRouteStatus func([]RouteStatus)
}

// Server serves the resources of the latest registry snapshot over ADS.
type Server struct {
	opts   Options
	cache  cachev3.SnapshotCache
	xds    serverv3.Server
	ctx    context.Context
	cancel context.CancelFunc
	state  atomic.Pointer[state]

	mu      sync.Mutex // guards streams
	streams map[int64]*stream

	applyMu sync.Mutex // serializes translations; guards the fields below
	last    *discovery.Snapshot
	trust   Security // TrustDomain and RootCAs
}

// state is what one Apply produced; immutable.
type state struct {
	snapshot  *discovery.Snapshot
	resources Resources
	versions  map[resource.Type]string
	applied   time.Time
	routes    []RouteStatus
}

// NewServer returns a Server with no snapshot: clients wait until the
// first Apply.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 5 * time.Second
	}
	s := &Server{opts: opts, streams: make(map[int64]*stream)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Not the cache's ADS mode: it answers a request that names resources
	// only when the names cover every resource of that type in the
	// snapshot. Envoy asks for all of them, but a proxyless gRPC client
	// asks for the one listener and cluster it dials, and would get no
	// answer in a mesh of more than one service. Without it, named
	// requests get the resources they name.
	s.cache = cachev3.NewSnapshotCache(false, groupHash{}, cacheLogger{opts.Logger})
	s.xds = serverv3.NewServer(s.ctx, s.cache, &callbacks{s: s})
	return s
}

// Apply translates snap and makes it the served config. Resource types
// whose content did not change keep their version, so clients get nothing
// for them; delta clients get only the resources that changed.
func (s *Server) Apply(snap *discovery.Snapshot) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.last = snap
	return s.applyLocked()
}

// SetTrust sets the trust domain policies are written in and the trust
// bundle served as the SDS secret xdsclient.RootCAName, and serves the result.
func (s *Server) SetTrust(trustDomain string, rootCAs []byte) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.trust = Security{TrustDomain: trustDomain, RootCAs: rootCAs}
	s.reapplyLocked("trust bundle")
}

func (s *Server) reapplyLocked(what string) {
	if s.last == nil {
		return // served with the first snapshot
	}
	if err := s.applyLocked(); err != nil {
		s.opts.Logger.Error("xds: new "+what+" rejected; still serving the previous config", "err", err)
	}
}

// security is what the snapshot's security config is translated with:
// its modes and policies, the server's trust domain and bundle.
func (s *Server) security(snap *discovery.Snapshot) *Security {
	out := s.trust
	out.MTLS, out.Authorization = snap.Security.MTLS, snap.Security.Authorization
	return &out
}

func (s *Server) applyLocked() error {
	snap := s.last
	res, routes, err := TranslateRoutes(snap.Services, snap.Routes, s.security(snap))
	if err != nil {
		return err
	}
	versions := make(map[resource.Type]string, len(res))
	cs := &cachev3.Snapshot{}
	for _, typ := range typeOrder {
		v, err := hashResources(res[typ])
		if err != nil {
			return fmt.Errorf("xds: version %s: %w", typ, err)
		}
		versions[typ] = v
		cs.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, res[typ])
	}
	// cs.Consistent() is not used: it does not follow API listeners to
	// their route configurations. Translate builds every listener, route,
	// cluster and assignment together, per service port.
	prev := s.state.Load()
	s.state.Store(&state{snapshot: snap, resources: res, versions: versions, applied: time.Now(), routes: routes})
	if err := s.cache.SetSnapshot(s.ctx, nodeGroup, cs); err != nil {
		return fmt.Errorf("xds: set snapshot: %w", err)
	}
	if m := s.opts.Metrics; m != nil {
		m.SnapshotVersion.Set(float64(snap.Version))
		m.Services.Set(float64(len(snap.Services)))
	}
	if s.opts.OnRouteStatus != nil {
		s.opts.OnRouteStatus(routes)
	}
	var prevRoutes []RouteStatus
	if prev != nil {
		prevRoutes = prev.routes
	}
	for _, rs := range routes {
		if i := slices.IndexFunc(prevRoutes, func(p RouteStatus) bool { return p.Key() == rs.Key() }); i >= 0 && reflect.DeepEqual(prevRoutes[i], rs) {
			continue // reported when it changed
		}
		for _, ps := range rs.Parents {
			if !ps.Accepted.OK || !ps.ResolvedRefs.OK {
				s.opts.Logger.Warn("route not fully programmed", "route", rs.Key(), "parent", string(ps.Ref.Name),
					"accepted", ps.Accepted.Message, "resolvedRefs", ps.ResolvedRefs.Message)
			}
		}
	}
	s.opts.Logger.Info("xds snapshot applied", "version", snap.Version, "services", len(snap.Services), "routes", len(snap.Routes),
		"clusters", versions[resource.ClusterType], "endpoints", versions[resource.EndpointType])
	return nil
}

// hashResources names the content of a resource list: equal lists give
// equal versions, across restarts too.
func hashResources(items []cachetypes.Resource) (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, r := range items {
		var err error
		buf, err = opts.MarshalAppend(buf[:0], r)
		if err != nil {
			return "", err
		}
		var n [8]byte
		for i := range n {
			n[i] = byte(len(buf) >> (8 * i))
		}
		h.Write(n[:])
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// Serve answers xDS on lis until ctx is done, then stops gracefully within
// Options.ShutdownGrace.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	return s.ServeWith(ctx, lis, nil)
}

// ServeWith is Serve with more: server options (TLS credentials,
// interceptors that authenticate), and register adds other services on the
// same gRPC server (the CA).
func (s *Server) ServeWith(ctx context.Context, lis net.Listener, register func(*grpc.Server), extra ...grpc.ServerOption) error {
	g := grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 16),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}, extra...)...)
	if register != nil {
		register(g)
	}
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)

	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("xds: serve %s: %w", lis.Addr(), err)
		}
		return nil
	case <-ctx.Done():
	}
	// Streams never end by themselves: cancel them, then wait for the
	// handlers to return.
	s.cancel()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.opts.ShutdownGrace):
		g.Stop()
		<-done
	}
	return nil
}

// Close ends all streams. It is safe to call more than once and without
// Serve.
func (s *Server) Close() error {
	s.cancel()
	return nil
}

// groupHash maps every node to nodeGroup.
type groupHash struct{}

func (groupHash) ID(*corev3.Node) string { return nodeGroup }

var _ cachev3.NodeHash = groupHash{}

// cacheLogger adapts slog to go-control-plane's logger; its chatter goes
// to debug. A message is formatted only when its level is on: the cache
// logs every delta response with its resource maps, which formatted cost
// a fifth of the control plane's CPU in a push to 1,000 proxies.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) logf(level slog.Level, f string, a []any) {
	if c.l.Enabled(context.Background(), level) {
		c.l.Log(context.Background(), level, fmt.Sprintf(f, a...))
	}
}

func (c cacheLogger) Debugf(f string, a ...any) { c.logf(slog.LevelDebug, f, a) }
func (c cacheLogger) Infof(f string, a ...any)  { c.logf(slog.LevelDebug, f, a) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.logf(slog.LevelWarn, f, a) }
func (c cacheLogger) Errorf(f string, a ...any) { c.logf(slog.LevelError, f, a) }

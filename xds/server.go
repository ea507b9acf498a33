package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
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
var typeOrder = []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// Options configure a Server.
type Options struct {
	Logger  *slog.Logger
	Metrics *telemetry.ControlPlane
	// ShutdownGrace bounds how long Serve waits for streams to end after
	// its context is done; default 5 s.
	ShutdownGrace time.Duration
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
}

// state is what one Apply produced; immutable.
type state struct {
	snapshot  *discovery.Snapshot
	resources Resources
	versions  map[resource.Type]string
	applied   time.Time
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
	res, err := Translate(snap.Services)
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
	s.state.Store(&state{snapshot: snap, resources: res, versions: versions, applied: time.Now()})
	if err := s.cache.SetSnapshot(s.ctx, nodeGroup, cs); err != nil {
		return fmt.Errorf("xds: set snapshot: %w", err)
	}
	if m := s.opts.Metrics; m != nil {
		m.SnapshotVersion.Set(float64(snap.Version))
		m.Services.Set(float64(len(snap.Services)))
	}
	s.opts.Logger.Info("xds snapshot applied", "version", snap.Version, "services", len(snap.Services),
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
	g := grpc.NewServer(
		grpc.MaxConcurrentStreams(1<<16),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)

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

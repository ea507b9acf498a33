package xdsclient

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
}

// Client is a sidecar's delta ADS client: it subscribes to every cluster
// and to the load assignments of those clusters, ACKs what Apply accepts,
// NACKs what it rejects, and reconnects with jittered backoff. Losing the
// control plane keeps the last config.
type Client struct {
	opts    Options
	current atomic.Pointer[Config]
}

// New returns a Client; Run connects it.
func New(opts Options) *Client {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: opts}
	c.current.Store(emptyConfig())
	return c
}

// Current returns the applied config.
func (c *Client) Current() *Config { return c.current.Load() }

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
	cur := c.current.Load()
	// Tell a (possibly restarted) control plane what we have, so it sends
	// only what changed.
	first := &discoveryv3.DeltaDiscoveryRequest{
		Node: c.opts.Node, TypeUrl: ClusterType,
		InitialResourceVersions: clusterVersions(cur),
	}
	if err := st.Send(first); err != nil {
		return err
	}
	// Every route configuration (wildcard), for the services' resilience.
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: RouteType, InitialResourceVersions: versionsOf(cur.Routes),
	}); err != nil {
		return err
	}
	// The trust bundle, to verify peers with as it changes (root rotation).
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: SecretType, ResourceNamesSubscribe: []string{RootCAName},
		InitialResourceVersions: versionsOf(cur.Secrets),
	}); err != nil {
		return err
	}
	subscribed := map[string]bool{}
	if len(cur.Clusters) > 0 {
		names := sortedKeys(cur.Clusters)
		for _, n := range names {
			subscribed[n] = true
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{
			TypeUrl: EndpointType, ResourceNamesSubscribe: names,
			InitialResourceVersions: versionsOf(cur.Endpoints),
		}); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if c.opts.OnState != nil {
			c.opts.OnState(true)
		}
		next, err := merge(c.current.Load(), resp)
		if err == nil {
			err = c.opts.Apply(next)
		}
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if err != nil {
			c.opts.Logger.Warn("config rejected (NACK)", "type", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(), "err", err)
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			if err := st.Send(ack); err != nil {
				return err
			}
			continue
		}
		c.current.Store(next)
		if err := st.Send(ack); err != nil {
			return err
		}
		if resp.GetTypeUrl() != ClusterType {
			continue
		}
		// Follow the cluster set with the endpoint subscription.
		var sub, unsub []string
		for name := range next.Clusters {
			if !subscribed[name] {
				sub = append(sub, name)
				subscribed[name] = true
			}
		}
		for name := range subscribed {
			if _, ok := next.Clusters[name]; !ok {
				unsub = append(unsub, name)
				delete(subscribed, name)
			}
		}
		if len(sub)+len(unsub) > 0 {
			slices.Sort(sub)
			slices.Sort(unsub)
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{
				TypeUrl: EndpointType, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub,
			}); err != nil {
				return err
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// versionsOf returns a placeholder version per known resource: the
// server compares it with its own hash and resends what differs.
func versionsOf[V any](m map[string]V) map[string]string {
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = "known"
	}
	return out
}

// clusterVersions are the clusters a reconnecting client says it holds:
// MeshDefaultsCluster too, so that a control plane without it sends its
// removal.
func clusterVersions(cur *Config) map[string]string {
	out := versionsOf(cur.Clusters)
	if cur.Defaults != nil {
		out[MeshDefaultsCluster] = "known"
	}
	return out
}

package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Config is what a sidecar has applied: every cluster and its load
// assignment. It is immutable once handed to ClientOptions.Apply.
type Config struct {
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
	// Routes carry the services' timeouts, retries and fault injection.
	Routes map[string]*routev3.RouteConfiguration
	// Secrets holds the SDS secrets the client asked for: the trust
	// bundle, RootCAName.
	Secrets map[string]*tlsv3.Secret
	// Versions holds the control plane's version per type URL.
	Versions map[string]string
}

// Complete reports whether every cluster has its load assignment, and
// every cluster of a service its route configuration.
func (c *Config) Complete() bool {
	if c.Versions[resource.ClusterType] == "" || c.Versions[resource.RouteType] == "" {
		return false
	}
	for name, cl := range c.Clusters {
		if _, ok := c.Endpoints[name]; !ok {
			return false
		}
		if r := RouteNameOf(cl); r != "" && c.Routes[r] == nil {
			return false
		}
	}
	return true
}

// RouteNameOf names the RouteConfiguration of a cluster the translator
// made (its listener's name, HOST:PORT), from the cluster's metadata; ""
// for other clusters.
func RouteNameOf(c *clusterv3.Cluster) string {
	md := c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()
	host, port := md["hostname"].GetStringValue(), md["port"].GetNumberValue()
	if host == "" || port == 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d", host, int(port))
}

// ClientOptions configure a Client.
type ClientOptions struct {
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
	opts    ClientOptions
	current atomic.Pointer[Config]
}

// NewClient returns a Client; Run connects it.
func NewClient(opts ClientOptions) *Client {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: opts}
	c.current.Store(&Config{Clusters: map[string]*clusterv3.Cluster{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Routes: map[string]*routev3.RouteConfiguration{}, Secrets: map[string]*tlsv3.Secret{}, Versions: map[string]string{}})
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
		return fmt.Errorf("xds client: %w", err)
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
		Node: c.opts.Node, TypeUrl: resource.ClusterType,
		InitialResourceVersions: versionsOf(cur.Clusters),
	}
	if err := st.Send(first); err != nil {
		return err
	}
	// Every route configuration (wildcard), for the services' resilience.
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.RouteType, InitialResourceVersions: versionsOf(cur.Routes),
	}); err != nil {
		return err
	}
	// The trust bundle, to verify peers with as it changes (root rotation).
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{RootCAName},
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
			TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names,
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
		next, err := c.merge(c.current.Load(), resp)
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
		if resp.GetTypeUrl() != resource.ClusterType {
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
				TypeUrl: resource.EndpointType, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub,
			}); err != nil {
				return err
			}
		}
	}
}

// errBadResource marks a resource the client cannot decode.
var errBadResource = errors.New("bad resource")

// merge applies a delta response to a copy of cur.
func (c *Client) merge(cur *Config, resp *discoveryv3.DeltaDiscoveryResponse) (*Config, error) {
	next := &Config{
		Clusters:  cur.Clusters,
		Endpoints: cur.Endpoints,
		Routes:    cur.Routes,
		Secrets:   cur.Secrets,
		Versions:  cloneMap(cur.Versions),
	}
	switch resp.GetTypeUrl() {
	case resource.ClusterType:
		next.Clusters = cloneMap(cur.Clusters)
		for _, r := range resp.GetResources() {
			var cl clusterv3.Cluster
			if err := r.GetResource().UnmarshalTo(&cl); err != nil {
				return nil, fmt.Errorf("%w: cluster %s: %w", errBadResource, r.GetName(), err)
			}
			next.Clusters[r.GetName()] = &cl
		}
		for _, name := range resp.GetRemovedResources() {
			delete(next.Clusters, name)
		}
		// Assignments of removed clusters go with them.
		next.Endpoints = cloneMap(cur.Endpoints)
		for name := range next.Endpoints {
			if _, ok := next.Clusters[name]; !ok {
				delete(next.Endpoints, name)
			}
		}
	case resource.EndpointType:
		next.Endpoints = cloneMap(cur.Endpoints)
		for _, r := range resp.GetResources() {
			var cla endpointv3.ClusterLoadAssignment
			if err := r.GetResource().UnmarshalTo(&cla); err != nil {
				return nil, fmt.Errorf("%w: load assignment %s: %w", errBadResource, r.GetName(), err)
			}
			next.Endpoints[r.GetName()] = &cla
		}
		for _, name := range resp.GetRemovedResources() {
			delete(next.Endpoints, name)
		}
	case resource.RouteType:
		next.Routes = cloneMap(cur.Routes)
		for _, r := range resp.GetResources() {
			var rc routev3.RouteConfiguration
			if err := r.GetResource().UnmarshalTo(&rc); err != nil {
				return nil, fmt.Errorf("%w: route configuration %s: %w", errBadResource, r.GetName(), err)
			}
			next.Routes[r.GetName()] = &rc
		}
		for _, name := range resp.GetRemovedResources() {
			delete(next.Routes, name)
		}
	case resource.SecretType:
		next.Secrets = cloneMap(cur.Secrets)
		for _, r := range resp.GetResources() {
			var sec tlsv3.Secret
			if err := r.GetResource().UnmarshalTo(&sec); err != nil {
				return nil, fmt.Errorf("%w: secret %s: %w", errBadResource, r.GetName(), err)
			}
			next.Secrets[r.GetName()] = &sec
		}
		for _, name := range resp.GetRemovedResources() {
			delete(next.Secrets, name)
		}
	default:
		return nil, fmt.Errorf("%w: unexpected type %s", errBadResource, resp.GetTypeUrl())
	}
	next.Versions[resp.GetTypeUrl()] = resp.GetSystemVersionInfo()
	return next, nil
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
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

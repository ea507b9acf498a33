package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/telemetry"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// runConfig holds the flags of `sidecar run`.
type runConfig struct {
	XDSAddr        string
	NodeID         string
	PodName        string
	PodNamespace   string
	ServiceAccount string
	Locality       balancer.Locality
	OutboundAddr   string
	InboundAddr    string
	AdminAddr      string
	MetricsAddr    string
	Workload       string
	OTLPEndpoint   string
	OTLPProtocol   string
	TraceSampling  float64
	AccessLog      string
	OutboundPolicy string
	InboundDeliver string
	XDSMode        string
	OnDemandWait   time.Duration
	OnDemandIdle   time.Duration
	Preload        []string
	DrainTimeout   time.Duration
	ShutdownDelay  time.Duration
	DetectTimeout  time.Duration
	IdleTimeout    time.Duration
	HeaderTimeout  time.Duration
	MaxHeadersKB   int
	AdminMaxConns  int
	MaxConns       int
	PageOut        bool
	TrimInterval   time.Duration
	LogLevel       string
	LogFormat      string
	Identity       identityConfig
}

// identityConfig is the workload identity: where the CA is, how the
// sidecar proves who it is, and how it checks the control plane.
type identityConfig struct {
	CAAddr         string
	RootFile       string
	TokenFile      string
	TrustDomain    string
	CertTTL        time.Duration
	ControlPlaneID string
	XDSTLS         bool
	BundleFile     string
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parseRunFlags(args []string) (*runConfig, error) {
	fs := flag.NewFlagSet("sidecar run", flag.ContinueOnError)
	c := &runConfig{}
	fs.StringVar(&c.XDSAddr, "xds-addr", envOr("TENDER_XDS_ADDR", "tender-controlplane.tender-system.svc:15010"), "control plane xDS address (env TENDER_XDS_ADDR)")
	fs.StringVar(&c.NodeID, "node-id", "", "xDS node id (default POD_NAME.POD_NAMESPACE)")
	fs.StringVar(&c.PodName, "pod-name", envOr("POD_NAME", ""), "pod name (env POD_NAME; default: hostname)")
	fs.StringVar(&c.PodNamespace, "pod-namespace", envOr("POD_NAMESPACE", "default"), "pod namespace (env POD_NAMESPACE)")
	fs.StringVar(&c.ServiceAccount, "service-account", envOr("SERVICE_ACCOUNT", "default"), "service account (env SERVICE_ACCOUNT)")
	fs.StringVar(&c.Locality.Region, "region", envOr("TENDER_REGION", ""), "locality region (env TENDER_REGION)")
	fs.StringVar(&c.Locality.Zone, "zone", envOr("TENDER_ZONE", ""), "locality zone; endpoints in it are preferred (env TENDER_ZONE)")
	fs.StringVar(&c.Locality.SubZone, "subzone", envOr("TENDER_SUBZONE", ""), "locality subzone (env TENDER_SUBZONE)")
	fs.StringVar(&c.OutboundAddr, "outbound-addr", ":15001", "outbound capture listener")
	fs.StringVar(&c.InboundAddr, "inbound-addr", ":15006", "inbound capture listener")
	fs.StringVar(&c.AdminAddr, "admin-addr", ":15000", "admin listener: /ready, /config_dump, /clusters, /stats")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", ":15090", "Prometheus /metrics listener")
	fs.StringVar(&c.Workload, "workload", envOr("TENDER_WORKLOAD", ""), "workload name in metrics and spans (env TENDER_WORKLOAD; default: the pod name without a Deployment's hash suffixes)")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", envOr("TENDER_OTLP_ENDPOINT", ""), "OTLP collector host:port for spans, e.g. jaeger:4317 (env TENDER_OTLP_ENDPOINT); empty: no tracing")
	fs.StringVar(&c.OTLPProtocol, "otlp-protocol", "grpc", "OTLP protocol: grpc or http/protobuf")
	fs.Float64Var(&c.TraceSampling, "trace-sampling", 0.01, "share of requests without a trace context that start a sampled trace (0 to 1); requests with one follow it")
	fs.StringVar(&c.AccessLog, "access-log", "off", "access log on stdout: off, json or text")
	fs.StringVar(&c.InboundDeliver, "inbound-deliver", envOr("TENDER_INBOUND_DELIVER", "pod-ip"), "where inbound traffic goes: pod-ip (the pod address it was sent to; apps bound to loopback only are unreachable from the network) or loopback (127.0.0.1, the old way; env TENDER_INBOUND_DELIVER)")
	fs.StringVar(&c.OutboundPolicy, "outbound-policy", "allow-any", "unknown outbound destinations: allow-any (pass through) or registry-only (refuse)")
	fs.StringVar(&c.XDSMode, "xds-mode", envOr("TENDER_XDS_MODE", "on-demand"), "what the sidecar subscribes to: on-demand (a destination's config on the first connection to it, its own pod's at start; memory follows what the pod calls, not the mesh) or wildcard (every cluster, as Envoy; env TENDER_XDS_MODE)")
	fs.DurationVar(&c.OnDemandWait, "on-demand-timeout", 5*time.Second, "on demand: how long the first connection to a destination waits for its config before it is taken as unknown")
	fs.DurationVar(&c.OnDemandIdle, "on-demand-idle", 30*time.Minute, "on demand: drop the config of a destination no connection used this long (0: never)")
	preload := fs.String("preload", envOr("TENDER_PRELOAD", ""), "on demand: services to subscribe to at start, for destinations whose first request must not wait: comma-separated HOST:PORT, the service's host name (greeter.default.svc.cluster.local:8080; env TENDER_PRELOAD)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may take to finish")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "on SIGTERM, keep serving (not ready) this long before draining: the app of a classic (non-native) sidecar may still call out while it stops (the injector sets 5s there)")
	fs.DurationVar(&c.DetectTimeout, "detect-timeout", 100*time.Millisecond, "how long to wait for a client's first bytes before treating it as opaque TCP")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 5*time.Minute, "close a downstream HTTP keep-alive connection idle this long")
	fs.DurationVar(&c.HeaderTimeout, "request-header-timeout", 10*time.Second, "how long a client may take to send a request head once it began")
	fs.IntVar(&c.MaxHeadersKB, "max-request-headers-kb", 60, "largest request head accepted, in KiB (431 beyond)")
	fs.DurationVar(&c.TrimInterval, "trim-interval", 10*time.Second, "every interval, hand back what the sidecar holds without use: its executable's pages (they stay in the page cache; what runs comes back at once), upstream connections idle past their time, the heap's free pages; 0: never")
	fs.BoolVar(&c.PageOut, "page-out-startup", true, "once ready, hand the pages of the sidecar's own executable that starting up touched back to the kernel (madvise MADV_PAGEOUT): idle RSS 18 → 6 MiB; what runs again comes back")
	fs.IntVar(&c.MaxConns, "max-connections", 16384, "downstream connections each capture listener (inbound, outbound) keeps open at once; more are closed at accept and counted (0: no limit)")
	fs.IntVar(&c.AdminMaxConns, "admin-max-connections", defaultAdminMaxConns, "connections the admin and the metrics listener each keep open at most; more wait (0: no limit)")
	id := &c.Identity
	fs.StringVar(&id.CAAddr, "ca-addr", envOr("TENDER_CA_ADDR", ""), "control plane TLS address (:15012) to get the workload certificate from (env TENDER_CA_ADDR); empty: no mutual TLS, plaintext only")
	fs.StringVar(&id.RootFile, "ca-root-file", envOr("TENDER_CA_ROOT_FILE", ""), "PEM root certificate(s) to verify the control plane with before the first trust bundle arrives (env TENDER_CA_ROOT_FILE; env TENDER_CA_ROOT may hold the PEM itself)")
	fs.StringVar(&id.TokenFile, "token-file", envOr("TENDER_TOKEN_FILE", "/var/run/secrets/tokens/tender-token"), "token the sidecar proves its identity with: a projected service-account token (audience tender) or a bootstrap token; re-read on every request (env TENDER_TOKEN_FILE)")
	fs.StringVar(&id.TrustDomain, "trust-domain", envOr("TENDER_TRUST_DOMAIN", "cluster.local"), "SPIFFE trust domain of the mesh (env TENDER_TRUST_DOMAIN)")
	fs.DurationVar(&id.CertTTL, "cert-ttl", 0, "validity to ask for the workload certificate (renewed at half life); 0: the CA's default (24h)")
	fs.StringVar(&id.ControlPlaneID, "controlplane-identity", envOr("TENDER_CONTROLPLANE_IDENTITY", ""), "SPIFFE ID the control plane must present (env TENDER_CONTROLPLANE_IDENTITY); empty: any of the trust domain")
	fs.StringVar(&id.BundleFile, "bundle-file", envOr("TENDER_BUNDLE_FILE", ""), "file the sidecar keeps the latest trust bundle in and reads at start, so a restarted sidecar trusts a rotated root (env TENDER_BUNDLE_FILE; the injector puts it on an emptyDir)")
	fs.BoolVar(&id.XDSTLS, "xds-tls", envOr("TENDER_XDS_TLS", "") == "true", "the xDS address is the control plane's TLS port: verify it as the CA, and send the token (env TENDER_XDS_TLS=true)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if id.XDSTLS && id.CAAddr == "" {
		id.CAAddr = c.XDSAddr
	}
	if id.XDSTLS && id.ControlPlaneID == "" {
		// Else any workload of the trust domain could pose as the
		// control plane and be handed the sidecar's token. The injector
		// always sets it; a sidecar outside Kubernetes must too.
		return nil, errors.New("--xds-tls needs --controlplane-identity (env TENDER_CONTROLPLANE_IDENTITY), the SPIFFE ID the control plane presents, " +
			"e.g. spiffe://cluster.local/ns/tender-system/sa/tender-controlplane: without it the sidecar would send its token to any workload of the trust domain")
	}
	if c.MaxConns < 0 {
		return nil, fmt.Errorf("--max-connections must not be negative, got %d", c.MaxConns)
	}
	if c.AdminMaxConns < 0 {
		return nil, fmt.Errorf("--admin-max-connections must not be negative, got %d", c.AdminMaxConns)
	}
	if id.CAAddr != "" && id.RootFile == "" && os.Getenv("TENDER_CA_ROOT") == "" {
		return nil, errors.New("--ca-addr needs --ca-root-file (or env TENDER_CA_ROOT) to verify the control plane")
	}
	if id.CertTTL < 0 {
		return nil, fmt.Errorf("--cert-ttl must not be negative, got %s", id.CertTTL)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.XDSMode != "on-demand" && c.XDSMode != "wildcard" {
		return nil, fmt.Errorf("--xds-mode %q: want on-demand or wildcard", c.XDSMode)
	}
	if c.OnDemandWait <= 0 {
		return nil, fmt.Errorf("--on-demand-timeout must be positive, got %s", c.OnDemandWait)
	}
	if c.OnDemandIdle < 0 {
		return nil, fmt.Errorf("--on-demand-idle must not be negative, got %s", c.OnDemandIdle)
	}
	var err error
	if c.Preload, err = xdsclient.ParsePreload(*preload); err != nil {
		return nil, fmt.Errorf("--preload %w", err)
	}
	if c.InboundDeliver != "pod-ip" && c.InboundDeliver != "loopback" {
		return nil, fmt.Errorf("--inbound-deliver %q: want pod-ip or loopback", c.InboundDeliver)
	}
	if c.OutboundPolicy != "allow-any" && c.OutboundPolicy != "registry-only" {
		return nil, fmt.Errorf("--outbound-policy %q: want allow-any or registry-only", c.OutboundPolicy)
	}
	switch c.AccessLog {
	case "off", "json", "text":
	default:
		return nil, fmt.Errorf("--access-log %q: want off, json or text", c.AccessLog)
	}
	if c.TraceSampling < 0 || c.TraceSampling > 1 {
		return nil, fmt.Errorf("--trace-sampling %v: want 0 to 1", c.TraceSampling)
	}
	if c.OTLPProtocol != "grpc" && c.OTLPProtocol != "http/protobuf" {
		return nil, fmt.Errorf("--otlp-protocol %q: want grpc or http/protobuf", c.OTLPProtocol)
	}
	if c.PodName == "" {
		c.PodName, _ = os.Hostname()
	}
	if c.Workload == "" {
		c.Workload = workloadOf(c.PodName)
	}
	// Both name the sidecar in the peer header, metrics and spans.
	if _, ok := interceptor.ParsePeer(c.PodNamespace + "/" + c.Workload); !ok {
		return nil, fmt.Errorf("workload %q in namespace %q: both must be DNS names (lower-case letters, digits, '-', '.')", c.Workload, c.PodNamespace)
	}
	if c.NodeID == "" {
		c.NodeID = c.PodName + "." + c.PodNamespace
	}
	return c, nil
}

// ownAddrs are the pod's addresses an on-demand client subscribes to at
// start: those of the network, not loopback or link-local.
func ownAddrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range proxy.LocalAddrs() {
		if !a.IsLinkLocalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

// podHash matches the suffixes a Deployment adds to its pods' names:
// the ReplicaSet's template hash and the pod's random suffix.
var podHash = regexp.MustCompile(`^(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$`)

// workloadOf guesses a pod's workload from its name, as Istio does without
// labels: greeter-7d4b9c8f6-x2k9p → greeter.
func workloadOf(pod string) string {
	if m := podHash.FindStringSubmatch(pod); m != nil {
		return m[1]
	}
	return pod
}

func runSidecar(ctx context.Context, c *runConfig, logOut, accessOut io.Writer) error {
	applyGCDefault()
	logger, err := telemetry.NewLogger(logOut, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	self := interceptor.Peer{Workload: c.Workload, Namespace: c.PodNamespace}
	reg := prometheus.NewRegistry()
	health, err := telemetry.NewSidecar(reg)
	if err != nil {
		return err
	}
	metrics, err := interceptor.NewMetrics(reg)
	if err != nil {
		return err
	}
	resilience, err := interceptor.NewResilienceMetrics(reg)
	if err != nil {
		return err
	}
	// The order package interceptor documents: Metrics, AccessLog,
	// Tracing, Fault, Timeout, CircuitBreaker; the proxy adds
	// authorization and Retry inside them (proxy.Proxy's chain).
	chain := []interceptor.Middleware{metrics.Middleware()}
	observers := []interceptor.TCPObserver{metrics}
	if c.AccessLog != "off" {
		al, err := telemetry.NewLogger(accessOut, "info", c.AccessLog)
		if err != nil {
			return err
		}
		access := interceptor.NewAccessLog(al)
		chain = append(chain, access.Middleware())
		observers = append(observers, access)
	}
	if c.OTLPEndpoint != "" {
		tr, err := telemetry.NewTracing(telemetry.TracingOptions{
			Endpoint:      c.OTLPEndpoint,
			Protocol:      c.OTLPProtocol,
			SamplingRatio: c.TraceSampling,
			Resource: []attribute.KeyValue{
				attribute.String("service.name", c.Workload+"."+c.PodNamespace),
				attribute.String("service.namespace", c.PodNamespace),
				attribute.String("k8s.pod.name", c.PodName),
				attribute.String("k8s.namespace.name", c.PodNamespace),
				attribute.String("tender.component", "sidecar"),
			},
			Logger: logger.With("component", "tracing"),
		}, reg)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(sctx); err != nil {
				logger.Warn("flushing spans at exit", "err", err)
			}
		}()
		chain = append(chain, interceptor.Tracing(tr.Provider, telemetry.Propagator()))
	}
	chain = append(chain, interceptor.Fault, interceptor.Timeout, interceptor.CircuitBreaker(resilience))
	secMetrics, err := interceptor.NewSecurityMetrics(reg)
	if err != nil {
		return err
	}
	ident, err := newIdentity(c, logger.With("component", "identity"), health)
	if err != nil {
		return err
	}
	var meshTLS proxy.MeshTLS
	if ident != nil {
		defer ident.Close() //nolint:errcheck // shutting down
		meshTLS = ident
	}
	popts := proxy.Options{
		MTLS:           meshTLS,
		Security:       secMetrics,
		Resilience:     resilience,
		Logger:         logger.With("component", "proxy"),
		DetectTimeout:  c.DetectTimeout,
		IdleTimeout:    c.IdleTimeout,
		HeaderTimeout:  c.HeaderTimeout,
		MaxHeaderBytes: c.MaxHeadersKB << 10,
		OwnPorts:       ownPorts(c.OutboundAddr, c.InboundAddr, c.AdminAddr, c.MetricsAddr),
		RegistryOnly:   c.OutboundPolicy == "registry-only",
		InboundAddr:    inboundAddr(c.InboundDeliver),
		MaxConnections: c.MaxConns,
		Self:           self,
		Interceptors:   chain,
		TCPObservers:   observers,
	}
	// The client's Apply installs tables in the proxy, and the proxy asks
	// the client on demand: px is set before the client runs.
	var px *proxy.Proxy
	var ready, connected atomic.Bool
	md, err := structpb.NewStruct(map[string]any{
		"POD_NAME": c.PodName, "POD_NAMESPACE": c.PodNamespace, "SERVICE_ACCOUNT": c.ServiceAccount,
	})
	if err != nil {
		return err
	}
	var xdsCreds credentials.TransportCredentials
	var xdsToken credentials.PerRPCCredentials
	if ident != nil && c.Identity.XDSTLS {
		xdsCreds, xdsToken = ident.ControlPlaneCredentials(), ident.PerRPC()
	}
	node := &nodeInfo{ID: c.NodeID, Pod: c.PodNamespace + "/" + c.PodName, Flags: c.Locality}
	client := xdsclient.New(xdsclient.Options{
		Addr:        c.XDSAddr,
		Credentials: xdsCreds,
		PerRPC:      xdsToken,
		Node: &corev3.Node{
			Id: c.NodeID, Cluster: c.PodNamespace, Metadata: md,
			Locality: &corev3.Locality{Region: c.Locality.Region, Zone: c.Locality.Zone, SubZone: c.Locality.SubZone},
		},
		Logger:   logger.With("component", "xds"),
		OnDemand: c.XDSMode == "on-demand",
		Own:      ownAddrs(),
		Preload:  c.Preload,
		Idle:     c.OnDemandIdle,
		Pod:      node.Pod,
		OnState: func(up bool) {
			connected.Store(up)
			health.XDSConnected.Set(map[bool]float64{false: 0, true: 1}[up])
		},
		Apply: func(cfg *xdsclient.Config) error {
			local, _ := node.locality(cfg)
			t, err := proxy.BuildTable(cfg, px.Table(), local)
			if err == nil && ident != nil && c.Identity.XDSTLS {
				// Only from a control plane the sidecar verified: a
				// bundle over plaintext xDS could add any root.
				err = applyTrustBundle(cfg, ident, c.Identity.BundleFile, logger)
			}
			if err != nil {
				health.ConfigRejected.Inc()
				return err
			}
			if prev := px.Table(); !slices.Equal(t.Refused, prev.Refused) {
				for _, r := range t.Refused {
					logger.Warn("route not followed: it matches nothing, or answers 500", "reason", r)
				}
			}
			px.SetTable(t)
			health.Applied(cfg.Versions, len(cfg.Clusters))
			if cfg.Complete() {
				px.OpenInbound() // modes and policies are known
			}
			if cfg.Complete() && !ready.Swap(true) {
				logger.Info("first complete config applied; ready", "clusters", len(cfg.Clusters))
				if c.PageOut {
					// A second later, when the first connections' code ran.
					time.AfterFunc(time.Second, func() { releaseStartupPages(logger) })
				}
				if c.TrimInterval > 0 {
					go trimLoop(ctx, c.TrimInterval, px, logger)
				}
			}
			return nil
		},
	})
	if c.XDSMode == "on-demand" {
		popts.OnDemand, popts.OnDemandTimeout = client, c.OnDemandWait
	}
	px = proxy.New(popts)

	var lc net.ListenConfig
	outLis, err := lc.Listen(ctx, "tcp", c.OutboundAddr)
	if err != nil {
		return fmt.Errorf("outbound listener: %w", err)
	}
	inLis, err := lc.Listen(ctx, "tcp", c.InboundAddr)
	if err != nil {
		outLis.Close()
		return fmt.Errorf("inbound listener: %w", err)
	}
	adminLis, err := lc.Listen(ctx, "tcp", c.AdminAddr)
	if err != nil {
		outLis.Close()
		inLis.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	metricsLis, err := lc.Listen(ctx, "tcp", c.MetricsAddr)
	if err != nil {
		outLis.Close()
		inLis.Close()
		adminLis.Close()
		return fmt.Errorf("metrics listener: %w", err)
	}
	admin := adminServer(newAdmin(px, client, &ready, &connected, ident, node))
	metricsSrv := adminServer(metricsHandler(reg))
	adminLis, metricsLis = limitListener(adminLis, c.AdminMaxConns), limitListener(metricsLis, c.AdminMaxConns)
	gc := currentGC()
	logger.Info("sidecar starting", "node", c.NodeID, "workload", self.String(), "xds", c.XDSAddr,
		"outbound", outLis.Addr().String(), "inbound", inLis.Addr().String(), "admin", adminLis.Addr().String(),
		"metrics", metricsLis.Addr().String(), "otlp", c.OTLPEndpoint, "access_log", c.AccessLog,
		"gogc", gc.Percent, "gomemlimit", gc.limitString())

	runCtx, stopXDS := context.WithCancel(context.Background())
	defer stopXDS()
	// A component that dies (a listener that cannot accept any more, the
	// xDS client) takes readiness with it, and the sidecar exits non-zero
	// after draining what it can.
	g := new(errgroup.Group)
	died := make(chan error, 1)
	run := func(f func() error) {
		g.Go(func() error {
			err := f()
			if err != nil {
				select {
				case died <- err:
				default:
				}
			}
			return err
		})
	}
	run(func() error { return client.Run(runCtx) })
	if ident != nil {
		run(func() error { return ident.Run(runCtx) })
	}
	run(func() error { return px.Serve(outLis, proxy.Outbound) })
	run(func() error { return px.Serve(inLis, proxy.Inbound) })
	for _, srv := range []struct {
		s *http.Server
		l net.Listener
	}{{admin, adminLis}, {metricsSrv, metricsLis}} {
		run(func() error {
			if err := srv.s.Serve(srv.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}

	var fatal error
	select {
	case <-ctx.Done():
	case fatal = <-died:
		logger.Error("a component stopped; not ready, draining and exiting", "err", fatal)
	}
	// Drain: not ready any more, stop accepting, let in-flight work finish.
	ready.Store(false)
	if c.ShutdownDelay > 0 && fatal == nil {
		// A classic sidecar gets SIGTERM with its app, which may still
		// call out (and be called, until its endpoint is gone) while it
		// stops: keep serving a while, as Istio's termination drain does.
		logger.Info("not ready; serving on before the drain", "delay", c.ShutdownDelay)
		select {
		case <-time.After(c.ShutdownDelay):
		case fatal = <-died:
			logger.Error("a component stopped; draining and exiting", "err", fatal)
		}
	}
	logger.Info("draining", "timeout", c.DrainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer cancel()
	drainErr := px.Shutdown(drainCtx)
	stopXDS()
	admin.Shutdown(drainCtx)      //nolint:errcheck // the admin port closing is all we need
	metricsSrv.Shutdown(drainCtx) //nolint:errcheck // likewise
	if err := g.Wait(); err != nil {
		return err
	}
	if fatal != nil {
		return fatal
	}
	if drainErr != nil {
		logger.Warn("drain timed out; closed what was left", "err", drainErr)
	}
	logger.Info("sidecar stopped")
	return nil
}

// ownPorts are the ports of the sidecar's listener addresses.
func ownPorts(addrs ...string) []uint16 {
	var out []uint16
	for _, a := range addrs {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); err == nil && n > 0 {
			out = append(out, uint16(n))
		}
	}
	return out
}

// inboundAddr is proxy.Options.InboundAddr for --inbound-deliver.
func inboundAddr(deliver string) netip.Addr {
	if deliver == "loopback" {
		return netip.MustParseAddr("127.0.0.1")
	}
	return netip.Addr{} // the pod address each connection was sent to
}

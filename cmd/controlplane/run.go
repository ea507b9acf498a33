package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/consul"
	"github.com/tender-mesh/tender/discovery/dns"
	"github.com/tender-mesh/tender/discovery/eureka"
	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/discovery/kube"
	"github.com/tender-mesh/tender/security/authz"
	seckube "github.com/tender-mesh/tender/security/kube"
	"github.com/tender-mesh/tender/telemetry"
	"github.com/tender-mesh/tender/xds"
)

// run wires sources → registry → xDS server and the admin HTTP server, and
// serves until ctx is done.
func run(ctx context.Context, cfg *config, logOut io.Writer) error {
	logger, err := telemetry.NewLogger(logOut, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("register go metrics: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("register process metrics: %w", err)
	}
	metrics, err := telemetry.NewControlPlane(reg)
	if err != nil {
		return err
	}

	// The order is the precedence on a name two sources report: the
	// operator's mesh.yaml, then Kubernetes, then Consul, then Eureka, then
	// DNS.
	var sources []discovery.Source
	var dnsSrc *dns.Source
	if cfg.ConfigFile != "" {
		dnsSrc = dns.New(dns.Options{Servers: cfg.DNSServers, DefaultRefresh: cfg.DNSRefresh, Logger: logger.With("source", "dns")})
		sources = append(sources, file.New(file.Options{Path: cfg.ConfigFile, DNS: dnsSrc, Logger: logger.With("source", "file")}))
	}
	var client kubernetes.Interface
	var dyn dynamic.Interface
	var gateway gwclient.Interface
	if cfg.Kubernetes == "on" {
		kc, err := kubeClient(cfg.Kubeconfig)
		if err != nil {
			return err
		}
		client, dyn, gateway = kc.core, kc.dynamic, kc.gateway
		src, err := kube.New(kube.Options{Client: client, Gateway: gateway, Namespaces: cfg.WatchNamespaces, Resync: cfg.KubeResync,
			Logger: logger.With("source", "kubernetes")})
		if err != nil {
			return err
		}
		sources = append(sources, src)
	}
	if cfg.Consul.Addr != "" {
		cfg.Consul.Logger = logger.With("source", "consul")
		src, err := consul.New(cfg.Consul)
		if err != nil {
			return err
		}
		sources = append(sources, src)
	}
	if len(cfg.Eureka.URLs) > 0 {
		cfg.Eureka.Logger = logger.With("source", "eureka")
		src, err := eureka.New(cfg.Eureka)
		if err != nil {
			return err
		}
		sources = append(sources, src)
	}
	if dnsSrc != nil {
		sources = append(sources, dnsSrc)
	}
	if len(sources) == 0 {
		return errors.New("no discovery source: give --config-file, --kubeconfig (or run in a pod), --consul-addr, --eureka-url, or several")
	}
	names := make([]string, len(sources))
	for i, s := range sources {
		names[i] = s.Name()
	}
	var securitySources []string
	if dyn != nil {
		// AuthorizationPolicies come from an informer of their own: no
		// config is served before it has synced (or found no CRD).
		securitySources = append(securitySources, kube.Name)
	}
	registry := discovery.New(discovery.Options{
		Debounce:        cfg.Debounce,
		SecuritySources: securitySources,
		Sources:         names,
		Logger:          logger.With("component", "registry"),
		OnConflict:      func(discovery.Conflict) { metrics.Conflicts.Inc() },
	})
	xdsOpts := xds.Options{Logger: logger.With("component", "xds"), Metrics: metrics}
	// What tender made of each HTTPRoute and GRPCRoute goes back into the
	// route's status, as a Gateway API implementation does.
	var routeStatus *routeStatusWriter
	if gateway != nil {
		routeStatus = newRouteStatusWriter(routeStatusOptions{Client: gateway, Namespaces: cfg.WatchNamespaces, Resync: cfg.KubeResync,
			Synced: func() bool { return registry.Status()[kube.Name].Synced }, Logger: logger.With("component", "route-status")})
		xdsOpts.OnRouteStatus = routeStatus.Update
	}
	xdsServer := xds.NewServer(xdsOpts)
	defer xdsServer.Close() //nolint:errcheck // Close only cancels streams
	var ca *mesh
	if cfg.CA.Addr == "" {
		cfg.Webhook.Inject.MTLS = false // no CA: injected sidecars speak plaintext
	} else {
		cfg.CA.Hosts = cfg.Webhook.hosts()
		if ca, err = newMesh(ctx, cfg.CA, cfg.Webhook.Namespace, client, reg, logger.With("component", "ca")); err != nil {
			return err
		}
		xdsServer.SetTrust(ca.ca.TrustDomain(), ca.ca.Bundle())
		// Injected sidecars check this control plane with the bundle and
		// its identity.
		inj := &cfg.Webhook.Inject
		inj.RootCAs, inj.TrustDomain, inj.ControlPlaneID = ca.ca.Bundle, ca.ca.TrustDomain(), ca.self.String()
		ca.ca.OnBundleChange(func() {
			logger.Info("trust bundle changed; pushing it to the sidecars (SDS ROOTCA)")
			xdsServer.SetTrust(ca.ca.TrustDomain(), ca.ca.Bundle())
			ca.resign()
		})
	}
	registry.Subscribe(func(snap *discovery.Snapshot) {
		if err := xdsServer.Apply(snap); err != nil {
			logger.Error("xds snapshot rejected; still serving the previous one", "version", snap.Version, "err", err)
		}
	})

	// Bind both ports before anything runs, so a port in use is an
	// immediate, clear error.
	var lc net.ListenConfig
	// Plaintext ADS shows every service, endpoint and policy to any pod
	// that can reach it; --xds-addr "" serves ADS on the TLS port only.
	var xdsLis net.Listener
	if cfg.XDSAddr != "" {
		if xdsLis, err = lc.Listen(ctx, "tcp", cfg.XDSAddr); err != nil {
			return fmt.Errorf("xds listener: %w", err)
		}
		defer xdsLis.Close()
	}
	var tlsLis net.Listener
	if ca != nil {
		if tlsLis, err = lc.Listen(ctx, "tcp", cfg.CA.Addr); err != nil {
			return fmt.Errorf("xds tls listener: %w", err)
		}
		defer tlsLis.Close()
	}
	adminLis, err := lc.Listen(ctx, "tcp", cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	defer adminLis.Close()
	var webhookLis net.Listener
	if client != nil && cfg.Webhook.Addr != "" {
		if webhookLis, err = lc.Listen(ctx, "tcp", cfg.Webhook.Addr); err != nil {
			return fmt.Errorf("webhook listener: %w", err)
		}
		defer webhookLis.Close()
	}
	admin := &http.Server{
		Handler:           newAdmin(reg, registry, xdsServer, ca),
		ReadHeaderTimeout: 10 * time.Second,
	}
	xdsAddr, tlsAddr := "", ""
	if xdsLis != nil {
		xdsAddr = xdsLis.Addr().String()
	}
	if tlsLis != nil {
		tlsAddr = tlsLis.Addr().String()
	}
	logger.Info("control plane starting", "xds", xdsAddr, "xds_tls", tlsAddr, "metrics", adminLis.Addr().String(), "sources", names)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return registry.Run(ctx) })
	for _, src := range sources {
		g.Go(func() error {
			if err := src.Run(ctx, &countingSink{registry, metrics}); err != nil {
				return fmt.Errorf("source %s: %w", src.Name(), err)
			}
			return nil
		})
	}
	if xdsLis != nil {
		g.Go(func() error { return xdsServer.Serve(ctx, xdsLis) })
	}
	if ca != nil {
		g.Go(func() error { return ca.serve(ctx, xdsServer, tlsLis) })
		g.Go(func() error { ca.ca.Watch(ctx, 5*time.Second); return nil })
	}
	if routeStatus != nil {
		g.Go(func() error { return routeStatus.Run(ctx) })
	}
	if dyn != nil {
		g.Go(func() error {
			return seckube.Watch(ctx, dyn, cfg.WatchNamespaces, logger.With("source", "kubernetes"), func(ps []authz.Policy) {
				registry.UpdateSecurity(kube.Name, discovery.Security{Authorization: ps})
			})
		})
	}
	if webhookLis != nil {
		g.Go(func() error {
			return serveWebhook(ctx, cfg.Webhook, client, webhookLis, metrics, logger.With("component", "injector"))
		})
	}
	g.Go(func() error {
		if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return admin.Shutdown(shutdownCtx)
	})
	err = g.Wait()
	logger.Info("control plane stopped")
	return err
}

// countingSink counts source errors on their way to the registry, which
// takes services, routes and security config alike.
type countingSink struct {
	*discovery.Registry
	metrics *telemetry.ControlPlane
}

func (s *countingSink) ReportError(source string, err error) {
	s.metrics.SourceErrors.WithLabelValues(source).Inc()
	s.metrics.SourceHealthy.WithLabelValues(source).Set(0)
	s.Registry.ReportError(source, err)
}

func (s *countingSink) Update(source string, services []discovery.Service) {
	s.metrics.SourceHealthy.WithLabelValues(source).Set(1)
	s.Registry.Update(source, services)
}

var (
	_ discovery.Sink         = (*countingSink)(nil)
	_ discovery.SecuritySink = (*countingSink)(nil)
)

// kubeClients are the control plane's clients of one cluster.
type kubeClients struct {
	core    kubernetes.Interface
	dynamic dynamic.Interface
	// gateway reads the Gateway API's routes and writes their status.
	gateway gwclient.Interface
}

// kubeClient connects to the cluster of kubeconfig, or to the one the pod
// runs in.
func kubeClient(kubeconfig string) (*kubeClients, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	rc.UserAgent = "tender-controlplane"
	rc.QPS, rc.Burst = 50, 100
	kc := &kubeClients{}
	if kc.core, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if kc.dynamic, err = dynamic.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if kc.gateway, err = gwclient.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("kubernetes: gateway api: %w", err)
	}
	return kc, nil
}

// Command controlplane watches the discovery sources and serves the mesh
// over xDS to tender sidecars, proxyless gRPC clients and Envoy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tender-mesh/tender/discovery/consul"
	"github.com/tender-mesh/tender/discovery/eureka"
	"github.com/tender-mesh/tender/inject"
)

// config holds every flag of the control plane.
type config struct {
	XDSAddr     string
	MetricsAddr string
	ConfigFile  string
	Debounce    time.Duration
	DNSServers  []string
	DNSRefresh  time.Duration
	LogLevel    string
	LogFormat   string
	Consul      consul.Options
	Eureka      eureka.Options
	// Kubernetes is on, off or auto (on inside a pod or with a
	// kubeconfig).
	Kubernetes      string
	Kubeconfig      string
	WatchNamespaces []string
	KubeResync      time.Duration
	Webhook         webhookConfig
	CA              caConfig
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	c := &config{}
	fs.StringVar(&c.XDSAddr, "xds-addr", ":15010", "address of the plaintext xDS (ADS) gRPC server; it shows the whole topology and policy set to any caller; empty: ADS on --xds-tls-addr only")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", ":15014", "address of /metrics, /healthz, /readyz and /debug/*")
	fs.StringVar(&c.ConfigFile, "config-file", "", "mesh.yaml to read services from and watch, or a directory whose *.yaml files are read as one (file source)")
	fs.DurationVar(&c.Debounce, "debounce", 100*time.Millisecond, "quiet time the registry waits for after a change before it pushes")
	var dnsServers string
	fs.StringVar(&dnsServers, "dns-servers", "", "comma-separated host:port DNS servers for the dns source (default: /etc/resolv.conf)")
	fs.DurationVar(&c.DNSRefresh, "dns-refresh", 30*time.Second, "longest time between two resolutions of a DNS-discovered service (TTLs shorten it)")
	fs.StringVar(&c.Consul.Addr, "consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent HTTP address (host:port or http(s) URL) to discover services from (env CONSUL_HTTP_ADDR); empty: no Consul source")
	fs.StringVar(&c.Consul.Token, "consul-token", os.Getenv("CONSUL_HTTP_TOKEN"), "Consul ACL token (env CONSUL_HTTP_TOKEN)")
	fs.StringVar(&c.Consul.TokenFile, "consul-token-file", os.Getenv("CONSUL_HTTP_TOKEN_FILE"), "file holding the Consul ACL token, read on every request (env CONSUL_HTTP_TOKEN_FILE)")
	fs.StringVar(&c.Consul.CAFile, "consul-ca-file", os.Getenv("CONSUL_CACERT"), "CA certificate to verify an https Consul agent (env CONSUL_CACERT)")
	fs.StringVar(&c.Consul.CertFile, "consul-cert-file", os.Getenv("CONSUL_CLIENT_CERT"), "client certificate for the Consul agent (env CONSUL_CLIENT_CERT)")
	fs.StringVar(&c.Consul.KeyFile, "consul-key-file", os.Getenv("CONSUL_CLIENT_KEY"), "client key for the Consul agent (env CONSUL_CLIENT_KEY)")
	fs.StringVar(&c.Consul.Datacenter, "consul-datacenter", "", "Consul datacenter to watch (default: the agent's)")
	fs.StringVar(&c.Consul.Namespace, "consul-namespace", "default", "tender namespace of Consul services without a tender.namespace tag or tender_namespace meta")
	fs.StringVar(&c.Consul.ZoneMetaKey, "consul-zone-meta-key", "zone", "Consul node meta key holding the zone")
	fs.BoolVar(&c.Consul.IncludeWarning, "consul-include-warning", false, "also serve instances whose checks are warning (default: passing only)")
	fs.DurationVar(&c.Consul.Wait, "consul-wait", time.Minute, "longest wait of one Consul blocking query")
	fs.Func("eureka-url", "Eureka server service URL (http(s)://[USER:PASSWORD@]HOST:PORT/eureka); repeat it (or separate with commas) for failover in order; none: no Eureka source", func(v string) error {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				c.Eureka.URLs = append(c.Eureka.URLs, u)
			}
		}
		return nil
	})
	fs.DurationVar(&c.Eureka.Refresh, "eureka-refresh", 30*time.Second, "time between two Eureka registry fetches (deltas after the first)")
	fs.StringVar(&c.Eureka.Namespace, "eureka-namespace", "default", "tender namespace of Eureka instances without tender.dev/namespace metadata")
	fs.StringVar(&c.Eureka.Region, "eureka-region", "", "region of the Eureka servers' instances (their endpoints' locality region)")
	fs.StringVar(&c.Eureka.UsernameFile, "eureka-username-file", "", "file holding the Eureka basic-auth user, for URLs without one; read on every request")
	fs.StringVar(&c.Eureka.PasswordFile, "eureka-password-file", "", "file holding the Eureka basic-auth password, with --eureka-username-file")
	fs.StringVar(&c.Eureka.CAFile, "eureka-ca-file", "", "CA certificate to verify https Eureka servers")
	fs.StringVar(&c.Eureka.CertFile, "eureka-cert-file", "", "client certificate for the Eureka servers")
	fs.StringVar(&c.Eureka.KeyFile, "eureka-key-file", "", "client key for the Eureka servers")
	fs.StringVar(&c.Kubernetes, "kubernetes", "auto", "Kubernetes source: on, off, or auto (on when running in a pod or given --kubeconfig)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster to watch; empty: the pod's service account")
	var watchNamespaces string
	fs.StringVar(&watchNamespaces, "watch-namespaces", "", "comma-separated namespaces whose Services the Kubernetes source watches; empty: all")
	fs.DurationVar(&c.KubeResync, "kube-resync", 10*time.Minute, "how often the Kubernetes informers re-deliver every object, and route statuses are compared with the live routes again; 0 turns it off")
	w := &c.Webhook
	podNamespace := envOr("POD_NAMESPACE", "tender-system")
	fs.StringVar(&w.Addr, "webhook-addr", ":15017", "sidecar injector (mutating admission webhook, /inject) HTTPS address; served with the Kubernetes source; empty: off")
	fs.StringVar(&w.CertFile, "webhook-cert-file", "", "injector TLS certificate (e.g. from cert-manager, reloaded when it changes); empty: keep one in --webhook-secret")
	fs.StringVar(&w.KeyFile, "webhook-key-file", "", "injector TLS key, with --webhook-cert-file")
	fs.StringVar(&w.Secret, "webhook-secret", "tender-webhook-tls", "Secret (in the control plane's namespace) holding the injector certificate the control plane makes and shares between replicas")
	fs.StringVar(&w.ConfigName, "webhook-config-name", "tender-sidecar-injector", "MutatingWebhookConfiguration whose caBundle the control plane keeps set to its certificate's CA")
	fs.StringVar(&w.Service, "webhook-service", "tender-controlplane", "Service name the API server calls the injector by (the certificate's name)")
	fs.StringVar(&w.Namespace, "namespace", podNamespace, "the control plane's namespace (env POD_NAMESPACE)")
	var webhookHosts string
	fs.StringVar(&webhookHosts, "webhook-hosts", "", "comma-separated extra DNS names or IPs for the injector certificate")
	fs.Int64Var(&w.MaxRequestBytes, "webhook-max-request-bytes", inject.DefaultMaxReviewBytes, "largest AdmissionReview the injector reads (the API server takes no object over 3 MiB)")
	fs.IntVar(&w.MaxConcurrent, "webhook-max-concurrent", 8, "reviews the injector decides at once; more wait for a slot within --webhook-timeout")
	fs.DurationVar(&w.Timeout, "webhook-timeout", 30*time.Second, "time the injector takes at most to read, decide and answer a review (the API server waits at most 30 s)")
	ca := &c.CA
	fs.StringVar(&ca.Addr, "xds-tls-addr", ":15012", "address of the TLS xDS server and the CA (sidecars send a token); empty: off, and no mutual TLS in the mesh")
	fs.StringVar(&ca.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh's identities")
	fs.StringVar(&ca.CertFile, "ca-cert-file", "", "the operator's signing certificate (a root, or an intermediate followed by its chain), PEM; reloaded when it changes; empty: the control plane makes its own root")
	fs.StringVar(&ca.KeyFile, "ca-key-file", "", "the key of --ca-cert-file, PEM")
	fs.StringVar(&ca.RootsFile, "ca-roots-file", "", "more trusted roots, PEM (the previous root while a rotation overlaps; the root of an intermediate --ca-cert-file); reloaded when it changes")
	fs.StringVar(&ca.Dir, "ca-dir", "", "directory the self-made root is kept in (root-cert.pem, root-key.pem) across restarts")
	fs.StringVar(&ca.Secret, "ca-secret", "", "Secret (in the control plane's namespace) the self-made root is kept in and shared between replicas")
	fs.DurationVar(&ca.WorkloadTTL, "workload-cert-ttl", 24*time.Hour, "validity of workload certificates when the sidecar asks for none")
	fs.DurationVar(&ca.MaxWorkloadTTL, "max-workload-cert-ttl", 7*24*time.Hour, "longest validity a sidecar may ask for")
	fs.StringVar(&ca.BootstrapTokens, "bootstrap-tokens-file", "", "file of lines TOKEN NAMESPACE SERVICE_ACCOUNT: tokens sidecars outside Kubernetes prove their identity with; re-read when it changes")
	var audiences string
	fs.StringVar(&audiences, "token-audiences", "tender", "comma-separated audiences a service-account token must be for (TokenReview)")
	fs.StringVar(&ca.ServiceAccount, "service-account", envOr("SERVICE_ACCOUNT", "tender-controlplane"), "the control plane's service account: its SPIFFE ID on the TLS xDS port (env SERVICE_ACCOUNT)")
	fs.DurationVar(&ca.AuthFailureTTL, "auth-failure-cache-ttl", 10*time.Second, "how long a refused token is refused from memory, without another TokenReview; 0: not remembered")
	fs.Float64Var(&ca.PeerRate, "peer-rate-limit", 10, "calls per second each peer address may make to the TLS xDS port and the CA (bursts of twice that); 0: no limit")
	var sidecar inject.Flags
	sidecar.Register(fs)
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if dnsServers != "" {
		c.DNSServers = strings.Split(dnsServers, ",")
	}
	if watchNamespaces != "" {
		for _, ns := range strings.Split(watchNamespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				c.WatchNamespaces = append(c.WatchNamespaces, ns)
			}
		}
	}
	switch c.Kubernetes {
	case "auto":
		c.Kubernetes = "off"
		if c.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			c.Kubernetes = "on"
		}
	case "on", "off":
	default:
		return nil, fmt.Errorf("--kubernetes must be on, off or auto, got %q", c.Kubernetes)
	}
	for _, a := range strings.Split(audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			ca.TokenAudiences = append(ca.TokenAudiences, a)
		}
	}
	if (ca.CertFile == "") != (ca.KeyFile == "") {
		return nil, errors.New("--ca-cert-file and --ca-key-file go together")
	}
	if ca.WorkloadTTL <= 0 || ca.MaxWorkloadTTL < ca.WorkloadTTL {
		return nil, fmt.Errorf("--workload-cert-ttl (%s) must be positive and at most --max-workload-cert-ttl (%s)", ca.WorkloadTTL, ca.MaxWorkloadTTL)
	}
	if c.XDSAddr == "" && ca.Addr == "" {
		return nil, errors.New("--xds-addr and --xds-tls-addr are both empty: nothing would serve xDS")
	}
	if ca.AuthFailureTTL < 0 || ca.PeerRate < 0 {
		return nil, fmt.Errorf("--auth-failure-cache-ttl (%s) and --peer-rate-limit (%g) must not be negative", ca.AuthFailureTTL, ca.PeerRate)
	}
	ca.PeerBurst = max(1, int(2*ca.PeerRate))
	if webhookHosts != "" {
		for _, h := range strings.Split(webhookHosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				w.Hosts = append(w.Hosts, h)
			}
		}
	}
	if w.MaxRequestBytes <= 0 || w.MaxConcurrent <= 0 || w.Timeout <= 0 {
		return nil, fmt.Errorf("--webhook-max-request-bytes (%d), --webhook-max-concurrent (%d) and --webhook-timeout (%s) must be positive",
			w.MaxRequestBytes, w.MaxConcurrent, w.Timeout)
	}
	if (w.CertFile == "") != (w.KeyFile == "") {
		return nil, errors.New("--webhook-cert-file and --webhook-key-file go together")
	}
	inj, err := sidecar.Config(w.Namespace)
	if err != nil {
		return nil, err
	}
	w.Inject = inj
	if c.KubeResync < 0 {
		return nil, fmt.Errorf("--kube-resync must not be negative, got %s", c.KubeResync)
	}
	if c.Debounce <= 0 {
		return nil, fmt.Errorf("--debounce must be positive, got %s", c.Debounce)
	}
	if c.Consul.Wait <= 0 {
		return nil, fmt.Errorf("--consul-wait must be positive, got %s", c.Consul.Wait)
	}
	if c.Eureka.Refresh <= 0 {
		return nil, fmt.Errorf("--eureka-refresh must be positive, got %s", c.Eureka.Refresh)
	}
	if (c.Eureka.UsernameFile == "") != (c.Eureka.PasswordFile == "") {
		return nil, errors.New("--eureka-username-file and --eureka-password-file go together")
	}
	if c.DNSRefresh <= 0 {
		return nil, fmt.Errorf("--dns-refresh must be positive, got %s", c.DNSRefresh)
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

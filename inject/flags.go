package inject

import (
	"flag"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Flags are the command-line flags that make a Config; the control
// plane's injector and `tenderctl inject` share them.
type Flags struct {
	image, pullPolicy, xdsAddr       string
	native                           bool
	logLevel, accessLog, otlp, ratio string
	drain                            time.Duration
	cpu, mem, cpuLimit, memLimit     string
	mtls                             bool
	caAddr, rootFile                 string
	audience                         string
}

// Register adds the --sidecar-* and --native-sidecar flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.image, "sidecar-image", "ghcr.io/tender-mesh/sidecar:latest", "image of the injected sidecar (and its init container)")
	fs.StringVar(&f.pullPolicy, "sidecar-image-pull-policy", "IfNotPresent", "pull policy of the injected containers: Always, IfNotPresent or Never")
	fs.BoolVar(&f.native, "native-sidecar", true, "inject the sidecar as a native sidecar (init container with restartPolicy Always, Kubernetes 1.29+); false: a regular container with a postStart wait")
	fs.StringVar(&f.xdsAddr, "sidecar-xds-addr", "", "xDS address injected sidecars connect to (default tender-controlplane.NAMESPACE.svc:15010)")
	fs.StringVar(&f.logLevel, "sidecar-log-level", "info", "log level of injected sidecars")
	fs.StringVar(&f.accessLog, "sidecar-access-log", "off", "access log of injected sidecars: off, json or text")
	fs.StringVar(&f.otlp, "sidecar-otlp-endpoint", "", "OTLP collector host:port injected sidecars send spans to; empty: no tracing")
	fs.StringVar(&f.ratio, "sidecar-trace-sampling", "", "--trace-sampling of injected sidecars (default theirs)")
	fs.DurationVar(&f.drain, "sidecar-drain-timeout", 30*time.Second, "drain timeout of injected sidecars (the pod's grace period is raised to fit)")
	fs.StringVar(&f.cpu, "sidecar-cpu", "50m", "CPU request of injected sidecars")
	fs.StringVar(&f.mem, "sidecar-memory", "32Mi", "memory request of injected sidecars")
	fs.StringVar(&f.cpuLimit, "sidecar-cpu-limit", "", "CPU limit of injected sidecars; empty: none")
	fs.StringVar(&f.memLimit, "sidecar-memory-limit", "256Mi", "memory limit of injected sidecars; empty: none")
	fs.BoolVar(&f.mtls, "sidecar-mtls", true, "injected sidecars get a workload certificate and speak mutual TLS (xDS over TLS, a projected service-account token); false: plaintext")
	fs.StringVar(&f.caAddr, "sidecar-ca-addr", "", "the control plane's TLS address injected sidecars connect to (default tender-controlplane.NAMESPACE.svc:15012)")
	fs.StringVar(&f.audience, "sidecar-token-audience", "tender", "audience of the service-account token injected sidecars present to the CA")
	fs.StringVar(&f.rootFile, "sidecar-ca-root-file", "", "PEM root certificate injected sidecars check the control plane with (tenderctl inject; the control plane uses its own CA's)")
}

// Config checks the parsed flags; the xDS address defaults to the
// control plane's Service in namespace.
func (f *Flags) Config(namespace string) (Config, error) {
	c := Config{
		Image: f.image, XDSAddr: f.xdsAddr, NativeSidecar: f.native, LogLevel: f.logLevel, AccessLog: f.accessLog,
		OTLPEndpoint: f.otlp, TraceSampling: f.ratio, DrainTimeout: f.drain,
		MTLS: f.mtls, CAAddr: f.caAddr, TokenAudience: f.audience, TrustDomain: "cluster.local",
	}
	if c.CAAddr == "" {
		c.CAAddr = "tender-controlplane." + namespace + ".svc:15012"
	}
	if f.rootFile != "" {
		roots, err := os.ReadFile(f.rootFile)
		if err != nil {
			return c, fmt.Errorf("--sidecar-ca-root-file: %w", err)
		}
		c.RootCAs = func() []byte { return roots }
	}
	switch p := corev1.PullPolicy(f.pullPolicy); p {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		c.ImagePullPolicy = p
	default:
		return c, fmt.Errorf("--sidecar-image-pull-policy must be Always, IfNotPresent or Never, got %q", f.pullPolicy)
	}
	switch f.accessLog {
	case "off", "json", "text":
	default:
		return c, fmt.Errorf("--sidecar-access-log must be off, json or text, got %q", f.accessLog)
	}
	if f.drain < 0 {
		return c, fmt.Errorf("--sidecar-drain-timeout must not be negative, got %s", f.drain)
	}
	if c.XDSAddr == "" {
		c.XDSAddr = "tender-controlplane." + namespace + ".svc:15010"
	}
	for _, x := range []struct {
		flag, v string
		list    *corev1.ResourceList
		name    corev1.ResourceName
	}{
		{"--sidecar-cpu", f.cpu, &c.Resources.Requests, corev1.ResourceCPU},
		{"--sidecar-memory", f.mem, &c.Resources.Requests, corev1.ResourceMemory},
		{"--sidecar-cpu-limit", f.cpuLimit, &c.Resources.Limits, corev1.ResourceCPU},
		{"--sidecar-memory-limit", f.memLimit, &c.Resources.Limits, corev1.ResourceMemory},
	} {
		if x.v == "" {
			continue
		}
		q, err := resource.ParseQuantity(x.v)
		if err != nil {
			return c, fmt.Errorf("%s %q: %w", x.flag, x.v, err)
		}
		if *x.list == nil {
			*x.list = corev1.ResourceList{}
		}
		(*x.list)[x.name] = q
	}
	return c, nil
}

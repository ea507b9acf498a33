package inject

import (
	"errors"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tender-mesh/tender/inject/capture"
)

// Labels and annotations the injector reads and writes.
const (
	// NamespaceLabel on a namespace, "enabled", meshes its pods;
	// "disabled" keeps them out whatever their annotation says.
	NamespaceLabel = "tender-injection"

	AnnotationInject             = "tender.dev/inject"                 // "true" meshes the pod, "false" keeps it out
	AnnotationStatus             = "tender.dev/status"                 // written: StatusInjected
	AnnotationNativeSidecar      = "tender.dev/native-sidecar"         // "true" | "false": override the default
	AnnotationExcludeInbound     = "tender.dev/exclude-inbound-ports"  // comma-separated ports
	AnnotationExcludeOutbound    = "tender.dev/exclude-outbound-ports" // comma-separated ports
	AnnotationExcludeOutboundIPs = "tender.dev/exclude-outbound-cidrs" // comma-separated CIDRs
	AnnotationProxyImage         = "tender.dev/proxy-image"
	AnnotationProxyCPU           = "tender.dev/proxy-cpu"          // request
	AnnotationProxyMemory        = "tender.dev/proxy-memory"       // request
	AnnotationProxyCPULimit      = "tender.dev/proxy-cpu-limit"    // limit
	AnnotationProxyMemoryLimit   = "tender.dev/proxy-memory-limit" // limit
	AnnotationLogLevel           = "tender.dev/log-level"
	AnnotationDrainTimeout       = "tender.dev/drain-timeout"
	AnnotationInboundDeliver     = "tender.dev/inbound-deliver" // "pod-ip" (default) | "loopback"
	AnnotationPreload            = "tender.dev/preload"         // HOST:PORT,... subscribed to at start (--preload)

	// LabelControlPlane marks the control plane's pods, never injected.
	LabelControlPlane = "tender.dev/control-plane"

	// ContainerProxy and ContainerInit name the containers injected.
	ContainerProxy = "tender-proxy"
	ContainerInit  = "tender-init"
)

// Config is what every injected pod gets, unless its annotations say
// otherwise.
type Config struct {
	// Image is the sidecar image (it holds `sidecar init` too).
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// XDSAddr is the control plane's xDS address.
	XDSAddr string
	// NativeSidecar makes the proxy an init container with restartPolicy
	// Always (Kubernetes 1.29+): it starts before the app and does not
	// keep a Job from completing. Off: a regular container with a
	// postStart hook that waits until it is ready.
	NativeSidecar bool
	// Resources of the proxy container.
	Resources corev1.ResourceRequirements
	// LogLevel, AccessLog, OTLPEndpoint, TraceSampling and DrainTimeout
	// become the proxy's flags.
	LogLevel      string
	AccessLog     string
	OTLPEndpoint  string
	TraceSampling string
	DrainTimeout  time.Duration
	// MTLS gives the sidecar what the mesh's mutual TLS needs: the
	// control plane's TLS address (CAAddr), its root certificates, its
	// identity, and a projected service-account token of audience
	// TokenAudience. Off: the sidecar speaks plaintext on XDSAddr.
	MTLS          bool
	CAAddr        string
	TrustDomain   string
	TokenAudience string
	// RootCAs returns the trust bundle (PEM) at injection time; the
	// sidecar gets later bundles over SDS.
	RootCAs func() []byte
	// ControlPlaneID is the SPIFFE ID the sidecar checks the control
	// plane by; empty: any of the trust domain.
	ControlPlaneID string
}

// Where the injected sidecar finds its token, and keeps the trust bundle
// across its restarts.
const (
	tokenVolume  = "tender-token"
	tokenDir     = "/var/run/secrets/tokens"
	bundleVolume = "tender-bundle"
	bundleDir    = "/var/run/tender"
)

// Decision says whether a pod is injected, and why.
type Decision struct {
	Inject bool
	Reason string
}

// Decide applies the rules: never host-network pods, the control plane,
// or pods already injected; a pod annotation tender.dev/inject decides if
// present; otherwise the namespace label tender-injection=enabled.
func Decide(pod *corev1.Pod, namespaceLabels map[string]string) Decision {
	switch {
	case pod.Spec.HostNetwork:
		return Decision{false, "host network"}
	case pod.Labels[LabelControlPlane] != "":
		return Decision{false, "tender control plane"}
	case pod.Annotations[AnnotationStatus] != "" || hasContainer(pod, ContainerProxy):
		return Decision{false, "already injected"}
	case namespaceLabels[NamespaceLabel] == "disabled":
		return Decision{false, "namespace label " + NamespaceLabel + "=disabled"}
	}
	if v, ok := pod.Annotations[AnnotationInject]; ok {
		on, err := parseBool(v)
		if err != nil {
			return Decision{false, (&AnnotationError{Key: AnnotationInject, Value: v, Reason: "not a boolean"}).Error()}
		}
		if on {
			return Decision{true, "annotation " + AnnotationInject + "=true"}
		}
		return Decision{false, "annotation " + AnnotationInject + "=false"}
	}
	if namespaceLabels[NamespaceLabel] == "enabled" {
		return Decision{true, "namespace label " + NamespaceLabel + "=enabled"}
	}
	return Decision{false, "not enabled for the pod or its namespace"}
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// Inject returns a copy of pod with the capture init container and the
// proxy, as cfg and the pod's annotations say. It fails on an annotation
// it cannot apply, naming it: a pod is better refused than meshed wrong.
func Inject(pod *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	o, err := parseAnnotations(pod.Annotations)
	if err != nil {
		return nil, err
	}
	out := pod.DeepCopy()
	image := cfg.Image
	if o.image != "" {
		image = o.image
	}
	native := cfg.NativeSidecar
	if o.native != nil {
		native = *o.native
	}
	initArgs := []string{"init"}
	if o.hasInbound {
		initArgs = append(initArgs, "--exclude-inbound-ports="+joinInts(o.excludeInbound))
	}
	if o.hasOutbound {
		initArgs = append(initArgs, "--exclude-outbound-ports="+joinInts(o.excludeOutbound))
	}
	if o.hasCIDRs {
		initArgs = append(initArgs, "--exclude-outbound-cidrs="+strings.Join(o.excludeCIDRs, ","))
	}
	resources := *cfg.Resources.DeepCopy()
	for _, x := range []struct {
		q    *resource.Quantity
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{o.cpu, &resources.Requests, corev1.ResourceCPU},
		{o.mem, &resources.Requests, corev1.ResourceMemory},
		{o.cpuLim, &resources.Limits, corev1.ResourceCPU},
		{o.memLim, &resources.Limits, corev1.ResourceMemory},
	} {
		if x.q == nil {
			continue
		}
		if *x.list == nil {
			*x.list = corev1.ResourceList{}
		}
		(*x.list)[x.name] = *x.q
	}
	logLevel := cfg.LogLevel
	if o.logLevel != "" {
		logLevel = o.logLevel
	}
	drain := cfg.DrainTimeout
	if o.drain != nil {
		drain = *o.drain
	}

	root, proxyUID := int64(0), int64(capture.ProxyUID)
	initC := corev1.Container{
		Name:            ContainerInit,
		Image:           image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{"/sidecar"},
		Args:            initArgs,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		// Root with NET_ADMIN and NET_RAW, to write the pod's iptables
		// rules; nothing else.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &root,
			RunAsNonRoot:             new(false),
			AllowPrivilegeEscalation: new(false),
			ReadOnlyRootFilesystem:   new(true),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
			},
		},
	}
	args := []string{"run", "--xds-addr=" + cfg.XDSAddr, "--log-format=json"}
	var roots []byte
	if cfg.MTLS {
		if cfg.RootCAs != nil {
			roots = cfg.RootCAs()
		}
		if len(roots) == 0 {
			return nil, errors.New("mutual TLS is on but there is no CA root certificate for the sidecar (give --sidecar-ca-root-file, or --sidecar-mtls=false)")
		}
		args = []string{"run", "--xds-addr=" + cfg.CAAddr, "--xds-tls", "--trust-domain=" + cfg.TrustDomain,
			"--token-file=" + tokenDir + "/" + tokenVolume, "--bundle-file=" + bundleDir + "/bundle.pem", "--log-format=json"}
		if cfg.ControlPlaneID != "" {
			args = append(args, "--controlplane-identity="+cfg.ControlPlaneID)
		}
	}
	if logLevel != "" {
		args = append(args, "--log-level="+logLevel)
	}
	if cfg.AccessLog != "" {
		args = append(args, "--access-log="+cfg.AccessLog)
	}
	if cfg.OTLPEndpoint != "" {
		args = append(args, "--otlp-endpoint="+cfg.OTLPEndpoint)
	}
	if cfg.TraceSampling != "" {
		args = append(args, "--trace-sampling="+cfg.TraceSampling)
	}
	if drain > 0 {
		args = append(args, "--drain-timeout="+drain.String())
	}
	if o.preload != "" {
		args = append(args, "--preload="+o.preload)
	}
	if o.inboundDeliver != "" {
		args = append(args, "--inbound-deliver="+o.inboundDeliver)
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	proxy := corev1.Container{
		Name:            ContainerProxy,
		Image:           image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{"/sidecar"},
		Args:            args,
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
			fieldEnv("POD_IP", "status.podIP"),
		},
		Ports: []corev1.ContainerPort{
			{Name: "tender-admin", ContainerPort: 15000, Protocol: corev1.ProtocolTCP},
			{Name: "tender-metrics", ContainerPort: 15090, Protocol: corev1.ProtocolTCP},
		},
		Resources: resources,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(15000)}},
			PeriodSeconds:    2,
			FailureThreshold: 30,
		},
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(15000)}},
			PeriodSeconds:    1,
			FailureThreshold: 120,
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &proxyUID,
			RunAsGroup:               &proxyUID,
			RunAsNonRoot:             new(true),
			AllowPrivilegeEscalation: new(false),
			ReadOnlyRootFilesystem:   new(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	if _, ok := resources.Limits[corev1.ResourceMemory]; ok {
		// The Go runtime of the sidecar collects harder as it nears the
		// container's memory limit instead of being killed at it (as
		// Istio sets it): the limit in bytes, from the Downward API.
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: ContainerProxy, Resource: "limits.memory"},
		}})
	}
	if cfg.MTLS {
		// The root to check the control plane with, and a token of the
		// pod's service account for the CA only (audience), which the
		// kubelet renews.
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: "TENDER_CA_ROOT", Value: string(roots)})
		proxy.VolumeMounts = append(proxy.VolumeMounts, corev1.VolumeMount{Name: tokenVolume, MountPath: tokenDir, ReadOnly: true},
			corev1.VolumeMount{Name: bundleVolume, MountPath: bundleDir})
		expiry := int64(3600)
		out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: tokenVolume, VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
				ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: cfg.TokenAudience, ExpirationSeconds: &expiry, Path: tokenVolume},
			}}},
		}}, corev1.Volume{Name: bundleVolume, VolumeSource: corev1.VolumeSource{
			// The pod's, so it outlives a restart of the sidecar container.
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptrQuantity("1Mi")},
		}})
	}
	if !native {
		// The app gets SIGTERM with the sidecar and may still call out
		// while it stops: the sidecar serves on a while before it drains.
		args = append(args, "--shutdown-delay="+classicShutdownDelay.String())
		proxy.Args = args
	}
	if drain > 0 {
		// Kubernetes must wait for the drain before it kills the pod.
		grace := int64((drain + 5*time.Second).Seconds())
		if !native {
			grace += int64(classicShutdownDelay.Seconds())
		}
		if out.Spec.TerminationGracePeriodSeconds == nil || *out.Spec.TerminationGracePeriodSeconds < grace {
			out.Spec.TerminationGracePeriodSeconds = &grace
		}
	}
	if native {
		always := corev1.ContainerRestartPolicyAlways
		proxy.RestartPolicy = &always
		// The capture rules first, then the proxy, then the pod's own
		// init containers, which thus run meshed.
		out.Spec.InitContainers = append([]corev1.Container{initC, proxy}, out.Spec.InitContainers...)
	} else {
		// The app containers start after the first container's postStart
		// hook returns: the hook waits for the proxy.
		proxy.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{"/sidecar", "wait", "--timeout=120s"}},
		}}
		out.Spec.InitContainers = append([]corev1.Container{initC}, out.Spec.InitContainers...)
		out.Spec.Containers = append([]corev1.Container{proxy}, out.Spec.Containers...)
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationStatus] = StatusInjected
	// Prometheus finds the sidecar's metrics (unless the pod scrapes its
	// own already).
	if _, ok := out.Annotations["prometheus.io/scrape"]; !ok {
		out.Annotations["prometheus.io/scrape"] = "true"
		out.Annotations["prometheus.io/port"] = "15090"
		out.Annotations["prometheus.io/path"] = "/metrics"
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func ptrQuantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

// classicShutdownDelay is how long a classic (non-native) sidecar serves
// on after SIGTERM before it drains, as Istio's terminationDrainDuration.
const classicShutdownDelay = 5 * time.Second

// StatusInjected is AnnotationStatus's value on a pod the injector gave a
// sidecar; the control plane's Kubernetes source reads it to mark the
// pod's endpoints meshed.
const StatusInjected = "injected"

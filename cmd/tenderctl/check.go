package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/tender-mesh/tender/discovery/dns"
	"github.com/tender-mesh/tender/discovery/file"
	"github.com/tender-mesh/tender/xds"
)

// checker prints a line per check and remembers failures.
type checker struct {
	w      io.Writer
	failed int
}

func (c *checker) ok(format string, a ...any) {
	fmt.Fprintf(c.w, "[ok]   %s\n", fmt.Sprintf(format, a...))
}

func (c *checker) warn(format string, a ...any) {
	fmt.Fprintf(c.w, "[warn] %s\n", fmt.Sprintf(format, a...))
}

func (c *checker) fail(format string, a ...any) {
	c.failed++
	fmt.Fprintf(c.w, "[FAIL] %s\n", fmt.Sprintf(format, a...))
}

func check(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	configFile := fs.String("config-file", "", "a mesh.yaml to validate")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of a cluster to check (tender's chart installed in --namespace)")
	namespace := fs.String("namespace", "tender-system", "the control plane's namespace in the cluster")
	release := fs.String("release", "tender", "the Helm release name (objects are RELEASE-controlplane, RELEASE-sidecar-injector)")
	cp := controlPlaneFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("check takes no arguments, got %q", fs.Args())
	}
	c := &checker{w: stdout}
	if *configFile != "" {
		checkMeshFile(c, *configFile)
	}
	if *kubeconfig != "" {
		checkCluster(c, *kubeconfig, *namespace, *release)
	}
	checkControlPlane(c, baseURL(*cp, "15014"))
	if c.failed > 0 {
		fmt.Fprintf(stdout, "%d check(s) failed\n", c.failed)
		return errFailed
	}
	return nil
}

// noDNS takes the DNS services of a checked file: checking resolves
// nothing.
type noDNS struct{}

func (noDNS) SetTargets([]dns.Target) {}

func checkMeshFile(c *checker, path string) {
	// A file or a directory of them, read as the control plane reads it.
	cfg, _, err := file.New(file.Options{Path: path, DNS: noDNS{}}).Load()
	if err != nil {
		c.fail("mesh.yaml: %v", err)
		return
	}
	endpoints := 0
	for _, s := range cfg.Static {
		endpoints += len(s.Endpoints)
	}
	c.ok("mesh.yaml %s: %d services with %d endpoints, %d discovered by DNS", path, len(cfg.Static), endpoints, len(cfg.DNS))
	if len(cfg.Routes) == 0 {
		return
	}
	// The file's routes as the control plane would program them; DNS
	// services are backends too, with no endpoints yet.
	services := cfg.Static
	for _, d := range cfg.DNS {
		services = append(services, d.Service)
	}
	_, status, err := xds.TranslateRoutes(services, cfg.Routes, nil)
	if err != nil {
		c.fail("mesh.yaml routes: %v", err)
		return
	}
	checkRoutes(c, "mesh.yaml", len(cfg.Routes), status)
}

// checkRoutes reports the routes tender could not program whole: a
// parent or backend not found, a value not supported.
func checkRoutes(c *checker, where string, n int, status []xds.RouteStatus) {
	bad := 0
	for _, st := range status {
		for _, ps := range st.Parents {
			if !ps.Accepted.OK {
				bad++
				c.fail("%s: %s, parent %s: not accepted (%s): %s", where, st.Key(), ps.Ref.Name, ps.Accepted.Reason, ps.Accepted.Message)
			}
			if !ps.ResolvedRefs.OK {
				bad++
				c.fail("%s: %s, parent %s: references not resolved (%s): %s", where, st.Key(), ps.Ref.Name, ps.ResolvedRefs.Reason, ps.ResolvedRefs.Message)
			}
		}
	}
	if bad == 0 {
		c.ok("%s: %d routes, every one accepted with its backends resolved", where, n)
	}
}

func checkCluster(c *checker, kubeconfig, namespace, release string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		c.fail("kubeconfig %s: %v", kubeconfig, err)
		return
	}
	rc.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		c.fail("kubeconfig %s: %v", kubeconfig, err)
		return
	}
	info, err := cs.Discovery().ServerVersion()
	if err != nil {
		c.fail("Kubernetes API server %s: %v", rc.Host, err)
		return
	}
	c.ok("Kubernetes API server %s reachable (%s)", rc.Host, info.GitVersion)
	if v, err := version.ParseGeneric(info.GitVersion); err == nil && v.AtLeast(version.MajorMinor(1, 29)) {
		c.ok("native sidecars supported (Kubernetes 1.29+)")
	} else {
		c.warn("Kubernetes %s has no native sidecars: install with sidecar.nativeSidecar=false", info.GitVersion)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil {
		c.fail("namespace %s: %v", namespace, err)
		return
	}
	c.ok("namespace %s exists", namespace)
	deploy := release + "-controlplane"
	if d, err := cs.AppsV1().Deployments(namespace).Get(ctx, deploy, metav1.GetOptions{}); err != nil {
		c.fail("control plane Deployment %s/%s: %v", namespace, deploy, err)
	} else if want := ptr.Deref(d.Spec.Replicas, 1); d.Status.ReadyReplicas == 0 || d.Status.ReadyReplicas < want {
		c.fail("control plane Deployment %s/%s: %d of %d replicas ready", namespace, deploy, d.Status.ReadyReplicas, want)
	} else {
		c.ok("control plane Deployment %s/%s: %d of %d replicas ready", namespace, deploy, d.Status.ReadyReplicas, want)
	}
	webhook := release + "-sidecar-injector"
	if wh, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook, metav1.GetOptions{}); err != nil {
		c.fail("injector MutatingWebhookConfiguration %s: %v", webhook, err)
	} else {
		missing := 0
		for _, w := range wh.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				missing++
			}
		}
		if missing > 0 || len(wh.Webhooks) == 0 {
			c.fail("injector MutatingWebhookConfiguration %s: no caBundle yet (the control plane sets it when it starts)", webhook)
		} else {
			c.ok("injector MutatingWebhookConfiguration %s has its caBundle", webhook)
		}
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "tender-injection=enabled"})
	switch {
	case err != nil:
		c.fail("namespaces labelled tender-injection=enabled: %v", err)
	case len(nss.Items) == 0:
		c.warn("no namespace is labelled tender-injection=enabled (pods can still opt in with tender.dev/inject: \"true\")")
	default:
		var names []string
		for _, ns := range nss.Items {
			names = append(names, ns.Name)
		}
		c.ok("namespaces meshed: %s", strings.Join(names, ", "))
	}
}

func checkControlPlane(c *checker, base string) {
	if _, err := get(base+"/healthz", 200); err != nil {
		c.fail("control plane %s: %v", base, err)
		return
	}
	body, err := get(base+"/readyz", 200)
	var ready struct {
		Sources map[string]json.RawMessage `json:"sources"`
	}
	if jerr := json.Unmarshal(body, &ready); err != nil || jerr != nil {
		c.fail("control plane %s not ready: %s", base, strings.TrimSpace(string(body)))
		return
	}
	var names []string
	for n := range ready.Sources {
		names = append(names, n)
	}
	c.ok("control plane %s ready (sources synced: %s)", base, strings.Join(names, ", "))
	body, err = get(base+"/debug/proxies", 200)
	var proxies []xds.ProxyStatus
	if err == nil {
		err = json.Unmarshal(body, &proxies)
	}
	if err != nil {
		c.fail("control plane %s proxies: %v", base, err)
		return
	}
	if body, err := get(base+"/debug/config", 200); err == nil {
		var dump struct {
			Routes []xds.RouteStatus `json:"routes"`
		}
		if err := json.Unmarshal(body, &dump); err != nil {
			c.fail("control plane %s config: %v", base, err)
		} else if len(dump.Routes) > 0 {
			checkRoutes(c, "control plane", len(dump.Routes), dump.Routes)
		}
	}
	stale := 0
	for _, p := range proxies {
		for _, st := range p.Status {
			if st == xds.Stale {
				stale++
				break
			}
		}
	}
	if stale > 0 {
		c.warn("%d of %d connected proxies are STALE (tenderctl proxy-status)", stale, len(proxies))
	} else {
		c.ok("%d connected proxies, none stale", len(proxies))
	}
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
)

const (
	chartDir       = "../charts/tender"
	releaseNS      = "tender-system"
	releaseName    = "tender"
	releaseCP      = "tender-controlplane"
	releaseWebhook = "tender-sidecar-injector"
	releaseSecret  = "tender-webhook-tls"
)

// helm runs the Helm binary from .tools against the API server.
func (a *apiServer) helm(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	cmd := a.command(ctx, tool(t, "helm"), append(args, "--kubeconfig", a.kubeconfig)...)
	cmd.Env = append(cmd.Environ(), "HELM_CACHE_HOME="+a.dir+"/helm/cache", "HELM_CONFIG_HOME="+a.dir+"/helm/config",
		"HELM_DATA_HOME="+a.dir+"/helm/data")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// strictDryRun submits every object of a rendered manifest to the API
// server as a dry run with strict field validation: an unknown or
// misspelt field fails, as do invalid values.
func (a *apiServer) strictDryRun(ctx context.Context, t *testing.T, manifest string) (kinds []string) {
	t.Helper()
	dyn, mapper := a.dynamic(t)
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		if obj.Object == nil {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ri = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		if _, err := ri.Create(ctx, &obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
			t.Errorf("%s %s refused by the API server: %v", gvk.Kind, obj.GetName(), err)
		}
		kinds = append(kinds, gvk.Kind)
	}
	return kinds
}

func (a *apiServer) dynamic(t *testing.T) (*dynamic.DynamicClient, *restmapper.DeferredDiscoveryRESTMapper) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(a.rest)
	if err != nil {
		t.Fatal(err)
	}
	return dyn, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(a.client.Discovery()))
}

// leftovers lists every object in the cluster, of every listable kind,
// that carries the release's label or lives in the release's namespace
// (Events aside).
func (a *apiServer) leftovers(ctx context.Context, t *testing.T) []string {
	t.Helper()
	dyn, _ := a.dynamic(t)
	lists, err := a.client.Discovery().ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "list") || r.Kind == "Event" {
				continue
			}
			res := dyn.Resource(gv.WithResource(r.Name))
			found, err := res.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName})
			if err != nil {
				t.Fatalf("list %s: %v", r.Name, err)
			}
			if r.Namespaced {
				inNS, err := res.Namespace(releaseNS).List(ctx, metav1.ListOptions{})
				if err != nil {
					t.Fatalf("list %s in %s: %v", r.Name, releaseNS, err)
				}
				found.Items = append(found.Items, inNS.Items...)
			}
			for _, o := range found.Items {
				out = append(out, fmt.Sprintf("%s %s/%s", r.Kind, o.GetNamespace(), o.GetName()))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestHelmChart installs charts/tender into a real API server: the chart
// lints clean with several value sets, every object passes strict
// server-side validation, and the control plane, run with the chart's
// own arguments and its service account's token (so RBAC is what the
// chart grants), syncs, fills the chart's Secret with the injector's
// certificate, sets the chart's webhook caBundle and injects pods. An
// upgrade keeps the certificate and removes what the new values drop;
// an uninstall leaves nothing behind.
func TestHelmChart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	api := startAPIServer(t, ctx)
	cs := api.client

	for _, set := range []string{
		"",
		"injector.enabled=false,dashboard.enabled=false,podDisruptionBudget.enabled=false",
		"injector.certManager.enabled=true,injector.certManager.issuerRef.name=ca,metrics.serviceMonitor.enabled=true,antiAffinity=hard",
		"consul.addr=consul:8500,consul.tokenSecret=consul-acl,tracing.otlpEndpoint=jaeger-collector:4317,tracing.sampling=0.5,kubernetes.watchNamespaces={a,b}",
		"eureka.urls={http://eureka-0:8761/eureka,https://eureka-1:8761/eureka},eureka.credentialsSecret=eureka-auth,eureka.region=eu-west-1,eureka.refresh=10s",
	} {
		api.helm(ctx, t, "lint", chartDir, "--strict", "--set", set)
	}
	for _, bad := range []string{"injector.failurePolicy=Sometimes", "sidecar.accessLog=xml", "replicaCount=-1", "injector.url=http://plain", "eureka.urls={eureka:8761}"} {
		cmd := exec.CommandContext(ctx, tool(t, "helm"), "lint", chartDir, "--set", bad)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("helm lint --set %s passed, want the schema to refuse it:\n%s", bad, out)
		}
	}

	ports := freePorts(t, 3)
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	// The API server runs outside any pod network here, so the webhook
	// calls the control plane by URL, as for a control plane outside
	// the cluster.
	values := []string{"--set", "injector.url=https://" + webhookAddr + "/inject", "--set", "injector.extraHosts={127.0.0.1}",
		"--set", "sidecar.image.tag=e2e"}
	api.namespace(ctx, t, releaseNS, nil)
	rendered := api.helm(ctx, t, append([]string{"template", releaseName, chartDir, "-n", releaseNS, "--kube-version", "1.34.0"}, values...)...)
	kinds := api.strictDryRun(ctx, t, rendered)
	for _, want := range []string{"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"MutatingWebhookConfiguration", "ConfigMap", "Secret", "PodDisruptionBudget"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("rendered chart has no %s (has %v)", want, kinds)
		}
	}
	before := api.leftovers(ctx, t)

	out := api.helm(ctx, t, append([]string{"install", releaseName, chartDir, "-n", releaseNS}, values...)...)
	if !strings.Contains(out, "tender-injection=enabled") {
		t.Errorf("install notes do not say how to mesh a namespace:\n%s", out)
	}

	// The Gateway API's routes: the control plane reads them and writes
	// their status, and may change nothing else of them.
	sa := "system:serviceaccount:" + releaseNS + ":" + releaseCP
	for _, c := range []struct {
		verb, resource, subresource string
		allowed                     bool
	}{
		{"watch", "httproutes", "", true}, {"list", "grpcroutes", "", true}, {"get", "httproutes", "", true},
		{"update", "httproutes", "status", true}, {"patch", "grpcroutes", "status", true},
		{"update", "httproutes", "", false}, {"delete", "grpcroutes", "", false}, {"create", "httproutes", "", false},
	} {
		review, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNS},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: "shop", Verb: c.verb, Group: "gateway.networking.k8s.io",
					Resource: c.resource, Subresource: c.subresource}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != c.allowed {
			t.Errorf("the control plane may %s %s/%s: %v, want %v", c.verb, c.resource, c.subresource, review.Status.Allowed, c.allowed)
		}
	}

	// The control plane as the Deployment would run it: the chart's
	// arguments, the service account's token, addresses of the test's.
	dep, err := cs.AppsV1().Deployments(releaseNS).Get(ctx, releaseCP, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(releaseNS).CreateToken(ctx, releaseCP,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saKubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, saKubeconfig, strings.Replace(api.kubeconfigText, api.token, tok.Status.Token, 1))
	mesh, err := cs.CoreV1().ConfigMaps(releaseNS).Get(ctx, "tender-mesh", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, meshFile, mesh.Data["mesh.yaml"])
	args := append(slices.Clone(dep.Spec.Template.Spec.Containers[0].Args), "--kubeconfig", saKubeconfig, "--namespace", releaseNS,
		"--config-file", meshFile, "--xds-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--webhook-addr", webhookAddr)
	cp := start(t, "controlplane", "controlplane", args...)
	cp.waitLog(ctx, "webhook caBundle set")
	waitHTTP(ctx, t, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]), 200)
	secret, err := cs.CoreV1().Secrets(releaseNS).Get(ctx, releaseSecret, metav1.GetOptions{})
	if err != nil || len(secret.Data["tls.crt"]) == 0 {
		t.Fatalf("the chart's Secret holds no certificate: %v", err)
	}

	api.namespace(ctx, t, "shop", map[string]string{"tender-injection": "enabled"})
	// tenderctl check: what it can see is fine; the Deployment has no
	// pods, as no kubelet runs here.
	cmd := exec.CommandContext(ctx, binPath("tenderctl"), "check", "--kubeconfig", api.kubeconfig, "--controlplane", fmt.Sprintf("127.0.0.1:%d", ports[1]))
	report, err := cmd.CombinedOutput()
	for _, want := range []string{
		"[ok]   Kubernetes API server https://127.0.0.1:", "[ok]   native sidecars supported", "[ok]   namespace tender-system exists",
		"[FAIL] control plane Deployment tender-system/tender-controlplane: 0 of 2 replicas ready",
		"[ok]   injector MutatingWebhookConfiguration tender-sidecar-injector has its caBundle", "[ok]   namespaces meshed: shop",
		"[ok]   control plane http://127.0.0.1:", "1 check(s) failed",
	} {
		if !strings.Contains(string(report), want) {
			t.Errorf("tenderctl check does not say %q:\n%s", want, report)
		}
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("tenderctl check exited %d (%v), want 1 for the failed check", code, err)
	}

	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "greeter:e2e"}}}}
	}
	var injected *corev1.Pod
	for i := 0; ctx.Err() == nil; i++ {
		// Until the caBundle reaches the API server's webhook client,
		// failurePolicy Ignore lets pods through unmeshed.
		injected, err = cs.CoreV1().Pods("shop").Create(ctx, pod(fmt.Sprintf("app-%d", i)), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(injected.Spec.InitContainers) > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := containerNames(injected.Spec.InitContainers); !slices.Equal(got, []string{"tender-init", "tender-proxy"}) ||
		injected.Spec.InitContainers[1].Image != "ghcr.io/tender-mesh/sidecar:e2e" {
		t.Errorf("through the chart's webhook: init containers %v, want tender-init and tender-proxy of the chart's sidecar image", got)
	}
	// Mutual TLS (the chart's default): xDS and the certificate over the
	// Service's TLS port, with a projected token for the CA.
	if args := injected.Spec.InitContainers[1].Args; !slices.Contains(args, "--xds-addr=tender-controlplane.tender-system.svc:15012") ||
		!slices.Contains(args, "--xds-tls") {
		t.Errorf("injected sidecar does not connect to the chart's Service's TLS port: args %v", args)
	}
	if i := slices.IndexFunc(injected.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "tender-token" }); i < 0 ||
		injected.Spec.Volumes[i].Projected.Sources[0].ServiceAccountToken.Audience != "tender" {
		t.Errorf("injected pod has no projected token of audience tender: %+v", injected.Spec.Volumes)
	}
	own, err := cs.CoreV1().Pods(releaseNS).Create(ctx, pod("not-in-the-mesh"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(own.Spec.InitContainers) != 0 {
		t.Errorf("a pod in the control plane's namespace was injected: %v", containerNames(own.Spec.InitContainers))
	}
	if err := cs.CoreV1().Pods(releaseNS).Delete(ctx, own.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}

	// Upgrade: new values roll out, dropped objects go, the certificate
	// stays and the caBundle stays set.
	api.helm(ctx, t, "upgrade", releaseName, chartDir, "-n", releaseNS, "--reuse-values", "--set", "sidecar.logLevel=debug",
		"--set", "dashboard.enabled=false", "--set", "podDisruptionBudget.enabled=false")
	dep, err = cs.AppsV1().Deployments(releaseNS).Get(ctx, releaseCP, metav1.GetOptions{})
	if err != nil || !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--sidecar-log-level=debug") {
		t.Errorf("upgraded Deployment args: %v (err %v)", dep.Spec.Template.Spec.Containers[0].Args, err)
	}
	if _, err := cs.CoreV1().ConfigMaps(releaseNS).Get(ctx, "tender-dashboard", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dashboard ConfigMap after it was turned off: %v, want not found", err)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(releaseNS).Get(ctx, releaseCP, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("PodDisruptionBudget after it was turned off: %v, want not found", err)
	}
	kept, err := cs.CoreV1().Secrets(releaseNS).Get(ctx, releaseSecret, metav1.GetOptions{})
	if err != nil || !bytes.Equal(kept.Data["tls.crt"], secret.Data["tls.crt"]) {
		t.Errorf("the injector's certificate did not survive the upgrade (err %v)", err)
	}
	waitUntil(ctx, t, "the caBundle set after the upgrade", func() bool {
		wh, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, releaseWebhook, metav1.GetOptions{})
		return err == nil && bytes.Equal(wh.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"])
	})

	// Uninstall: nothing of the release is left, in its namespace or
	// cluster-wide.
	cp.kill()
	api.helm(ctx, t, "uninstall", releaseName, "-n", releaseNS, "--wait")
	if left := api.leftovers(ctx, t); !slices.Equal(left, before) {
		t.Errorf("after helm uninstall: %v, want what was there before the install: %v", left, before)
	}
}

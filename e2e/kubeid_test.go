package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// TestKubernetesWorkloadIdentity is the Kubernetes half of the security
// acceptance: a sidecar proves who it is with its service account's
// token (audience tender), which the control plane checks with a
// TokenReview against a real API server; a token for another audience
// gets no certificate and the control plane logs why. An
// AuthorizationPolicy resource (the chart's CRD) reaches the served
// config.
func TestKubernetesWorkloadIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api := startAPIServer(t, ctx)
	api.namespace(ctx, t, "tender-system", nil)
	api.namespace(ctx, t, "shop", nil)
	cs := api.client
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "cart"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The chart's CRD, as helm installs it.
	dyn, _ := api.dynamic(t)
	crdYAML, err := os.ReadFile("../charts/tender/crds/authorizationpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd unstructured.Unstructured
	if err := yaml.Unmarshal(crdYAML, &crd.Object); err != nil {
		t.Fatal(err)
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crdGVR).Create(ctx, &crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	ports := freePorts(t, 4)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	metrics := fmt.Sprintf("127.0.0.1:%d", ports[1])
	cp := start(t, "controlplane", "controlplane", "--kubeconfig", api.kubeconfig, "--namespace", "tender-system",
		"--xds-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--metrics-addr", metrics, "--xds-tls-addr", tlsAddr,
		"--webhook-addr", "", "--ca-dir", filepath.Join(dir, "ca"), "--log-format", "json")
	cp.waitLog(ctx, "control plane starting")

	token := func(audience string) string {
		tok, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "cart", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, audience+".token")
		writeFile(t, path, tok.Status.Token)
		return path
	}
	sidecar := func(name, tokenFile, admin string) *process {
		return start(t, name, "sidecar", "run", "--xds-addr", tlsAddr, "--xds-tls", "--ca-root-file", filepath.Join(dir, "ca", "root-cert.pem"),
			"--controlplane-identity", "spiffe://cluster.local/ns/tender-system/sa/tender-controlplane",
			"--token-file", tokenFile, "--pod-name", name, "--pod-namespace", "shop", "--workload", "cart",
			"--outbound-addr", "127.0.0.1:0", "--inbound-addr", "127.0.0.1:0", "--admin-addr", admin, "--metrics-addr", "127.0.0.1:0",
			"--log-format", "json")
	}

	t.Run("service-account token", func(t *testing.T) {
		admin := fmt.Sprintf("127.0.0.1:%d", ports[3])
		sc := sidecar("cart-1", token("tender"), admin)
		line := sc.waitLog(ctx, "workload certificate issued")
		if got, want := line["id"], "spiffe://cluster.local/ns/shop/sa/cart"; got != want {
			t.Errorf("certificate for %v, want %s", got, want)
		}
		body := string(waitHTTP(ctx, t, "http://"+admin+"/certs", 200))
		if !strings.Contains(body, `"identity":"spiffe://cluster.local/ns/shop/sa/cart"`) {
			t.Errorf("/certs: %s", body)
		}
	})

	t.Run("token of another audience", func(t *testing.T) {
		sc := sidecar("cart-2", token("vault"), "127.0.0.1:0")
		logLine(ctx, t, sc, "workload certificate request failed", "err", "Unauthenticated")
		why := logLine(ctx, t, cp, "certificate refused", "reason", "")
		if !strings.Contains(why, "audience") && !strings.Contains(why, "not authenticated") {
			t.Errorf("the control plane's reason does not say what is wrong with the token: %q", why)
		}
		t.Logf("refused: %s", why)
	})

	t.Run("AuthorizationPolicy resource", func(t *testing.T) {
		if _, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "cart"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		policy := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.tender.dev/v1alpha1", "kind": "AuthorizationPolicy",
			"metadata": map[string]any{"name": "cart-from-web", "namespace": "shop"},
			"spec": map[string]any{"services": []any{"cart"}, "rules": []any{map[string]any{
				"from": []any{map[string]any{"principals": []any{"spiffe://cluster.local/ns/shop/sa/web"}}}}}},
		}}
		gvr := schema.GroupVersionResource{Group: "security.tender.dev", Version: "v1alpha1", Resource: "authorizationpolicies"}
		waitUntil(ctx, t, "the CRD established", func() bool {
			_, err := dyn.Resource(gvr).Namespace("shop").Create(ctx, policy, metav1.CreateOptions{})
			return err == nil
		})
		waitUntil(ctx, t, "the policy served", func() bool {
			body, ok := get("http://" + metrics + "/debug/config")
			return ok && strings.Contains(body, "shop/cart-from-web/rules[0]") && strings.Contains(body, "spiffe://cluster.local/ns/shop/sa/web")
		})
	})
}

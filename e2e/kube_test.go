package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// apiServer is a real kube-apiserver over a real etcd, on loopback ports
// of its own; there is no kubelet or controller manager.
type apiServer struct {
	dir            string
	kubeconfig     string
	kubeconfigText string
	token          string // the admin's
	rest           *rest.Config
	client         kubernetes.Interface
	// netns, when set, is the network namespace the API server listens in
	// (the one-node cluster's node); commands run there.
	netns string
}

// command runs a client binary (helm, kubectl) where it reaches the API
// server.
func (a *apiServer) command(ctx context.Context, path string, args ...string) *exec.Cmd {
	if a.netns == "" {
		return exec.CommandContext(ctx, path, args...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + a.netns, path}, args...)...)
}

func startAPIServer(t *testing.T, ctx context.Context) *apiServer {
	t.Helper()
	return startAPIServerIn(t, ctx, nil)
}

// startAPIServerIn runs etcd and kube-apiserver inside a lab pod (on its
// loopback) when in is not nil; the test reaches them through the pod.
func startAPIServerIn(t *testing.T, ctx context.Context, in *pod) *apiServer {
	t.Helper()
	run := func(name, path string, args ...string) {
		if in == nil {
			start(t, name, path, args...)
		} else {
			in.startPath(t, name, path, args...)
		}
	}
	bin := tool(t, "kube-apiserver")
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd not installed (Debian package etcd-server)")
	}
	dir := t.TempDir()
	ports := freePorts(t, 3)
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	run("etcd", etcd, "--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer)

	token := apiServerSecrets(t, dir)
	run("kube-apiserver", bin, "--etcd-servers", client, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(ports[2]), "--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"), "--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.96.0.0/16")

	a := &apiServer{dir: dir, kubeconfig: filepath.Join(dir, "kubeconfig"), token: token}
	a.kubeconfigText = fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %s}}]
contexts: [{name: e2e, context: {cluster: e2e, user: admin}}]
current-context: e2e
`, ports[2], token)
	writeFile(t, a.kubeconfig, a.kubeconfigText)
	rc, err := clientcmd.BuildConfigFromFlags("", a.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		rc.Dial = in.dial
	}
	a.rest = rc
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	a.client = cs
	waitUntil(ctx, t, "kube-apiserver ready", func() bool {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok"
	})
	return a
}

// apiServerSecrets writes what kube-apiserver (and the controller
// manager) read into dir: the service-account signing key pair (sa.key,
// sa.pub) and a static admin token (tokens.csv), which it returns.
func apiServerSecrets(t *testing.T, dir string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	writeFile(t, filepath.Join(dir, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	writeFile(t, filepath.Join(dir, "sa.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
	token := rand.Text()
	writeFile(t, filepath.Join(dir, "tokens.csv"), token+",admin,admin,system:masters\n")
	return token
}

// namespace creates a namespace with labels and its default service
// account (no controller manager makes it).
func (a *apiServer) namespace(ctx context.Context, t *testing.T, name string, labels map[string]string) {
	t.Helper()
	if _, err := a.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestKubernetesInjectionAndEvents runs the control plane against a real
// kube-apiserver: the injector (its certificate and caBundle set up by
// the control plane) mutates pods as they are stored, and a bad Service
// annotation becomes an Event while the control plane keeps serving.
func TestKubernetesInjectionAndEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := startAPIServer(t, ctx)
	cs := api.client
	api.namespace(ctx, t, "tender-system", nil)
	api.namespace(ctx, t, "shop", map[string]string{"tender-injection": "enabled"})
	api.namespace(ctx, t, "plain", nil)

	ports := freePorts(t, 3)
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	cp := start(t, "controlplane", "controlplane", "--kubeconfig", api.kubeconfig, "--namespace", "tender-system",
		"--xds-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--webhook-addr", webhookAddr, "--webhook-hosts", "127.0.0.1", "--sidecar-image", "tender/sidecar:e2e", "--log-format", "json")
	cp.waitLog(ctx, "sidecar injector serving")

	// As the chart installs it, without a caBundle: the control plane
	// sets it.
	fail := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	_, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "tender-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.tender.dev", AdmissionReviewVersions: []string{"v1"}, SideEffects: &none, FailurePolicy: &fail,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://" + webhookAddr + "/inject")},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "tender-system"}},
			}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cp.waitLog(ctx, "webhook caBundle set")

	pod := func(name string, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "greeter:e2e"}}}}
	}
	create := func(ns string, p *corev1.Pod) *corev1.Pod {
		t.Helper()
		got, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create %s/%s: %v", ns, p.Name, err)
		}
		return got
	}

	// The caBundle may reach the API server's webhook client a moment
	// after it is stored: until then Ignore lets pods through unmeshed.
	var native *corev1.Pod
	for i := 0; ; i++ {
		native = create("shop", pod(fmt.Sprintf("native-%d", i), nil))
		if len(native.Spec.InitContainers) > 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := containerNames(native.Spec.InitContainers); !slices.Equal(got, []string{"tender-init", "tender-proxy"}) ||
		native.Spec.InitContainers[1].RestartPolicy == nil || *native.Spec.InitContainers[1].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("native: stored init containers %v, want tender-init and a native tender-proxy", got)
	}
	if native.Spec.InitContainers[1].Image != "tender/sidecar:e2e" || native.Annotations["tender.dev/status"] != "injected" {
		t.Errorf("native: image %q annotations %v", native.Spec.InitContainers[1].Image, native.Annotations)
	}

	classic := create("shop", pod("classic", map[string]string{"tender.dev/native-sidecar": "false"}))
	if got := containerNames(classic.Spec.Containers); !slices.Equal(got, []string{"tender-proxy", "app"}) ||
		!slices.Equal(containerNames(classic.Spec.InitContainers), []string{"tender-init"}) {
		t.Errorf("classic: containers %v, init %v", got, containerNames(classic.Spec.InitContainers))
	}

	optOut := create("shop", pod("opted-out", map[string]string{"tender.dev/inject": "false"}))
	if len(optOut.Spec.InitContainers) != 0 || len(optOut.Spec.Containers) != 1 {
		t.Errorf("opted out: init %v containers %v", containerNames(optOut.Spec.InitContainers), containerNames(optOut.Spec.Containers))
	}
	optIn := create("plain", pod("opted-in", map[string]string{"tender.dev/inject": "true"}))
	if len(optIn.Spec.InitContainers) != 2 {
		t.Errorf("opted in, unlabelled namespace: init %v", containerNames(optIn.Spec.InitContainers))
	}
	if p := create("plain", pod("plain", nil)); len(p.Spec.InitContainers) != 0 {
		t.Errorf("unlabelled namespace: injected %v", containerNames(p.Spec.InitContainers))
	}

	// The stored pod submitted again (as kubectl get -o yaml | kubectl
	// create would): injected once.
	again := native.DeepCopy()
	again.ObjectMeta = metav1.ObjectMeta{Name: "again", Annotations: native.Annotations}
	again.Spec.NodeName = ""
	if got := create("shop", again); len(got.Spec.InitContainers) != 2 || len(got.Spec.Containers) != 1 {
		t.Errorf("resubmitted: init %v containers %v, want no second injection",
			containerNames(got.Spec.InitContainers), containerNames(got.Spec.Containers))
	}

	// A bad annotation value: refused, naming it.
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, pod("bad", map[string]string{"tender.dev/exclude-inbound-ports": "http"}),
		metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "tender.dev/exclude-inbound-ports") {
		t.Errorf("a pod with a bad annotation: %v, want refused naming the annotation", err)
	}

	// A Service with a bad annotation: an Event, and the rest served.
	_, err = cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter", Annotations: map[string]string{"tender.dev/timeout": "soon", "tender.dev/lb": "LEAST_REQUEST"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(ctx, t, "an InvalidAnnotation event on shop/greeter", func() bool {
		evs, err := cs.CoreV1().Events("shop").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "InvalidAnnotation" && e.InvolvedObject.Name == "greeter" && strings.Contains(e.Message, "tender.dev/timeout") {
				return true
			}
		}
		return false
	})
	waitUntil(ctx, t, "greeter served with its good annotation", func() bool {
		body := waitHTTP(ctx, t, fmt.Sprintf("http://127.0.0.1:%d/debug/config", ports[1]), 200)
		return strings.Contains(string(body), "greeter.shop.svc.cluster.local") && strings.Contains(string(body), "LEAST_REQUEST")
	})
	waitHTTP(ctx, t, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]), 200)
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// demoNS is the meshed namespace of the cluster test and make demo-k8s.
const demoNS = "demo"

// demoWorkloads are the greeter (3 replicas, its Service) and the
// client's service account, as a user deploys them: plain manifests, no
// sidecar in them; the namespace label asks for injection.
const demoWorkloads = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {tender-injection: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: greeter, namespace: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: demo}
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: demo}
spec:
  selector: {app: greeter}
  ports: [{name: http, port: 8080, targetPort: 8080}, {name: grpc, port: 9090, targetPort: 9090, appProtocol: grpc}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: greeter, namespace: demo}
spec:
  replicas: 3
  selector: {matchLabels: {app: greeter}}
  template:
    metadata: {labels: {app: greeter}}
    spec:
      serviceAccountName: greeter
      containers:
        - name: greeter
          image: ghcr.io/tender-mesh/greeter:0.1.0
          ports: [{name: http, containerPort: 8080}, {name: grpc, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
          # What a user sets for a rollout without loss: the app stops
          # after its endpoint's removal has reached the clients. Without
          # it, a request the sidecar writes on a kept-alive connection the
          # app closes as idle at shutdown is reset, unanswered.
          lifecycle: {preStop: {sleep: {seconds: 3}}}
`

// demoClient calls the greeter without end, over HTTP/1.1 (client) and
// gRPC (grpc-client), two requests at a time each, printing the instance
// that answered or the error of each.
var demoClient = clientDeployment("client", "--http=http://greeter.demo.svc.cluster.local:8080") + "---\n" +
	clientDeployment("grpc-client", "--target=greeter.demo.svc.cluster.local:9090")

func clientDeployment(name, target string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      serviceAccountName: client
      containers:
        - name: client
          image: ghcr.io/tender-mesh/greeter:0.1.0
          command: [/greeter-client]
          args: [%[2]s, --count=100000000, --concurrency=2, --interval=20ms, --timeout=10s]
`, name, target)
}

// TestKubernetesCluster is the user's path in a real one-node cluster:
// helm install with the images make images built, a namespace labelled
// for injection, a greeter and a client deployed as plain manifests; the
// pods get the native sidecar, capture rules and certificates; the client
// reaches every greeter over mutual TLS; traces reach Jaeger and metrics
// Prometheus; scaling and restarting the greeter and deleting a control
// plane pod under load lose no request; helm uninstall leaves nothing.
func TestKubernetesCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the one-node cluster takes minutes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	jaeger, prom := c.observability(t, ctx)

	cps := c.installDemo(ctx, t)
	greeters := c.readyPods(ctx, t, demoNS, "app=greeter")
	for _, p := range append(greeters, c.readyPods(ctx, t, demoNS, "app=client")...) {
		c.checkInjected(ctx, t, p)
	}
	client := c.readyPods(ctx, t, demoNS, "app=client")[0]
	grpcClient := c.readyPods(ctx, t, demoNS, "app=grpc-client")[0]
	c.checkInjected(ctx, t, grpcClient)
	logs, grpcLogs := c.follow(ctx, t, client), c.follow(ctx, t, grpcClient)

	// Every greeter answers, over mutual TLS, with the client's identity.
	waitUntil(ctx, t, "replies from all three greeters, over HTTP and gRPC", func() bool {
		r, g := logs.replies(), grpcLogs.replies()
		return slices.IndexFunc(greeters, func(p corev1.Pod) bool { return r[p.Name] == 0 || g[p.Name] == 0 }) < 0
	})
	if err := prom.discover(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(ctx, t, "mutual TLS requests in Prometheus", func() bool {
		return prom.query(ctx, `sum(tender_requests_total{namespace="demo",connection_security_policy="mutual_tls",source_principal="spiffe://cluster.local/ns/demo/sa/client"})`) > 0
	})
	waitUntil(ctx, t, "the sidecars' spans in Jaeger", func() bool {
		services := jaeger.services(ctx)
		return slices.ContainsFunc(services, func(s string) bool { return strings.Contains(s, "greeter") })
	})

	// Under load: scale up, scale down, restart, lose nothing.
	step := func(what string, args ...string) {
		t.Helper()
		before, grpcBefore := logs.ok(), grpcLogs.ok()
		c.kubectl(ctx, t, args...)
		waitUntil(ctx, t, what+" settled", func() bool {
			return len(c.readyPods(ctx, t, demoNS, "app=greeter")) == c.replicas(ctx, t, "greeter") && c.settled(ctx, t, "greeter")
		})
		waitUntil(ctx, t, "requests after "+what, func() bool { return logs.ok() > before+50 && grpcLogs.ok() > grpcBefore+50 })
		if f := logs.failed(); len(f) > 0 {
			c.sidecarLog(ctx, t, client, `"status":503`)
			t.Fatalf("%s: %d HTTP requests failed, first: %s", what, len(f), f[0])
		}
		if f := grpcLogs.failed(); len(f) > 0 {
			c.sidecarLog(ctx, t, grpcClient, `"grpc_status":"14"`)
			t.Fatalf("%s: %d gRPC calls failed, first: %s", what, len(f), f[0])
		}
		t.Logf("%s: %d HTTP requests and %d gRPC calls, 0 failed", what, logs.ok()-before, grpcLogs.ok()-grpcBefore)
	}
	step("scale to 5", "scale", "-n", demoNS, "deployment/greeter", "--replicas=5")
	step("scale to 2", "scale", "-n", demoNS, "deployment/greeter", "--replicas=2")
	step("rollout restart", "rollout", "restart", "-n", demoNS, "deployment/greeter")
	step("control plane pod deleted", "delete", "pod", "-n", releaseNS, cps[0].Name, "--wait=false")

	// helm uninstall: nothing of the release is left.
	logs.stop()
	grpcLogs.stop()
	c.kubectl(ctx, t, "delete", "namespace", demoNS, "--wait=true", "--timeout=3m")
	c.helm(ctx, t, "uninstall", releaseName, "--namespace", releaseNS, "--wait", "--timeout", "3m")
	waitUntil(ctx, t, "nothing of the release left", func() bool {
		// What Kubernetes itself puts in every namespace is not the
		// release's.
		left := slices.DeleteFunc(c.leftovers(ctx, t), func(o string) bool {
			return o == "ServiceAccount "+releaseNS+"/default" || o == "ConfigMap "+releaseNS+"/kube-root-ca.crt"
		})
		if len(left) > 0 {
			t.Logf("left: %v", left)
		}
		return len(left) == 0
	})
}

// installDemo installs the chart as a user does (its defaults, with
// tracing to the node's Jaeger and access logs on), waits for the
// control plane's two replicas to be Ready through their own probes,
// deploys the greeter and, once it is Ready, the client; it returns the
// control plane's pods.
func (c *cluster) installDemo(ctx context.Context, t *testing.T) []corev1.Pod {
	t.Helper()
	c.helm(ctx, t, "install", releaseName, chartDir, "--namespace", releaseNS, "--create-namespace", "--wait", "--timeout", "4m",
		"--set", "tracing.otlpEndpoint="+nodeIP+":4317", "--set-string", "tracing.sampling=1", "--set", "sidecar.accessLog=json")
	cps := c.pods(ctx, t, releaseNS, "app.kubernetes.io/name=tender")
	if len(cps) != 2 {
		t.Fatalf("control plane: %d pods Ready, want the chart's 2", len(cps))
	}
	c.apply(ctx, t, demoWorkloads)
	waitUntil(ctx, t, "greeters Ready", func() bool { return len(c.readyPods(ctx, t, demoNS, "app=greeter")) == 3 })
	c.apply(ctx, t, demoClient)
	waitUntil(ctx, t, "clients Ready", func() bool {
		return len(c.readyPods(ctx, t, demoNS, "app=client")) == 1 && len(c.readyPods(ctx, t, demoNS, "app=grpc-client")) == 1
	})
	return cps
}

// apply applies manifests with kubectl.
func (c *cluster) apply(ctx context.Context, t *testing.T, manifests string) {
	t.Helper()
	f := filepath.Join(c.dir, fmt.Sprintf("apply-%d.yaml", time.Now().UnixNano()))
	writeFile(t, f, manifests)
	c.kubectl(ctx, t, "apply", "-f", f)
}

// pods lists the Ready pods of a selector, waiting until there is one.
func (c *cluster) pods(ctx context.Context, t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	var out []corev1.Pod
	waitUntil(ctx, t, "pods "+selector+" Ready", func() bool {
		out = c.readyPods(ctx, t, ns, selector)
		return len(out) > 0
	})
	return out
}

// readyPods lists the pods of a selector that are Ready and not being
// deleted.
func (c *cluster) readyPods(ctx context.Context, t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	l, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Logf("list pods %s: %v", selector, err)
		return nil
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out
}

// replicas is a Deployment's wanted replica count.
func (c *cluster) replicas(ctx context.Context, t *testing.T, name string) int {
	t.Helper()
	d, err := c.client.AppsV1().Deployments(demoNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil || d.Spec.Replicas == nil {
		return -1
	}
	return int(*d.Spec.Replicas)
}

// settled reports whether a Deployment has only its updated pods left
// (none terminating).
func (c *cluster) settled(ctx context.Context, t *testing.T, name string) bool {
	t.Helper()
	d, err := c.client.AppsV1().Deployments(demoNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	l, err := c.client.CoreV1().Pods(demoNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return false
	}
	return d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == *d.Spec.Replicas &&
		d.Status.Replicas == *d.Spec.Replicas && len(l.Items) == int(*d.Spec.Replicas)
}

// checkInjected checks what the injector and the sidecar's init did to
// a pod: the native sidecar (an init container that keeps running), the
// init container's capture rules in the pod's iptables, and a workload
// certificate for the pod's service account.
func (c *cluster) checkInjected(ctx context.Context, t *testing.T, p corev1.Pod) {
	t.Helper()
	var sidecar *corev1.Container
	for i, ic := range p.Spec.InitContainers {
		if ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecar = &p.Spec.InitContainers[i]
		}
	}
	if sidecar == nil || !strings.HasPrefix(sidecar.Image, "ghcr.io/tender-mesh/sidecar:") {
		t.Fatalf("pod %s: no native sidecar (init containers %v)", p.Name, containerNames(p.Spec.InitContainers))
	}
	netns := c.podNetns(ctx, t, p)
	rules, err := exec.CommandContext(ctx, "nsenter", "--net="+netns, "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("pod %s: iptables-save: %v: %s", p.Name, err, rules)
	}
	if !strings.Contains(string(rules), "TENDER") || !strings.Contains(string(rules), "--uid-owner 1337") {
		t.Fatalf("pod %s: no capture rules in its network namespace:\n%s", p.Name, rules)
	}
	admin := &pod{name: p.Name, nsPath: netns, ip: p.Status.PodIP}
	var certs struct {
		MTLS     bool `json:"mtls"`
		Workload *struct {
			Identity string `json:"identity"`
		} `json:"workload"`
	}
	body := waitPodHTTP(ctx, t, admin, "http://127.0.0.1:15000/certs", 200)
	if err := json.Unmarshal(body, &certs); err != nil {
		t.Fatalf("pod %s: /certs: %v: %s", p.Name, err, body)
	}
	want := "spiffe://cluster.local/ns/" + p.Namespace + "/sa/" + p.Spec.ServiceAccountName
	if !certs.MTLS || certs.Workload == nil || certs.Workload.Identity != want {
		t.Fatalf("pod %s: /certs %s, want a workload certificate for %s", p.Name, body, want)
	}
}

// sidecarLog prints the lines of a pod's sidecar log that contain s.
func (c *cluster) sidecarLog(ctx context.Context, t *testing.T, p corev1.Pod, s string) {
	t.Helper()
	for _, ic := range p.Spec.InitContainers {
		if ic.RestartPolicy == nil {
			continue
		}
		b, err := c.client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: ic.Name}).DoRaw(ctx)
		if err != nil {
			t.Logf("sidecar log of %s: %v", p.Name, err)
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) {
				t.Logf("%s sidecar: %s", p.Name, line)
			}
		}
	}
}

// podNetns finds a running pod's network namespace through its first
// app container's process.
func (c *cluster) podNetns(ctx context.Context, t *testing.T, p corev1.Pod) string {
	t.Helper()
	if len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s: no container status", p.Name)
	}
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.sock, "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			return "/proc/" + f[1] + "/ns/net"
		}
	}
	t.Fatalf("pod %s: container %s not among containerd's tasks:\n%s", p.Name, id, out)
	return ""
}

// clientLog follows a greeter-client's output: one line per request, the
// instance that answered or "error: ...".
type clientLog struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	counts  map[string]int
	fails   []string
	success int
}

func (c *cluster) follow(ctx context.Context, t *testing.T, p corev1.Pod) *clientLog {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	l := &clientLog{cancel: cancel, done: make(chan struct{}), counts: map[string]int{}}
	rc, err := c.client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: p.Spec.Containers[0].Name, Follow: true}).Stream(ctx)
	if err != nil {
		cancel()
		t.Fatalf("logs of %s: %v", p.Name, err)
	}
	go func() {
		defer close(l.done)
		defer rc.Close()
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			line := sc.Text()
			l.mu.Lock()
			if strings.HasPrefix(line, "error:") {
				l.fails = append(l.fails, line)
			} else if inst, _, ok := strings.Cut(line, " "); ok {
				l.counts[inst]++
				l.success++
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(l.stop)
	return l
}

func (l *clientLog) stop() { l.cancel(); <-l.done }

func (l *clientLog) ok() int { l.mu.Lock(); defer l.mu.Unlock(); return l.success }

func (l *clientLog) failed() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.fails)
}

func (l *clientLog) replies() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.counts)
}

// jaegerAPI and promAPI query Jaeger and Prometheus inside the node.
type (
	jaegerAPI struct{ c *http.Client }
	promAPI   struct {
		c       *http.Client
		cluster *cluster
	}
)

// discover writes the scrape targets Prometheus's Kubernetes discovery
// would find with the usual relabelling: every running pod annotated
// prometheus.io/scrape: "true", at its IP and prometheus.io/port, path
// prometheus.io/path, labelled with its namespace and name.
func (p *promAPI) discover(ctx context.Context) error {
	l, err := p.cluster.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := []group{}
	for _, pod := range l.Items {
		a := pod.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] == "" || pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
			continue
		}
		labels := map[string]string{"namespace": pod.Namespace, "pod": pod.Name}
		if path := a["prometheus.io/path"]; path != "" {
			labels["__metrics_path__"] = path
		}
		groups = append(groups, group{Targets: []string{pod.Status.PodIP + ":" + a["prometheus.io/port"]}, Labels: labels})
	}
	b, _ := json.Marshal(groups)
	tmp := filepath.Join(p.cluster.dir, "pods.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.cluster.dir, "pods.json"))
}

// observability starts Jaeger and Prometheus on the node, as a user runs
// them beside the mesh: Jaeger takes OTLP on :4317, Prometheus finds the
// pods through the API server and scrapes those with prometheus.io/*
// annotations (the control plane's, and the sidecars' the injector adds).
func (c *cluster) observability(t *testing.T, ctx context.Context) (*jaegerAPI, *promAPI) {
	t.Helper()
	jaegerBin := tool(t, "jaeger")
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not installed (Debian package prometheus; .ci/run installs it)")
	}
	c.run(t, "jaeger", "/usr/bin/env", "JAEGER_LISTEN_HOST=0.0.0.0", jaegerBin)
	// Debian's Prometheus is built without Kubernetes service discovery,
	// so the test does its part: it lists the pods with prometheus.io/*
	// annotations into a file Prometheus watches (promAPI.discover).
	cfg := fmt.Sprintf(`global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: pods
    file_sd_configs: [{files: [%q]}]
`, filepath.Join(c.dir, "pods.json"))
	writeFile(t, filepath.Join(c.dir, "prometheus.yml"), cfg)
	writeFile(t, filepath.Join(c.dir, "pods.json"), "[]")
	c.run(t, "prometheus", promBin, "--config.file="+filepath.Join(c.dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(c.dir, "prometheus"), "--web.listen-address="+nodeIP+":9090", "--log.level=warn")
	hc := c.node.httpClient(false)
	t.Cleanup(hc.CloseIdleConnections)
	return &jaegerAPI{hc}, &promAPI{c: hc, cluster: c}
}

func getJSON(ctx context.Context, c *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", u, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// services lists the services Jaeger has spans of.
func (j *jaegerAPI) services(ctx context.Context) []string {
	var r struct {
		Data []string `json:"data"`
	}
	if err := getJSON(ctx, j.c, "http://"+nodeIP+":16686/api/services", &r); err != nil {
		return nil
	}
	return r.Data
}

// query returns the value of a Prometheus instant query that yields one
// sample (0 when it yields none).
func (p *promAPI) query(ctx context.Context, q string) float64 {
	var r struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := getJSON(ctx, p.c, "http://"+nodeIP+":9090/api/v1/query?query="+url.QueryEscape(q), &r); err != nil || len(r.Data.Result) == 0 {
		return 0
	}
	var v float64
	if s, ok := r.Data.Result[0].Value[1].(string); ok {
		fmt.Sscan(s, &v) //nolint:errcheck // 0 when not a number
	}
	return v
}

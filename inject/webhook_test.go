package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tender-mesh/tender/inject/capture"
)

var testConfig = Config{
	Image: "ghcr.io/tender-mesh/sidecar:dev", XDSAddr: "tender-controlplane.tender-system.svc:15010",
	NativeSidecar: true, LogLevel: "info", DrainTimeout: 30 * time.Second,
	Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")}},
}

func appPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "greeter-1", Namespace: "shop", Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "migrate", Image: "migrate:v1"}},
			Containers:     []corev1.Container{{Name: "greeter", Image: "greeter:v1"}},
		},
	}
}

// admit sends pod through the webhook as the API server would, and
// returns the response and the pod with the patch applied.
func admit(t *testing.T, wh *Webhook, pod *corev1.Pod) (*admissionv1.AdmissionResponse, *corev1.Pod) {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("42"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "shop",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	}
	body, _ := json.Marshal(review)
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	wh.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("webhook answered %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("response %s: %v", rec.Body, err)
	}
	if out.Response.UID != "42" || out.Kind != "AdmissionReview" {
		t.Errorf("response uid %q kind %q", out.Response.UID, out.Kind)
	}
	if len(out.Response.Patch) == 0 {
		return out.Response, pod
	}
	p, err := jsonpatch.DecodePatch(out.Response.Patch)
	if err != nil {
		t.Fatalf("patch %s: %v", out.Response.Patch, err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying %s: %v", out.Response.Patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	return out.Response, &got
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestWebhookInject(t *testing.T) {
	enabled := func(context.Context, string) (map[string]string, error) {
		return map[string]string{NamespaceLabel: "enabled"}, nil
	}
	var results []string
	wh := &Webhook{Config: testConfig, NamespaceLabels: enabled, Observe: func(r string) { results = append(results, r) }}

	t.Run("native sidecar", func(t *testing.T) {
		resp, got := admit(t, wh, appPod(nil))
		if !resp.Allowed || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("response %+v", resp)
		}
		if want := []string{ContainerInit, ContainerProxy, "migrate"}; !slices.Equal(names(got.Spec.InitContainers), want) {
			t.Errorf("init containers %v, want %v", names(got.Spec.InitContainers), want)
		}
		if want := []string{"greeter"}; !slices.Equal(names(got.Spec.Containers), want) {
			t.Errorf("containers %v, want %v", names(got.Spec.Containers), want)
		}
		proxy := got.Spec.InitContainers[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways || proxy.StartupProbe == nil {
			t.Errorf("proxy is not a native sidecar with a startup probe: %+v", proxy)
		}
		init := got.Spec.InitContainers[0]
		sc := init.SecurityContext
		if *sc.RunAsUser != 0 || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || *sc.AllowPrivilegeEscalation {
			t.Errorf("init container security context %+v", sc)
		}
		if psc := proxy.SecurityContext; *psc.RunAsUser != capture.ProxyUID || !*psc.RunAsNonRoot || len(psc.Capabilities.Add) != 0 {
			t.Errorf("proxy security context %+v; want UID %d, non-root, no capabilities", psc, capture.ProxyUID)
		}
		var env []string
		for _, e := range proxy.Env {
			env = append(env, e.Name+"="+e.ValueFrom.FieldRef.FieldPath)
		}
		for _, want := range []string{"POD_NAME=metadata.name", "POD_NAMESPACE=metadata.namespace", "SERVICE_ACCOUNT=spec.serviceAccountName"} {
			if !slices.Contains(env, want) {
				t.Errorf("proxy env %v lacks %s", env, want)
			}
		}
		if !slices.Contains(proxy.Args, "--xds-addr="+testConfig.XDSAddr) || !slices.Contains(proxy.Args, "--drain-timeout=30s") {
			t.Errorf("proxy args %v", proxy.Args)
		}
		if slices.ContainsFunc(proxy.Args, func(a string) bool { return strings.HasPrefix(a, "--shutdown-delay") }) {
			t.Errorf("native proxy args %v: a native sidecar stops after its app, it needs no shutdown delay", proxy.Args)
		}
		if got.Annotations[AnnotationStatus] != "injected" || got.Annotations["prometheus.io/port"] != "15090" {
			t.Errorf("annotations %v", got.Annotations)
		}
		if g := got.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
			t.Errorf("termination grace %v, want at least the drain timeout", g)
		}

		// The same pod again, as stored: left alone.
		resp, again := admit(t, wh, got)
		if !resp.Allowed || len(resp.Patch) != 0 || len(again.Spec.InitContainers) != 3 {
			t.Errorf("an injected pod was changed again: patch %s", resp.Patch)
		}
	})

	t.Run("classic sidecar", func(t *testing.T) {
		_, got := admit(t, wh, appPod(map[string]string{AnnotationNativeSidecar: "false"}))
		if want := []string{ContainerInit, "migrate"}; !slices.Equal(names(got.Spec.InitContainers), want) {
			t.Errorf("init containers %v, want %v", names(got.Spec.InitContainers), want)
		}
		if want := []string{ContainerProxy, "greeter"}; !slices.Equal(names(got.Spec.Containers), want) {
			t.Errorf("containers %v, want %v (the proxy first)", names(got.Spec.Containers), want)
		}
		if ls := got.Spec.Containers[0].Lifecycle; ls == nil || ls.PostStart == nil || !slices.Contains(ls.PostStart.Exec.Command, "wait") {
			t.Errorf("classic proxy without a postStart wait: %+v", ls)
		}
		// The app stops with the sidecar and may call out meanwhile.
		if args := got.Spec.Containers[0].Args; !slices.Contains(args, "--shutdown-delay=5s") {
			t.Errorf("classic proxy args %v: want --shutdown-delay=5s", args)
		}
	})

	t.Run("annotations", func(t *testing.T) {
		_, got := admit(t, wh, appPod(map[string]string{
			AnnotationExcludeInbound: "8081, 9000", AnnotationExcludeOutbound: "5432", AnnotationExcludeOutboundIPs: "10.0.0.0/8",
			AnnotationProxyMemoryLimit: "128Mi", AnnotationLogLevel: "debug", AnnotationProxyImage: "mirror/sidecar:1",
			AnnotationDrainTimeout: "60s", AnnotationInboundDeliver: "loopback",
			AnnotationPreload: "Greeter.default.svc.cluster.local:8080, db.data.svc.cluster.local:5432",
		}))
		init, proxy := got.Spec.InitContainers[0], got.Spec.InitContainers[1]
		for _, want := range []string{"--exclude-inbound-ports=8081,9000", "--exclude-outbound-ports=5432", "--exclude-outbound-cidrs=10.0.0.0/8"} {
			if !slices.Contains(init.Args, want) {
				t.Errorf("init args %v lack %s", init.Args, want)
			}
		}
		if m := proxy.Resources.Limits[corev1.ResourceMemory]; m.String() != "128Mi" || proxy.Image != "mirror/sidecar:1" ||
			!slices.Contains(proxy.Args, "--log-level=debug") || !slices.Contains(proxy.Args, "--drain-timeout=1m0s") ||
			!slices.Contains(proxy.Args, "--inbound-deliver=loopback") ||
			!slices.Contains(proxy.Args, "--preload=greeter.default.svc.cluster.local:8080,db.data.svc.cluster.local:5432") {
			t.Errorf("proxy %s %v %v", proxy.Image, proxy.Args, proxy.Resources)
		}
		if g := *got.Spec.TerminationGracePeriodSeconds; g < 60 {
			t.Errorf("termination grace %d, want at least 60", g)
		}
	})

	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
		ns   map[string]string
	}{
		{"opted out", appPod(map[string]string{AnnotationInject: "false"}), map[string]string{NamespaceLabel: "enabled"}},
		{"namespace not enabled", appPod(nil), nil},
		{"namespace disabled", appPod(map[string]string{AnnotationInject: "true"}), map[string]string{NamespaceLabel: "disabled"}},
		{"host network", func() *corev1.Pod { p := appPod(nil); p.Spec.HostNetwork = true; return p }(), map[string]string{NamespaceLabel: "enabled"}},
		{"control plane", func() *corev1.Pod {
			p := appPod(nil)
			p.Labels = map[string]string{LabelControlPlane: "true"}
			return p
		}(),
			map[string]string{NamespaceLabel: "enabled"}},
	} {
		t.Run("skipped: "+tt.name, func(t *testing.T) {
			w := &Webhook{Config: testConfig, NamespaceLabels: func(context.Context, string) (map[string]string, error) { return tt.ns, nil }}
			resp, got := admit(t, w, tt.pod)
			if !resp.Allowed || len(resp.Patch) != 0 || len(got.Spec.InitContainers) != 1 {
				t.Errorf("allowed %v patch %s", resp.Allowed, resp.Patch)
			}
		})
	}
	t.Run("opted in, namespace unlabelled", func(t *testing.T) {
		w := &Webhook{Config: testConfig}
		if _, got := admit(t, w, appPod(map[string]string{AnnotationInject: "true"})); !hasContainer(got, ContainerProxy) {
			t.Error("a pod annotated inject=true was not injected")
		}
	})
	t.Run("bad annotation refused", func(t *testing.T) {
		resp, _ := admit(t, wh, appPod(map[string]string{AnnotationExcludeInbound: "80,http"}))
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, AnnotationExcludeInbound) {
			t.Errorf("response %+v; want refused, naming the annotation", resp)
		}
	})
	if !slices.Contains(results, "injected") || !slices.Contains(results, "skipped") || !slices.Contains(results, "refused") {
		t.Errorf("observed %v", results)
	}
}

func TestWebhookBadRequests(t *testing.T) {
	wh := &Webhook{Config: testConfig}
	for _, tt := range []struct {
		name, method, ctype, body string
		want                      int
	}{
		{"GET", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"not JSON", http.MethodPost, "text/plain", "{}", http.StatusUnsupportedMediaType},
		{"garbage", http.MethodPost, "application/json", "{not json", http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", `{"kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"huge", http.MethodPost, "application/json", `{"x":"` + strings.Repeat("a", DefaultMaxReviewBytes) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(tt.method, "/inject", strings.NewReader(tt.body))
		r.Header.Set("Content-Type", tt.ctype)
		wh.ServeHTTP(rec, r)
		if rec.Code != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, rec.Code, tt.want)
		}
	}
	// A pod that does not decode is refused with a reason, not a panic.
	review := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":"nope"}}}}`
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/inject", strings.NewReader(review))
	r.Header.Set("Content-Type", "application/json")
	wh.ServeHTTP(rec, r)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil || out.Response.Allowed {
		t.Errorf("undecodable pod: %d %s", rec.Code, rec.Body)
	}
}

// TestWebhookAnnotationBounds: every annotation the injector reads is
// bounded before it is parsed (issue 22, item 1). A quantity in exponent
// form made resource.ParseQuantity compute 10^999999999 for minutes, in
// the process that also serves xDS and the CA.
func TestWebhookAnnotationBounds(t *testing.T) {
	wh := &Webhook{Config: testConfig}
	long := strings.Repeat("8", 4096)
	for _, tt := range []struct{ key, value string }{
		{AnnotationProxyMemory, "1e-999999999"},
		{AnnotationProxyMemoryLimit, "1e-999999999"},
		{AnnotationProxyCPU, "1E999999999"},
		{AnnotationProxyCPULimit, "1e-999999999"},
		{AnnotationProxyMemory, "-64Mi"},
		{AnnotationProxyMemory, "0"},
		{AnnotationProxyMemory, "64Pi"},
		{AnnotationProxyCPU, "100000"},
		{AnnotationProxyMemory, long},
		{AnnotationExcludeInbound, long},
		{AnnotationExcludeOutbound, strings.Repeat("80,", 1000) + "80"},
		{AnnotationExcludeOutboundIPs, strings.Repeat("10.0.0.0/8,", 1000) + "10.0.0.0/8"},
		{AnnotationExcludeOutboundIPs, "10.0.0.0/33"},
		{AnnotationNativeSidecar, "yes"},
		{AnnotationDrainTimeout, "9999999h"},
		{AnnotationDrainTimeout, long + "s"},
		{AnnotationProxyImage, "evil image\nwith: spaces"},
		{AnnotationProxyImage, strings.Repeat("a", 1024)},
		{AnnotationLogLevel, "trace"},
		{AnnotationInboundDeliver, "127.0.0.1"},
		{AnnotationPreload, "greeter.default.svc.cluster.local"},
		{AnnotationPreload, "greeter:99999"},
		{AnnotationPreload, "--log-level=debug:80"},
	} {
		t.Run(tt.key+"="+tt.value[:min(len(tt.value), 16)], func(t *testing.T) {
			pod := appPod(map[string]string{AnnotationInject: "true", tt.key: tt.value})
			done := make(chan *admissionv1.AdmissionResponse, 1)
			go func() {
				resp, _ := admit(t, wh, pod)
				done <- resp
			}()
			select {
			case resp := <-done:
				if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, tt.key) {
					t.Errorf("got allowed=%v result %+v, want refused naming %s", resp.Allowed, resp.Result, tt.key)
				}
				if resp.Result != nil && len(resp.Result.Message) > 512 {
					t.Errorf("got a refusal of %d bytes, want a short one", len(resp.Result.Message))
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("annotation %s=%.16q: no answer in 20s, want a refusal at once", tt.key, tt.value)
			}
		})
	}
}

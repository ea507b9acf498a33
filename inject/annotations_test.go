package inject

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestInjectGOMEMLIMIT(t *testing.T) {
	withLimit := testConfig
	withLimit.Resources = *testConfig.Resources.DeepCopy()
	withLimit.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}
	for _, tt := range []struct {
		name  string
		cfg   Config
		annot map[string]string
		want  bool
	}{
		{"limit from the flags", withLimit, nil, true},
		{"limit from the annotation", testConfig, map[string]string{AnnotationProxyMemoryLimit: "128Mi"}, true},
		{"no limit", testConfig, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inject(appPod(tt.annot), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var proxy *corev1.Container
			for i, c := range got.Spec.InitContainers {
				if c.Name == ContainerProxy {
					proxy = &got.Spec.InitContainers[i]
				}
			}
			if proxy == nil {
				t.Fatal("no proxy container")
			}
			var env *corev1.EnvVar
			for i, e := range proxy.Env {
				if e.Name == "GOMEMLIMIT" {
					env = &proxy.Env[i]
				}
			}
			if !tt.want {
				if env != nil {
					t.Errorf("got GOMEMLIMIT %+v without a memory limit, want none", env)
				}
				return
			}
			want := corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
				ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: ContainerProxy, Resource: "limits.memory"},
			}}
			gotJSON, _ := json.Marshal(env)
			wantJSON, _ := json.Marshal(want)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Errorf("got GOMEMLIMIT %s, want %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestParseAnnotationsAccepted(t *testing.T) {
	for _, a := range []map[string]string{
		{AnnotationProxyCPU: "100m", AnnotationProxyCPULimit: "2", AnnotationProxyMemory: "64Mi", AnnotationProxyMemoryLimit: "1Gi"},
		{AnnotationProxyMemory: "0.5Gi", AnnotationProxyCPU: "1.5"},
		{AnnotationExcludeInbound: "", AnnotationExcludeOutboundIPs: "10.0.0.0/8, fd00::/8"},
		{AnnotationNativeSidecar: "FALSE", AnnotationInject: "1", AnnotationDrainTimeout: "0s"},
		{AnnotationProxyImage: "registry.example.com:5000/mesh/sidecar:v1.2@sha256:" + strings.Repeat("a", 64)},
	} {
		if _, err := parseAnnotations(a); err != nil {
			t.Errorf("parseAnnotations(%v): got %v, want accepted", a, err)
		}
	}
	if _, err := parseAnnotations(map[string]string{AnnotationProxyMemory: "128Mi", AnnotationProxyMemoryLimit: "64Mi"}); err == nil {
		t.Error("a memory limit below the request: got accepted, want refused")
	}
}

// annotationKeys are every annotation the injector reads.
var annotationKeys = []string{
	AnnotationInject, AnnotationNativeSidecar, AnnotationExcludeInbound, AnnotationExcludeOutbound,
	AnnotationExcludeOutboundIPs, AnnotationProxyImage, AnnotationProxyCPU, AnnotationProxyMemory,
	AnnotationProxyCPULimit, AnnotationProxyMemoryLimit, AnnotationLogLevel, AnnotationDrainTimeout,
	AnnotationInboundDeliver, AnnotationPreload,
}

// FuzzAnnotations gives every annotation the injector reads an arbitrary
// value: Inject answers a pod or an error naming the annotation, and
// what it accepts it accepts again from the pod it wrote.
func FuzzAnnotations(f *testing.F) {
	for _, s := range []string{"1e-999999999", "128Mi", "80,8080", "10.0.0.0/8", "true", "30s", "debug", "img:v1", "", "-1", "0.5"} {
		f.Add(uint8(0), s)
	}
	f.Fuzz(func(t *testing.T, k uint8, v string) {
		key := annotationKeys[int(k)%len(annotationKeys)]
		out, err := Inject(appPod(map[string]string{key: v}), testConfig)
		if err != nil {
			if !strings.Contains(err.Error(), key) || len(err.Error()) > 512 {
				t.Fatalf("Inject with %s=%q: got error %q, want a short one naming the annotation", key, v, err)
			}
			return
		}
		if _, err := parseAnnotations(out.Annotations); err != nil {
			t.Fatalf("%s=%q accepted, then refused on the injected pod: %v", key, v, err)
		}
	})
}

// FuzzWebhook sends arbitrary bodies to the admission handler, and
// reviews of pods with arbitrary annotations: it answers, never panics.
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"annotations":{"tender.dev/inject":"true","tender.dev/proxy-memory":"1e-999999999"}},"spec":{"containers":[{"name":"a"}]}}}}`))
	f.Add([]byte(`{"request":{"kind":{"kind":"Pod"},"operation":"CREATE","object":{"metadata":{"annotations":{"tender.dev/inject":"true","tender.dev/exclude-outbound-cidrs":"::/0,1.2.3.4/33"}}}}}`))
	f.Add([]byte(`{"request":null}`))
	f.Add([]byte(`[`))
	wh := &Webhook{Config: testConfig}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest && rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("got status %d, want 200, 400 or 413", rec.Code)
		}
	})
}

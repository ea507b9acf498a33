package kube

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/tender-mesh/tender/discovery"
)

// sink keeps what the source reported.
type sink struct {
	mu      sync.Mutex
	updates [][]discovery.Service
}

func (s *sink) Update(source string, services []discovery.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates = append(s.updates, services)
}

func (s *sink) ReportError(string, error) {}

func (s *sink) last() []discovery.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.updates) == 0 {
		return nil
	}
	return s.updates[len(s.updates)-1]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func endpointCount(svcs []discovery.Service, key string) int {
	for _, s := range svcs {
		if s.Key() == key {
			return len(s.Endpoints)
		}
	}
	return -1
}

func TestSource(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cart := service("cart", nil, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP})
	three := slice("cart", "cart-abc", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
		ep{ip: "10.1.0.11", pod: "cart-1", ready: ptr.To(true)}, ep{ip: "10.1.0.12", ready: ptr.To(true)}, ep{ip: "10.1.0.13", ready: ptr.To(true)})
	other := service("users", nil, corev1.ServicePort{Name: "http", Port: 80})
	other.Namespace = "elsewhere"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cart-1", Namespace: "shop", Labels: map[string]string{"app": "cart"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "cart:v1"}}},
		Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.1.0.11"}}}}
	client := fake.NewClientset(cart, three, other, pod)

	src, err := New(Options{Client: client, Namespaces: []string{"shop"}, MinInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()

	waitFor(t, "the first report", func() bool { return s.last() != nil })
	first := s.last()
	if len(first) != 1 || first[0].Key() != "shop/cart" || len(first[0].Endpoints) != 3 {
		t.Fatalf("first report %+v; want shop/cart alone (the other namespace is not watched) with 3 endpoints", first)
	}
	if l := first[0].Endpoints[0].Labels["app"]; l != "cart" {
		t.Errorf("endpoint labels %v, want the pod's", first[0].Endpoints[0].Labels)
	}

	// Scaling the slice to two endpoints is reported.
	two := three.DeepCopy()
	two.Endpoints = two.Endpoints[:2]
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Update(ctx, two, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two endpoints", func() bool { return endpointCount(s.last(), "shop/cart") == 2 })

	// A bad annotation: a Warning Event on the Service, the rest served.
	bad := cart.DeepCopy()
	bad.Annotations = map[string]string{AnnotationTimeout: "soon", AnnotationLB: "LEAST_REQUEST"}
	if _, err := client.CoreV1().Services("shop").Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lb annotation applied", func() bool {
		svcs := s.last()
		return len(svcs) == 1 && svcs[0].Policy.LB == discovery.LBLeastRequest
	})
	var events *corev1.EventList
	waitFor(t, "an InvalidAnnotation event", func() bool {
		events, err = client.CoreV1().Events("shop").List(ctx, metav1.ListOptions{})
		return err == nil && len(events.Items) > 0
	})
	e := events.Items[0]
	if e.Reason != EventReasonInvalidAnnotation || e.Type != corev1.EventTypeWarning || e.InvolvedObject.Name != "cart" {
		t.Errorf("event %s %s on %s: %q", e.Type, e.Reason, e.InvolvedObject.Name, e.Message)
	}
	// The same bad value is reported once, however often it is rebuilt.
	for i := range 3 {
		touched := bad.DeepCopy()
		touched.Labels = map[string]string{"touch": string(rune('a' + i))}
		if _, err := client.CoreV1().Services("shop").Update(ctx, touched, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if events, _ = client.CoreV1().Events("shop").List(ctx, metav1.ListOptions{}); len(events.Items) != 1 || events.Items[0].Count > 1 {
		t.Errorf("%d events after rebuilding the same bad annotation, want 1 recorded once", len(events.Items))
	}

	// A deleted Service goes away.
	if err := client.CoreV1().Services("shop").Delete(ctx, "cart", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the service gone", func() bool { return endpointCount(s.last(), "shop/cart") == -1 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v on cancellation, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
}

// TestSourceRebuildsWhatChanged: an event rebuilds the services it
// touches, not every service of the cluster: a pod's change its own
// service, a slice's its service; a node's region may touch any.
func TestSourceRebuildsWhatChanged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	objs := []runtime.Object{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}}
	for i := range 50 {
		name := fmt.Sprintf("svc-%d", i)
		objs = append(objs, service(name, nil, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}),
			slice(name, name+"-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
				ep{ip: fmt.Sprintf("10.1.0.%d", i+1), pod: name + "-pod", ready: ptr.To(true)}),
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name + "-pod", Namespace: "shop", Labels: map[string]string{"app": name}},
				Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.1.0.%d", i+1)}}}})
	}
	client := fake.NewClientset(objs...)
	src, err := New(Options{Client: client, MinInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	go src.Run(ctx, s) //nolint:errcheck // ends with ctx
	waitFor(t, "the first report", func() bool { return len(s.last()) == 50 })
	time.Sleep(100 * time.Millisecond) // the informers' initial events settle
	base := src.builds.Load()

	p, err := client.CoreV1().Pods("shop").Get(ctx, "svc-7-pod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels["version"] = "v2"
	if _, err := client.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new label", func() bool {
		for _, svc := range s.last() {
			if svc.Name == "svc-7" {
				return svc.Endpoints[0].Labels["version"] == "v2"
			}
		}
		return false
	})
	if n := src.builds.Load() - base; n != 1 {
		t.Errorf("a pod's label change built %d services, want its own one", n)
	}
	n := src.builds.Load()
	node, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Labels = map[string]string{corev1.LabelTopologyRegion: "eu"}
	if _, err := client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every service rebuilt for a node's region", func() bool { return src.builds.Load()-n >= 50 })
}

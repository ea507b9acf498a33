package kube

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/tender-mesh/tender/discovery"
)

// routeSink is a sink that also keeps the routes reported.
type routeSink struct {
	sink
	mu     sync.Mutex // guards routes
	routes [][]discovery.Route
}

func (s *routeSink) UpdateRoutes(source string, routes []discovery.Route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes = append(s.routes, routes)
}

// lastRoutes returns the last report and how many there were.
func (s *routeSink) lastRoutes() ([]discovery.Route, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.routes) == 0 {
		return nil, 0
	}
	return s.routes[len(s.routes)-1], len(s.routes)
}

// serveGatewayAPI makes client's discovery list the route resources, as
// an API server with the Gateway API's CRDs does.
func serveGatewayAPI(client *fake.Clientset) {
	client.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
		GroupVersion: gatewayGroupVersion,
		APIResources: []metav1.APIResource{
			{Name: resourceHTTPRoutes, Namespaced: true, Kind: discovery.KindHTTPRoute},
			{Name: resourceGRPCRoutes, Namespaced: true, Kind: discovery.KindGRPCRoute},
		},
	}}
}

func serviceParent(name string) gwv1.ParentReference {
	return gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
}

func backend(name string, port, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{Weight: ptr.To(weight), BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(name), Port: ptr.To(port)}}}
}

func TestSourceRoutes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	created := metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	canary := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-canary", Namespace: "shop", Generation: 3, CreationTimestamp: created,
			ResourceVersion: "41", Labels: map[string]string{"team": "cart"},
			Annotations:   map[string]string{annotationLastApplied: `{"kind":"HTTPRoute"}`, "owner": "cart-team"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{serviceParent("cart")}},
			Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backend("cart-v1", 80, 90), backend("cart-v2", 80, 10)}}},
		},
		Status: gwv1.HTTPRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{{
			ParentRef: serviceParent("cart"), ControllerName: "example.net/mesh"}}}},
	}
	grpc := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "users", Namespace: "shop", Generation: 1},
		Spec:       gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{serviceParent("users")}}},
	}
	// No parentRefs: the API server would refuse it; the source skips it.
	orphan := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "shop"}}
	// Not in a watched namespace.
	elsewhere := canary.DeepCopy()
	elsewhere.Namespace = "elsewhere"

	client := fake.NewClientset(service("cart", nil, corev1.ServicePort{Name: "http", Port: 80}))
	serveGatewayAPI(client)
	gw := gwfake.NewClientset(canary, grpc, orphan, elsewhere)
	src, err := New(Options{Client: client, Gateway: gw, Namespaces: []string{"shop"}, MinInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &routeSink{}
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()

	waitFor(t, "the first report", func() bool { return s.last() != nil })
	first, n := s.lastRoutes()
	if n == 0 {
		t.Fatal("the services were reported before any route; want the routes first")
	}
	wantHTTP := canary.DeepCopy()
	wantHTTP.TypeMeta = metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute"}
	wantHTTP.ResourceVersion, wantHTTP.ManagedFields, wantHTTP.Status = "", nil, gwv1.HTTPRouteStatus{}
	wantHTTP.Annotations = map[string]string{"owner": "cart-team"}
	wantGRPC := grpc.DeepCopy()
	wantGRPC.TypeMeta = metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "GRPCRoute"}
	want := []discovery.Route{{GRPC: wantGRPC}, {HTTP: wantHTTP}}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Fatalf("routes reported (-want +got):\n%s", diff)
	}

	// A status write (another controller's, or tender's own) reports the
	// same routes: the registry sees nothing new.
	written := canary.DeepCopy()
	written.ResourceVersion = "42"
	written.ManagedFields = append(written.ManagedFields, metav1.ManagedFieldsEntry{Manager: "tender-controlplane", Subresource: "status"})
	written.Status.Parents = append(written.Status.Parents, gwv1.RouteParentStatus{ParentRef: serviceParent("cart"), ControllerName: "tender.dev/mesh"})
	if _, err := gw.GatewayV1().HTTPRoutes("shop").UpdateStatus(ctx, written, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the routes reported after the status write", func() bool { _, m := s.lastRoutes(); return m > n })
	after, n := s.lastRoutes()
	if diff := cmp.Diff(first, after); diff != "" {
		t.Errorf("a status write changed the reported routes (-before +after):\n%s", diff)
	}

	// A spec change is reported.
	edited := written.DeepCopy()
	edited.Generation = 4
	edited.Spec.Rules[0].BackendRefs = []gwv1.HTTPBackendRef{backend("cart-v2", 80, 1)}
	if _, err := gw.GatewayV1().HTTPRoutes("shop").Update(ctx, edited, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edited route", func() bool {
		rs, m := s.lastRoutes()
		return m > n && len(rs) == 2 && rs[1].HTTP.Generation == 4 && len(rs[1].HTTP.Spec.Rules[0].BackendRefs) == 1
	})

	// A deleted route goes.
	if err := gw.GatewayV1().GRPCRoutes("shop").Delete(ctx, "users", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the GRPCRoute gone", func() bool { rs, _ := s.lastRoutes(); return len(rs) == 1 })

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v on cancellation, want nil", err)
	}
}

// TestSourceWithoutGatewayAPI: a cluster without the route CRDs serves
// its services, and no route is reported.
func TestSourceWithoutGatewayAPI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(service("cart", nil, corev1.ServicePort{Name: "http", Port: 80}))
	src, err := New(Options{Client: client, Gateway: gwfake.NewClientset(), MinInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := &routeSink{}
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()
	waitFor(t, "the services reported", func() bool { return len(s.last()) == 1 })
	if _, n := s.lastRoutes(); n != 0 {
		t.Errorf("%d route reports without the Gateway API, want none", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v on cancellation, want nil", err)
	}
}

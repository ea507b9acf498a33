package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"
)

// routeConfigurationType is the type URL /debug/config lists route
// configurations under.
const routeConfigurationType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

// installGatewayAPI installs the Gateway API's standard-channel route
// CRDs, the very files the gateway-api module ships, and waits until
// the API server serves them.
func installGatewayAPI(ctx context.Context, t *testing.T, api *apiServer) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	dyn, _ := api.dynamic(t)
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	names := []string{"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io"}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, "gateway.networking.k8s.io_"+strings.TrimSuffix(name, ".gateway.networking.k8s.io")+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var crd unstructured.Unstructured
		if err := yaml.Unmarshal(data, &crd.Object); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := crds.Create(ctx, &crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", name, err)
		}
	}
	established := func(name string) bool {
		crd, err := crds.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	}
	if !within(ctx, 30*time.Second, func() bool {
		if !established(names[0]) || !established(names[1]) {
			return false
		}
		// Established, and in discovery, which the control plane asks.
		list, err := api.client.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
		if err != nil {
			return false
		}
		var served []string
		for _, r := range list.APIResources {
			served = append(served, r.Name)
		}
		return slices.Contains(served, "httproutes") && slices.Contains(served, "grpcroutes")
	}) {
		t.Fatal("the Gateway API route CRDs are not established and served after 30 s")
	}
}

// meshService creates a Service with an HTTP and a gRPC port, and its
// EndpointSlice of one ready endpoint at ip (nothing listens there: the
// test reads the control plane's config, not traffic).
func meshService(ctx context.Context, t *testing.T, api *apiServer, ns, name, ip string) {
	t.Helper()
	_, err := api.client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9090)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.client.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
			{Name: ptr.To("grpc"), Port: ptr.To[int32](9090), Protocol: ptr.To(corev1.ProtocolTCP)},
		},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func serviceParentRef(name string, port int32) gwv1.ParentReference {
	return gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: gwv1.ObjectName(name),
		Port: ptr.To(port)}
}

func weighted(name string, port, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{Weight: ptr.To(weight),
		BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr.To(port)}}}
}

// tenderParent returns the route status entry of controller
// tender.dev/mesh, if there is one.
func tenderParent(parents []gwv1.RouteParentStatus) *gwv1.RouteParentStatus {
	for i := range parents {
		if parents[i].ControllerName == "tender.dev/mesh" {
			return &parents[i]
		}
	}
	return nil
}

// conditionIs reports whether the entry's condition typ has status and
// reason, and is of generation gen; it describes what it found.
func conditionIs(p *gwv1.RouteParentStatus, typ string, status metav1.ConditionStatus, reason string, gen int64) (bool, string) {
	if p == nil {
		return false, "no status entry of tender.dev/mesh"
	}
	c := meta.FindStatusCondition(p.Conditions, typ)
	if c == nil {
		return false, fmt.Sprintf("no %s condition in %+v", typ, p.Conditions)
	}
	got := fmt.Sprintf("%s=%s reason %s observedGeneration %d (%q)", typ, c.Status, c.Reason, c.ObservedGeneration, c.Message)
	return c.Status == status && c.Reason == reason && c.ObservedGeneration == gen && !c.LastTransitionTime.IsZero(), got
}

// debugRoutes reads /debug/config: the routes it reports, by
// "Kind/namespace/name", with their generation, and the weighted
// clusters of route's rules in the RouteConfiguration named rc.
func debugRoutes(ctx context.Context, t *testing.T, url, rc, route string) (routes map[string]int64, weights map[string]int) {
	t.Helper()
	var d struct {
		Routes []struct {
			Kind, Namespace, Name string
			Generation            int64
			Source                string
		} `json:"routes"`
		Resources map[string]struct {
			Resources []json.RawMessage `json:"resources"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(waitHTTP(ctx, t, url, 200), &d); err != nil {
		t.Fatalf("/debug/config: %v", err)
	}
	routes = map[string]int64{}
	for _, r := range d.Routes {
		if r.Source == "kubernetes" {
			routes[r.Kind+"/"+r.Namespace+"/"+r.Name] = r.Generation
		}
	}
	weights = map[string]int{}
	for _, raw := range d.Resources[routeConfigurationType].Resources {
		var cfg struct {
			Name         string
			VirtualHosts []struct {
				Routes []struct {
					Name  string
					Route struct {
						WeightedClusters struct {
							Clusters []struct {
								Name   string
								Weight int
							}
						}
					}
				}
			}
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatalf("/debug/config: RouteConfiguration: %v", err)
		}
		if cfg.Name != rc {
			continue
		}
		for _, vh := range cfg.VirtualHosts {
			for _, r := range vh.Routes {
				if !strings.HasPrefix(r.Name, route+"/") {
					continue
				}
				for _, c := range r.Route.WeightedClusters.Clusters {
					weights[c.Name] += c.Weight
				}
			}
		}
	}
	return routes, weights
}

// TestGatewayAPIRoutes runs the control plane against a real
// kube-apiserver with the Gateway API's route CRDs: an HTTPRoute and a
// GRPCRoute whose parent is a Service (GAMMA) are programmed into the
// served config and get their status.parents entry of controller
// tender.dev/mesh, as a Gateway API implementation writes it; another
// controller's entry is left alone; editing the route moves both the
// config and the entry's observedGeneration.
func TestGatewayAPIRoutes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := startAPIServer(t, ctx)
	installGatewayAPI(ctx, t, api)
	api.namespace(ctx, t, "shop", nil)
	for i, name := range []string{"greeter", "greeter-v1", "greeter-v2"} {
		meshService(ctx, t, api, "shop", name, fmt.Sprintf("10.1.0.%d", 11+i))
	}
	gw, err := gwclient.NewForConfig(api.rest)
	if err != nil {
		t.Fatal(err)
	}
	httpRoutes, grpcRoutes := gw.GatewayV1().HTTPRoutes("shop"), gw.GatewayV1().GRPCRoutes("shop")

	// A GRPCRoute from before the control plane starts, to a backend
	// that does not exist.
	_, err = grpcRoutes.Create(ctx, &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter-grpc"},
		Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{serviceParentRef("greeter", 9090)}},
			Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "greeter-v3", Port: ptr.To(gwv1.PortNumber(9090))}}}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	ports := freePorts(t, 2)
	metrics := fmt.Sprintf("127.0.0.1:%d", ports[1])
	cp := start(t, "controlplane", "controlplane", "--kubeconfig", api.kubeconfig,
		"--xds-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--metrics-addr", metrics, "--xds-tls-addr", "", "--webhook-addr", "",
		"--log-format", "json", "--debounce", "50ms")
	cp.waitLog(ctx, "watching Gateway API routes")
	waitHTTP(ctx, t, "http://"+metrics+"/readyz", 200)

	// (a) An HTTPRoute splitting greeter's HTTP port 90/10 between two
	// versions: accepted, references resolved, of its generation.
	created, err := httpRoutes.Create(ctx, &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter-split"},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{serviceParentRef("greeter", 80)}},
			Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{weighted("greeter-v1", 80, 90), weighted("greeter-v2", 80, 10)}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var last string
	httpStatus := func(gen int64) func() bool {
		return func() bool {
			r, err := httpRoutes.Get(ctx, "greeter-split", metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false
			}
			p := tenderParent(r.Status.Parents)
			okA, a := conditionIs(p, "Accepted", metav1.ConditionTrue, "Accepted", gen)
			okR, res := conditionIs(p, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", gen)
			last = a + "; " + res
			return okA && okR && r.Generation == gen
		}
	}
	if !within(ctx, 30*time.Second, httpStatus(created.Generation)) {
		t.Fatalf("HTTPRoute greeter-split's status: %s; want Accepted and ResolvedRefs True of generation %d", last, created.Generation)
	}
	r, err := httpRoutes.Get(ctx, "greeter-split", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := tenderParent(r.Status.Parents); p.ParentRef.Name != "greeter" || p.ParentRef.Port == nil || *p.ParentRef.Port != 80 {
		t.Errorf("tender's status entry is for parent %+v, want Service greeter port 80", p.ParentRef)
	}

	// (b) The GRPCRoute: accepted, but its backend is not found.
	if !within(ctx, 30*time.Second, func() bool {
		r, err := grpcRoutes.Get(ctx, "greeter-grpc", metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false
		}
		p := tenderParent(r.Status.Parents)
		okA, a := conditionIs(p, "Accepted", metav1.ConditionTrue, "Accepted", r.Generation)
		okR, res := conditionIs(p, "ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", r.Generation)
		last = a + "; " + res
		return okA && okR
	}) {
		t.Fatalf("GRPCRoute greeter-grpc's status: %s; want Accepted True and ResolvedRefs False (BackendNotFound)", last)
	}

	// (c) /debug/config: both routes, and greeter's HTTP port split 90/10.
	debugURL := "http://" + metrics + "/debug/config"
	const rc = "greeter.shop.svc.cluster.local:80"
	v1, v2 := "outbound|80||greeter-v1.shop.svc.cluster.local", "outbound|80||greeter-v2.shop.svc.cluster.local"
	var routes map[string]int64
	var weights map[string]int
	if !within(ctx, 30*time.Second, func() bool {
		routes, weights = debugRoutes(ctx, t, debugURL, rc, "HTTPRoute/shop/greeter-split")
		_, okGRPC := routes["GRPCRoute/shop/greeter-grpc"]
		return okGRPC && routes["HTTPRoute/shop/greeter-split"] == 1 && weights[v1] == 90 && weights[v2] == 10
	}) {
		t.Fatalf("/debug/config: routes %v, weighted clusters of greeter-split in %s %v; want both routes and %s 90, %s 10",
			routes, rc, weights, v1, v2)
	}

	// Another controller's entry (a Gateway's) in the same status:
	// tender leaves it as it is.
	other := gwv1.RouteParentStatus{
		ParentRef:      gwv1.ParentReference{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: ptr.To(gwv1.Kind("Gateway")), Name: "edge"},
		ControllerName: "example.net/gateway-controller",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 1,
			LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second))}},
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := httpRoutes.Get(ctx, "greeter-split", metav1.GetOptions{})
		if err != nil {
			return err
		}
		r.Status.Parents = append(r.Status.Parents, other)
		_, err = httpRoutes.UpdateStatus(ctx, r, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// (d) New weights: a new generation, served, and reported in the
	// status; the other controller's entry stays.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := httpRoutes.Get(ctx, "greeter-split", metav1.GetOptions{})
		if err != nil {
			return err
		}
		r.Spec.Rules[0].BackendRefs = []gwv1.HTTPBackendRef{weighted("greeter-v1", 80, 50), weighted("greeter-v2", 80, 50)}
		_, err = httpRoutes.Update(ctx, r, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !within(ctx, 30*time.Second, func() bool {
		routes, weights = debugRoutes(ctx, t, debugURL, rc, "HTTPRoute/shop/greeter-split")
		return routes["HTTPRoute/shop/greeter-split"] == 2 && weights[v1] == 50 && weights[v2] == 50
	}) {
		t.Fatalf("/debug/config after the edit: routes %v, weighted clusters %v; want generation 2 split 50/50", routes, weights)
	}
	if !within(ctx, 30*time.Second, httpStatus(2)) {
		t.Fatalf("HTTPRoute greeter-split's status after the edit: %s; want observedGeneration 2", last)
	}
	r, err = httpRoutes.Get(ctx, "greeter-split", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Status.Parents) != 2 || !slices.ContainsFunc(r.Status.Parents, func(p gwv1.RouteParentStatus) bool {
		return p.ControllerName == other.ControllerName && p.ParentRef.Name == "edge" && len(p.Conditions) == 1 &&
			p.Conditions[0].LastTransitionTime.Equal(&other.Conditions[0].LastTransitionTime)
	}) {
		t.Errorf("status.parents after tender's write: %+v; want tender's entry and the other controller's, untouched", r.Status.Parents)
	}

	// A deleted route leaves the served config.
	if err := grpcRoutes.Delete(ctx, "greeter-grpc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if !within(ctx, 30*time.Second, func() bool {
		routes, _ = debugRoutes(ctx, t, debugURL, rc, "HTTPRoute/shop/greeter-split")
		_, found := routes["GRPCRoute/shop/greeter-grpc"]
		return !found
	}) {
		t.Fatalf("/debug/config still lists the deleted GRPCRoute: %v", routes)
	}
}

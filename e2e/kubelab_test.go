package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// greeterSlice is the greeter Service's EndpointSlice as the
// EndpointSlice controller writes it: each pod ready, except those
// terminating (serving until they stop, no longer ready).
func greeterSlice(greeters []*pod, terminating map[string]bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "greeter-x7k2p", Labels: map[string]string{discoveryv1.LabelServiceName: "greeter"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, g := range greeters {
		term := terminating[g.name]
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{g.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!term), Serving: ptr.To(true), Terminating: ptr.To(term)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: g.name},
			Zone:       ptr.To("z1"),
		})
	}
	return s
}

// newKubeLab is a lab with the control plane's pod (etcd and the API
// server run in it: the lab stays sealed, and the control plane reaches
// them on its loopback), three greeter pods and a client pod; the greeter
// Service exists, its EndpointSlices not yet.
func newKubeLab(t *testing.T, ctx context.Context) (*mesh, *apiServer) {
	t.Helper()
	l := newLab(t)
	m := &mesh{lab: l, apps: map[string]*process{}, sidecars: map[string]*process{}}
	m.cp = l.addPod("cp", 2)
	for i := range 3 {
		m.greeters = append(m.greeters, l.addPod(fmt.Sprintf("greeter-%d", i+1), 11+i))
	}
	m.client = l.addPod("client", 20)
	api := startAPIServerIn(t, ctx, m.cp)
	if _, err := api.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter"},
		Spec: corev1.ServiceSpec{ClusterIP: greeterVIP, Selector: map[string]string{"app": "greeter"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return m, api
}

// startKube starts the control plane on the API server, and the greeters
// with their sidecars.
func (m *mesh) startKube(t *testing.T, ctx context.Context, api *apiServer) {
	t.Helper()
	m.cpProc = m.cp.start(t, "controlplane", "controlplane", "--kubeconfig", api.kubeconfig, "--webhook-addr", "",
		"--xds-addr", "0.0.0.0:15010", "--metrics-addr", "0.0.0.0:15014", "--log-format", "json", "--debounce", "50ms")
	m.cpProc.waitLog(ctx, "control plane starting")
	for _, g := range m.greeters {
		g.run(t, "sidecar", "init")
		m.apps[g.name] = g.start(t, "greeter", "greeter", "--instance", g.name, "--http-addr", ":8080", "--grpc-addr", ":9090")
		m.sidecars[g.name] = m.startSidecar(t, g)
	}
}

// TestKubernetesServiceInTheLab is the Kubernetes acceptance 3: the
// control plane, in the lab with a kubeconfig of a real kube-apiserver,
// turns a Service and its EndpointSlice into xDS; a lab client reaches
// the lab's greeter pods through the Service's ClusterIP, and scaling
// the greeters from 3 to 2 (the slice marks one terminating, then drops
// it) moves traffic off it within 1 s with no failed request.
func TestKubernetesServiceInTheLab(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m, api := newKubeLab(t, ctx)
	cs := api.client
	endpointSlices := cs.DiscoveryV1().EndpointSlices("default")
	if _, err := endpointSlices.Create(ctx, greeterSlice(m.greeters, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m.startKube(t, ctx, api)
	m.client.run(t, "sidecar", "init")
	m.sidecars["client"] = m.startSidecar(t, m.client)
	for _, p := range append([]*pod{m.client}, m.greeters...) {
		waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/ready", 200)
	}
	waitUntil(ctx, t, "the client sidecar to know greeter.default.svc.cluster.local", func() bool {
		body := waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/clusters", 200)
		return strings.Count(string(body), "greeter.default.svc.cluster.local") > 0 && strings.Contains(string(body), m.greeters[2].ip)
	})

	// Steady load through the ClusterIP from the client pod.
	c := m.client.httpClient(false)
	defer c.CloseIdleConnections()
	log := startLoadWith(ctx, t, 4, func() (string, error) { return greetHTTP(c) })
	waitUntil(ctx, t, "all three greeters to answer through the ClusterIP", func() bool {
		last, _, _ := log.snapshot()
		return len(last) == 3
	})

	// Scale down: greeter-3 terminating, then gone. Times count from
	// when the API server has stored each change (Update returned), not
	// from the call: the store's own latency (etcd syncs each write to
	// disk, slow on a busy machine; the test process may stall under
	// load too) is not the mesh's.
	admin := m.client.httpClient(false)
	defer admin.CloseIdleConnections()
	update := func(slice *discoveryv1.EndpointSlice) time.Time {
		t.Helper()
		start := time.Now()
		if _, err := endpointSlices.Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		stored := time.Now()
		t.Logf("EndpointSlice update stored in %v", stored.Sub(start).Round(time.Millisecond))
		return stored
	}
	scaledAt := update(greeterSlice(m.greeters, map[string]bool{"greeter-3": true}))
	// Terminating but serving is DRAINING in EDS, which the client
	// sidecar's balancer leaves out: once its table says so, no new
	// request may reach greeter-3, while the slice still lists it (the
	// removal must not be what moves the traffic).
	var drainedAt time.Time
	waitUntil(ctx, t, "the client sidecar to mark greeter-3 draining", func() bool {
		listed, healthy := clientEndpoint(ctx, t, admin, m.greeters[2].ip)
		drainedAt = time.Now()
		return listed && !healthy
	})
	t.Logf("the client sidecar had greeter-3 draining %v after the scale-down", drainedAt.Sub(scaledAt).Round(time.Millisecond))
	// Enough requests that a balancer still choosing greeter-3 would
	// have sent it some: each of 100 misses it with odds of 2/3.
	waitUntil(ctx, t, "100 requests sent after the drain to be answered", func() bool {
		n := log.sentSince(drainedAt)
		return n["greeter-1"]+n["greeter-2"]+n["greeter-3"] >= 100
	})
	last, _, _ := log.snapshot()
	lag := last["greeter-3"].Sub(scaledAt)

	removedAt := update(greeterSlice(m.greeters[:2], nil))
	var droppedAt time.Time
	waitUntil(ctx, t, "the client sidecar to drop greeter-3", func() bool {
		listed, _ := clientEndpoint(ctx, t, admin, m.greeters[2].ip)
		droppedAt = time.Now()
		return !listed
	})
	waitUntil(ctx, t, "greeter-1 and greeter-2 to answer requests sent after the removal", func() bool {
		n := log.sentSince(droppedAt)
		return n["greeter-1"] > 0 && n["greeter-2"] > 0
	})
	log.Stop()
	_, errs, n := log.snapshot()
	t.Logf("greeter-3 answered its last request %v after the scale-down (%d requests, %d failed; the removal %v after the scale-down)",
		lag, n, len(errs), removedAt.Sub(scaledAt).Round(time.Millisecond))
	if len(errs) > 0 {
		t.Errorf("%d of %d requests failed during the scale-down, first: %v", len(errs), n, errs[0])
	}
	if after := log.sentSince(drainedAt); after["greeter-3"] > 0 {
		t.Errorf("greeter-3 answered %d requests sent after the client sidecar marked it draining (all after: %v), want none",
			after["greeter-3"], after)
	}
	if lag > time.Second {
		t.Errorf("greeter-3 still got requests %v after the scale-down, want traffic moved within 1 s", lag)
	}

	// tenderctl: every sidecar in sync (each ACKs the removal in its own
	// time: wait for all); the client's view of the greeter; a sidecar
	// whose stream ends drops out of the list.
	var status string
	synced := func() bool {
		status = m.cp.run(t, "tenderctl", "proxy-status", "--controlplane", "127.0.0.1:15014")
		for _, name := range []string{"client", "greeter-1", "greeter-2", "greeter-3"} {
			if !regexp.MustCompile(`(?m)^` + name + `\.default\s+delta\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED\s+NOT SENT\s`).MatchString(status) {
				return false
			}
		}
		return true
	}
	if !within(ctx, 30*time.Second, synced) {
		t.Errorf("proxy-status does not list every sidecar as SYNCED for CDS, EDS, RDS and SDS:\n%s", status)
	}
	endpoints := m.client.run(t, "tenderctl", "proxy-config", "endpoints", "127.0.0.1", "--cluster", "greeter.default.svc.cluster.local")
	for _, g := range m.greeters[:2] {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(g.ip+":8080") + `\s+HEALTHY\s`).MatchString(endpoints) {
			t.Errorf("proxy-config endpoints does not show %s healthy:\n%s", g.ip, endpoints)
		}
	}
	if strings.Contains(endpoints, m.greeters[2].ip) {
		t.Errorf("proxy-config endpoints still shows the scaled-down %s:\n%s", m.greeters[2].ip, endpoints)
	}
	clusters := m.client.run(t, "tenderctl", "proxy-config", "clusters", "127.0.0.1:15000")
	if !regexp.MustCompile(`(?m)^greeter\.default\.svc\.cluster\.local\s+80\s+HTTP\s+\S+\s+` + regexp.QuoteMeta(greeterVIP) + `\s+2/2 healthy`).MatchString(clusters) {
		t.Errorf("proxy-config clusters:\n%s", clusters)
	}
	m.sidecars["greeter-3"].kill()
	waitUntil(ctx, t, "proxy-status to drop greeter-3", func() bool {
		return !strings.Contains(m.cp.run(t, "tenderctl", "proxy-status", "--controlplane", "127.0.0.1:15014"), "greeter-3.default")
	})
}

// clientEndpoint reports whether the client sidecar's table lists ip as
// an endpoint of the greeter's HTTP port, and whether as healthy; admin
// is an HTTP client of the client pod.
func clientEndpoint(ctx context.Context, t *testing.T, admin *http.Client, ip string) (listed, healthy bool) {
	t.Helper()
	var clusters []struct {
		Name      string
		Endpoints []struct {
			Address string
			Healthy bool
		}
	}
	if err := json.Unmarshal(pollHTTP(ctx, t, admin, "http://127.0.0.1:15000/clusters", 200), &clusters); err != nil {
		t.Fatal(err)
	}
	for _, c := range clusters {
		if !strings.HasPrefix(c.Name, "outbound|80||greeter.") {
			continue
		}
		for _, e := range c.Endpoints {
			if strings.HasPrefix(e.Address, ip+":") {
				return true, e.Healthy
			}
		}
	}
	return false, false
}

// within polls cond until it holds (true) or d has passed (false).
func within(ctx context.Context, d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}

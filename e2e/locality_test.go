package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tender-mesh/tender/inject"
)

// TestKubernetesLocality: a pod on a node labelled with a zone gets the
// zone in its sidecar's node info from the control plane (the sidecar is
// given none), and its requests stay with the greeters of its zone until
// they are unhealthy, then fail over to the other zone.
func TestKubernetesLocality(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m, api := newKubeLab(t, ctx)
	cs := api.client
	for _, n := range []struct{ name, zone string }{{"node-z1", "z1"}, {"node-z2", "z2"}} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name,
			Labels: map[string]string{corev1.LabelTopologyRegion: "r1", corev1.LabelTopologyZone: n.zone}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The client's pod, scheduled on node-z1 and injected (no kubelet
	// runs it: the lab's client pod is it). No controller makes the
	// namespace's default service account: the test does.
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Annotations: map[string]string{inject.AnnotationStatus: inject.StatusInjected}},
		Spec:       corev1.PodSpec{NodeName: "node-z1", Containers: []corev1.Container{{Name: "app", Image: "client"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// greeter-1 and -2 on node-z1, greeter-3 on node-z2.
	slice := func(readyZ1 bool) *discoveryv1.EndpointSlice {
		s := greeterSlice(m.greeters, nil)
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			node, zone := "node-z1", "z1"
			if i == 2 {
				node, zone = "node-z2", "z2"
			}
			e.NodeName, e.Zone = ptr.To(node), ptr.To(zone)
			if zone == "z1" {
				e.Conditions.Ready = ptr.To(readyZ1)
			}
		}
		return s
	}
	slices := cs.DiscoveryV1().EndpointSlices("default")
	if _, err := slices.Create(ctx, slice(true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m.startKube(t, ctx, api)
	m.client.run(t, "sidecar", "init")
	// No --zone: the sidecar must learn it.
	m.client.startAs(t, proxyUID, "sidecar", "sidecar", "run", "--xds-addr", cpIP+":15010",
		"--pod-name", "client", "--pod-namespace", "default", "--log-format", "json")
	waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/ready", 200)
	waitUntil(ctx, t, "the client sidecar to learn its zone from the control plane", func() bool {
		var dump struct {
			Node struct {
				Locality     map[string]string
				LocalityFrom string
			}
		}
		if err := json.Unmarshal(waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/config_dump", 200), &dump); err != nil {
			t.Fatal(err)
		}
		return dump.Node.Locality["zone"] == "z1" && dump.Node.Locality["region"] == "r1" && dump.Node.LocalityFrom == "control plane"
	})

	c := m.client.httpClient(false)
	defer c.CloseIdleConnections()
	count := func(n int) map[string]int {
		t.Helper()
		out := map[string]int{}
		for range n {
			inst, err := greetHTTP(c)
			if err != nil {
				t.Fatalf("request failed: %v", err)
			}
			out[inst]++
		}
		return out
	}
	got := count(60)
	t.Logf("zone z1 healthy: %v", got)
	if got["greeter-3"] > 0 || got["greeter-1"] == 0 || got["greeter-2"] == 0 {
		t.Fatalf("with z1's greeters healthy, 60 requests from z1 went %v: want greeter-1 and greeter-2 only", got)
	}
	// z1's greeters unhealthy: traffic fails over to z2.
	cur, err := slices.Get(ctx, "greeter-x7k2p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := slice(false)
	next.ResourceVersion = cur.ResourceVersion
	if _, err := slices.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(ctx, t, "requests to fail over to z2", func() bool {
		inst, err := greetHTTP(c)
		return err == nil && inst == "greeter-3"
	})
	if got := count(30); got["greeter-3"] != 30 {
		t.Fatalf("with z1's greeters unhealthy, 30 requests went %v: want all to greeter-3", got)
	}
}

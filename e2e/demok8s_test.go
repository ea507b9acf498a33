package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestDemoK8s is `make demo-k8s`: the mesh of TestKubernetesCluster in
// the one-node cluster (the chart, the greeter, the client, Jaeger and
// Prometheus), left running for TENDER_DEMO_K8S (a duration) or until
// Ctrl-C, with a kubectl that reaches it and the commands to look at it.
// make test skips it: TestKubernetesCluster runs the same path.
func TestDemoK8s(t *testing.T) {
	d := os.Getenv("TENDER_DEMO_K8S")
	if d == "" {
		t.Skip("make demo-k8s runs it (TENDER_DEMO_K8S=DURATION)")
	}
	dur, err := time.ParseDuration(d)
	if err != nil {
		t.Fatalf("TENDER_DEMO_K8S=%q: %v", d, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	setup, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c := newCluster(t, setup)
	_, prom := c.observability(t, setup)
	c.installDemo(setup, t)
	// Prometheus's targets follow the pods (Debian's Prometheus has no
	// Kubernetes discovery; see observability).
	go func() {
		for ctx.Err() == nil {
			prom.discover(ctx) //nolint:errcheck // the next round tries again
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}()

	// A kubectl for the user: the API server listens inside the node.
	dir, err := filepath.Abs("../.demo/k8s")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(dir, "kubectl")
	writeFile(t, kubectl, fmt.Sprintf("#!/bin/sh\n# make demo-k8s: kubectl against the one-node cluster (inside its network namespace)\nexec nsenter --net=/run/netns/%s %s --kubeconfig %s \"$@\"\n",
		c.node.ns, tool(t, "kubectl"), c.kubeconfig))
	if err := os.Chmod(kubectl, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(kubectl) }) //nolint:errcheck // best effort
	fmt.Printf(`
demo-k8s: the mesh runs in a one-node Kubernetes cluster (kubelet, containerd, the chart, injected pods).
Look at it from another shell, as root:
  export PATH=%[1]s:$PATH
  kubectl get pods -A -o wide                 # the control plane, the greeters, the client, each with its sidecar
  kubectl -n demo logs deploy/client -f       # which greeter answered each request
  kubectl -n demo get pod -l app=greeter -o jsonpath='{.items[0].spec.initContainers[*].name}'
  kubectl -n demo scale deploy/greeter --replicas=5
  kubectl -n demo rollout restart deploy/greeter
  kubectl -n tender-system logs deploy/tender-controlplane
  nsenter --net=/run/netns/%[2]s curl -sg 'http://%[3]s:9090/api/v1/query?query=sum(rate(tender_requests_total[1m]))by(destination_workload,connection_security_policy)'
  nsenter --net=/run/netns/%[2]s curl -s http://%[3]s:16686/api/services
Stops after %[4]v or on Ctrl-C, and tears everything down.
`, dir, c.node.ns, nodeIP, dur)
	select {
	case <-ctx.Done():
	case <-time.After(dur):
	}
	fmt.Println("demo-k8s: stopping")
}

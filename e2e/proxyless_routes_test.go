package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// grpcRouteMesh is the greeter (no endpoints of its own) with greeter-v1
// and greeter-v2 behind it, and a GRPCRoute: Greet with x-canary: true
// to v2, the rest of Greet split v1/v2 by weight. (A header match alone
// would rank below the method match: GRPCRoute orders by the service
// and method matched before the headers.)
func grpcRouteMesh(v1Port, v2Port string, w1, w2 int) string {
	var b strings.Builder
	b.WriteString("services:\n  - name: greeter\n    ports: [{name: grpc, port: 8080, protocol: GRPC}]\n")
	for _, s := range []struct{ name, port string }{{"greeter-v1", v1Port}, {"greeter-v2", v2Port}} {
		fmt.Fprintf(&b, "  - name: %s\n    ports: [{name: grpc, port: 8080, protocol: GRPC}]\n    endpoints: [{address: 127.0.0.1, port: %s}]\n", s.name, s.port)
	}
	fmt.Fprintf(&b, `routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {name: greeter-canary, namespace: default}
    spec:
      parentRefs: [{group: "", kind: Service, name: greeter, port: 8080}]
      rules:
        - matches: [{method: {service: tender.greeter.v1.Greeter, method: Greet}, headers: [{name: x-canary, value: "true"}]}]
          backendRefs: [{name: greeter-v2, port: 8080}]
        - matches: [{method: {service: tender.greeter.v1.Greeter, method: Greet}}]
          backendRefs: [{name: greeter-v1, port: 8080, weight: %d}, {name: greeter-v2, port: 8080, weight: %d}]
`, w1, w2)
	return b.String()
}

// TestProxylessGRPCRoute: a proxyless grpc-go client follows a GRPCRoute
// from tender's RDS by itself: the weighted split and the header match.
func TestProxylessGRPCRoute(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	v1, v2 := startGreeter(t, "v1", 0), startGreeter(t, "v2", 0)
	cp := startControlPlane(t, ctx, grpcRouteMesh(v1.port, v2.port, 80, 20), "", "")
	c := dialXDS(t, cp, "route-client")
	waitServing(ctx, t, c, "v1", "v2")

	counts := map[string]int{}
	const n = 2000
	for range n {
		inst, err := greet(ctx, c)
		if err != nil {
			t.Fatalf("RPC failed: %v", err)
		}
		counts[inst]++
	}
	// grpc-go picks at random: 2,000 picks stray by about 0.9% (one
	// standard deviation); ±4% tells a split from none without flaking.
	if share := float64(counts["v2"]) / n; share < 0.16 || share > 0.24 || counts["v1"]+counts["v2"] != n {
		t.Errorf("80/20 split: %v, want v2 20%% ± 4%%", counts)
	}
	for range 50 {
		inst, err := greet(ctx, c, "x-canary", "true")
		if err != nil {
			t.Fatal(err)
		}
		if inst != "v2" {
			t.Fatalf("x-canary: true answered by %s, want v2", inst)
		}
	}
	// Weights moved: grpc-go follows the new RDS.
	cp.setMesh(t, grpcRouteMesh(v1.port, v2.port, 0, 100))
	waitUntil(ctx, t, "the client to send everything to v2", func() bool {
		for range 50 {
			if inst, err := greet(ctx, c); err != nil || inst != "v2" {
				return false
			}
		}
		return true
	})
	t.Logf("80/20 over %d RPCs: %v", n, counts)
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// onDemandVIPs are the three services the client of TestOnDemand calls:
// the greeter under three names.
var onDemandVIPs = []string{"10.96.0.10", "10.96.0.20", "10.96.0.21"}

// onDemandMesh is a mesh.yaml of the three services onDemandVIPs name,
// all on greeter g, and fillers more that no pod of the lab calls; policy
// is added to the first service.
func onDemandMesh(g *pod, fillers int, policy string) string {
	var b strings.Builder
	b.WriteString("services:\n")
	for i, vip := range onDemandVIPs {
		fmt.Fprintf(&b, "  - name: greeter-%d\n    vip: %s\n    ports: [{name: http, port: 80, protocol: HTTP}]\n    endpoints: [{address: %s, port: 8080}]\n", i, vip, g.ip)
		if i == 0 {
			b.WriteString(policy)
		}
	}
	for i := range fillers {
		fmt.Fprintf(&b, "  - name: filler-%d\n    vip: 10.97.%d.%d\n    ports: [{name: http, port: 80, protocol: HTTP}]\n    endpoints: [{address: 10.98.%d.%d, port: 8080}]\n",
			i, i/256, i%256, i/256, i%256)
	}
	return b.String()
}

// onDemandRun is what one client sidecar showed.
type onDemandRun struct {
	rss             float64
	resources       int
	first, after    time.Duration // the first request to a service; the mean of the later ones
	unknown         time.Duration // a request to an address no service has
	unknownAnswered bool
}

// TestOnDemand is issue 19's lab checks: an on-demand sidecar that calls
// three services holds the same memory and the same resources in a mesh
// of 10 services and of 10,000; the first request to a service succeeds
// (its added latency is reported); an address the control plane does not
// know passes through after one round trip, not after the timeout; the
// control plane restarted under load loses no request, and the sidecar
// subscribes again to what it holds.
func TestOnDemand(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	bins := soakBinaries(t) // as shipped: the race detector's memory would hide what is measured
	l := newLab(t)
	cp := l.addPod("cp", 2)
	g := l.addPod("greeter-1", 11)
	client := l.addPod("client", 20)
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, meshFile, onDemandMesh(g, 10-len(onDemandVIPs), ""))
	startCP := func() *process {
		p := cp.startPath(t, "controlplane", filepath.Join(bins, "controlplane"), "--config-file", meshFile,
			"--xds-addr", "0.0.0.0:15010", "--metrics-addr", "0.0.0.0:15014", "--log-format", "json", "--debounce", "50ms")
		p.waitLog(ctx, "control plane starting")
		return p
	}
	cpProc := startCP()
	g.run(t, "sidecar", "init")
	g.start(t, "greeter", "greeter", "--instance", g.name, "--http-addr", ":8080")
	sidecarArgs := func(p *pod, extra ...string) []string {
		return append([]string{"run", "--xds-addr", cpIP + ":15010", "--pod-name", p.name, "--pod-namespace", "default",
			"--log-format", "json"}, extra...)
	}
	g.startPathAs(t, proxyUID, "sidecar", filepath.Join(bins, "sidecar"), sidecarArgs(g)...)
	waitPodHTTP(ctx, t, g, "http://127.0.0.1:15000/ready", 200)
	client.run(t, "sidecar", "init")

	services := func() float64 {
		return metricSum(waitPodHTTP(ctx, t, cp, "http://127.0.0.1:15014/metrics", 200), "tender_registry_services")
	}
	startClient := func(extra ...string) *process {
		return client.startPathAs(t, proxyUID, "sidecar", filepath.Join(bins, "sidecar"), sidecarArgs(client, extra...)...)
	}
	run := func(label string, extra ...string) onDemandRun {
		t.Helper()
		sc := startClient(extra...)
		defer sc.kill()
		waitPodHTTP(ctx, t, client, "http://127.0.0.1:15000/ready", 200)
		c := client.httpClient(false)
		defer c.CloseIdleConnections()
		get := func(url string) (time.Duration, error) {
			start := time.Now()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return 0, err
			}
			resp, err := c.Do(req)
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			return time.Since(start), nil
		}
		var r onDemandRun
		for _, vip := range onDemandVIPs {
			d, err := get("http://" + vip + "/greet?name=first")
			if err != nil {
				t.Fatalf("%s: the first request to %s: %v", label, vip, err)
			}
			r.first = max(r.first, d)
		}
		var sum time.Duration
		const rounds = 30
		for range rounds {
			for _, vip := range onDemandVIPs {
				d, err := get("http://" + vip + "/greet?name=later")
				if err != nil {
					t.Fatalf("%s: %v", label, err)
				}
				sum += d
			}
		}
		r.after = sum / (rounds * time.Duration(len(onDemandVIPs)))
		// The control plane's own metrics: an address no service has.
		start := time.Now()
		_, err := get("http://" + cpIP + ":15014/metrics")
		r.unknown, r.unknownAnswered = time.Since(start), err == nil
		c.CloseIdleConnections()
		time.Sleep(3 * time.Second) // the same quiet time in every run
		r.rss = metricSum(waitPodHTTP(ctx, t, client, "http://127.0.0.1:15090/metrics", 200), "process_resident_memory_bytes")
		var dump struct {
			Clusters, Endpoints, Routes []json.RawMessage
		}
		if err := json.Unmarshal(waitPodHTTP(ctx, t, client, "http://127.0.0.1:15000/config_dump", 200), &dump); err != nil {
			t.Fatal(err)
		}
		r.resources = len(dump.Clusters) + len(dump.Endpoints) + len(dump.Routes)
		t.Logf("%s: RSS %.1f MiB, %d resources (%d clusters, %d load assignments, %d route configurations); first request %s, later %s; unknown address answered=%v in %s",
			label, r.rss/(1<<20), r.resources, len(dump.Clusters), len(dump.Endpoints), len(dump.Routes),
			r.first.Round(time.Microsecond), r.after.Round(time.Microsecond), r.unknownAnswered, r.unknown.Round(time.Microsecond))
		return r
	}

	small := run("10 services")
	writeFile(t, meshFile, onDemandMesh(g, 10_000-len(onDemandVIPs), ""))
	waitUntil(ctx, t, "the control plane to serve 10,000 services", func() bool { return services() == 10_000 })
	large := run("10,000 services")
	wildcard := run("10,000 services, --xds-mode=wildcard", "--xds-mode=wildcard")

	for _, r := range []onDemandRun{small, large} {
		if !r.unknownAnswered || r.unknown > 2*time.Second {
			t.Errorf("a request to an address no service has: answered=%v after %s, want passed through in one round trip (well under --on-demand-timeout, 5s)",
				r.unknownAnswered, r.unknown)
		}
	}
	if large.resources != small.resources {
		t.Errorf("the on-demand sidecar holds %d resources in a mesh of 10,000 services, %d in one of 10: want the same", large.resources, small.resources)
	}
	if large.rss > 1.1*small.rss {
		t.Errorf("the on-demand sidecar's RSS is %.1f MiB in a mesh of 10,000 services, %.1f in one of 10: want within 10%%", large.rss/(1<<20), small.rss/(1<<20))
	}
	if wildcard.resources <= large.resources {
		t.Errorf("a wildcard sidecar holds %d resources, an on-demand one %d: the comparison measures nothing", wildcard.resources, large.resources)
	}

	// The control plane restarted under load: no request fails, and the
	// sidecar subscribes again to what it held (a change made while the
	// control plane is down reaches it from the new one).
	sc := startClient()
	defer sc.kill()
	waitPodHTTP(ctx, t, client, "http://127.0.0.1:15000/ready", 200)
	hc := client.httpClient(false)
	defer hc.CloseIdleConnections()
	var next atomic.Int64
	ld := startLoadWith(ctx, t, 3, func() (string, error) {
		vip := onDemandVIPs[next.Add(1)%int64(len(onDemandVIPs))]
		resp, err := hc.Get("http://" + vip + "/greet?name=restart")
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s", resp.Status)
		}
		return resp.Header.Get("X-Instance"), nil
	})
	time.Sleep(time.Second)
	cpProc.kill()
	writeFile(t, meshFile, onDemandMesh(g, 10_000-len(onDemandVIPs), "    timeout: 7s\n"))
	time.Sleep(time.Second)
	startCP() // stopped with the test
	waitUntil(ctx, t, "the client sidecar to get the change from the restarted control plane", func() bool {
		return strings.Contains(string(waitPodHTTP(ctx, t, client, "http://127.0.0.1:15000/config_dump", 200)), `"7s"`)
	})
	time.Sleep(time.Second)
	ld.Stop()
	_, errs, n := ld.snapshot()
	if len(errs) > 0 {
		t.Errorf("%d of %d requests failed across the control plane's restart: %v", len(errs), n, errs[:min(len(errs), 5)])
	}
	t.Logf("control plane restarted under load: %d requests, %d failed", n, len(errs))
}

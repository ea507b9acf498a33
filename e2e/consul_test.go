package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// consulAgent is a real Consul agent in dev mode on loopback ports of its
// own, with services registered from a config directory, so a restarted
// agent comes back with them.
type consulAgent struct {
	t        *testing.T
	bin      string
	dir      string
	httpAddr string
	ports    []int
	proc     *process
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func newConsulAgent(t *testing.T) *consulAgent {
	t.Helper()
	a := &consulAgent{t: t, bin: tool(t, "consul"), dir: t.TempDir(), ports: freePorts(t, 4)}
	a.httpAddr = fmt.Sprintf("127.0.0.1:%d", a.ports[0])
	return a
}

// start runs the agent and waits until it has a leader.
func (a *consulAgent) start(ctx context.Context) {
	t := a.t
	t.Helper()
	hcl := fmt.Sprintf(`ports { http = %d, server = %d, serf_lan = %d, serf_wan = %d, dns = -1, grpc = -1, grpc_tls = -1 }`,
		a.ports[0], a.ports[1], a.ports[2], a.ports[3])
	a.proc = start(t, "consul", a.bin, "-dev", "-node", "tender-e2e", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-config-dir", a.dir, "-hcl", hcl, "-log-level", "warn")
	waitUntil(ctx, t, "consul to elect itself leader", func() bool {
		resp, err := http.Get("http://" + a.httpAddr + "/v1/status/leader")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var leader string
		return json.NewDecoder(resp.Body).Decode(&leader) == nil && leader != ""
	})
}

// register writes a service definition with an HTTP check, as an operator
// would; the agent loads it at start.
func (a *consulAgent) register(id, name string, port int, checkURL string, tags ...string) {
	a.t.Helper()
	def := map[string]any{"service": map[string]any{
		"id": id, "name": name, "address": "127.0.0.1", "port": port, "tags": tags,
		"check": map[string]any{"id": id + "-health", "http": checkURL, "interval": "1s", "timeout": "1s"},
	}}
	b, _ := json.Marshal(def)
	writeFile(a.t, filepath.Join(a.dir, id+".json"), string(b))
}

func (a *consulAgent) put(path string) {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.httpAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("PUT %s: %s", path, resp.Status)
	}
}

// healthServer is an instance's health endpoint that the test can fail.
type healthServer struct {
	url     string
	failing atomic.Bool
	// failedAt is when the endpoint first answered a check with failing
	// set (Unix nanoseconds; 0: not yet): the agent checks every second,
	// and the mesh can only follow once it knows.
	failedAt atomic.Int64
}

// fail makes the endpoint fail its checks.
func (h *healthServer) fail() {
	h.failedAt.Store(0)
	h.failing.Store(true)
}

// failedSince is when the agent first got a failing answer; the zero
// time until it has.
func (h *healthServer) failedSince() time.Time {
	if n := h.failedAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func startHealthServer(t *testing.T) *healthServer {
	t.Helper()
	h := &healthServer{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if h.failing.Load() {
			h.failedAt.CompareAndSwap(0, time.Now().UnixNano())
			http.Error(w, "failing", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	h.url = "http://" + l.Addr().String() + "/healthz"
	return h
}

// TestConsul covers the Consul source against a real agent: three greeter
// instances with HTTP checks reach a proxyless gRPC client through tender;
// a failing check takes one out of the rotation within 1 s of the agent
// seeing it fail, without a failed RPC and a passing one brings it back; deregistering removes the service;
// the agent stopped and restarted costs no RPC and updates resume; a name
// in both Consul and mesh.yaml goes to mesh.yaml, with the conflict logged
// once.
func TestConsul(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	agent := newConsulAgent(t)
	gs, _ := startGreeters(t, 3)
	health := make([]*healthServer, 3)
	for i, g := range gs {
		health[i] = startHealthServer(t)
		var port int
		fmt.Sscan(g.port, &port)
		agent.register(g.name, "greeter", port, health[i].url, "tender.protocol=grpc", "tender.port=8080")
	}
	// A name mesh.yaml also has: mesh.yaml wins.
	shared := startHealthServer(t)
	agent.register("echo-consul", "echo", 7001, shared.url)
	agent.start(ctx)

	meshPath := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, meshPath, "services:\n  - name: echo\n    ports: [{name: tcp, port: 7000}]\n    endpoints: [{address: 127.0.0.9}]\n")
	cp := startControlPlaneOn(t, ctx, meshPath, "", "", "--consul-addr", agent.httpAddr, "--consul-wait", "10s")
	c := dialXDS(t, cp, "consul-client")
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")

	log := startLoad(ctx, t, c)

	// A failing health check: out of the rotation within 1 s of the
	// agent seeing it fail. It checks every second, so that is up to 2 s
	// after the check began failing, which is what the test can time.
	health[1].fail()
	waitUntil(ctx, t, "100 RPCs in a row without greeter-2", func() bool {
		r := log.recent(100)
		return r != nil && r["greeter-2"] == 0
	})
	last, _, n := log.snapshot()
	lag := last["greeter-2"].Sub(health[1].failedSince())
	t.Logf("greeter-2 answered its last RPC %v after its check first failed (%d RPCs)", lag, n)
	if lag > 2*time.Second {
		t.Errorf("greeter-2 still answered %v after its check failed, want none after 2 s (the agent's 1 s check interval, then 1 s)", lag)
	}
	log.noErrors(t, "a check failing")
	passedAt := time.Now()
	health[1].failing.Store(false)
	waitUntil(ctx, t, "greeter-2 back in the rotation", func() bool {
		last, _, _ := log.snapshot()
		return last["greeter-2"].After(passedAt)
	})
	t.Logf("greeter-2 answered again %v after its check passed", time.Since(passedAt).Round(time.Millisecond))
	log.noErrors(t, "a check passing again")

	// The agent stopped: the last endpoints keep serving, the source is
	// reported unhealthy; restarted: updates resume.
	agent.proc.kill()
	waitUntil(ctx, t, "/readyz to report the consul source failing", func() bool {
		var st struct {
			Sources map[string]struct {
				Err string `json:"error"`
			}
		}
		body, ok := get(cp.url("/readyz"))
		return ok && json.Unmarshal([]byte(body), &st) == nil && st.Sources["consul"].Err != ""
	})
	if m := string(waitHTTP(ctx, t, cp.url("/metrics"), 200)); !strings.Contains(m, `tender_discovery_source_healthy{source="consul"} 0`) {
		t.Errorf("metrics do not show the consul source unhealthy:\n%s", grepLines(m, "tender_discovery_source"))
	}
	downAt := time.Now()
	waitUntil(ctx, t, "every greeter to answer 20 RPCs with the agent down", func() bool {
		n := log.sentSince(downAt)
		return n["greeter-1"] >= 20 && n["greeter-2"] >= 20 && n["greeter-3"] >= 20
	})
	log.noErrors(t, "the agent down")
	agent.start(ctx)
	waitUntil(ctx, t, "the consul source healthy again", func() bool {
		m, ok := get(cp.url("/metrics"))
		return ok && strings.Contains(m, `tender_discovery_source_healthy{source="consul"} 1`)
	})
	// Updates resume: a check failing after the restart takes effect.
	health[2].fail()
	waitUntil(ctx, t, "greeter-3 out of the rotation after the restart", func() bool {
		r := log.recent(100)
		return r != nil && r["greeter-3"] == 0
	})
	health[2].failing.Store(false)
	log.noErrors(t, "the agent restarted")

	// Deregistering the service removes it from the mesh.
	log.Stop()
	for _, g := range gs {
		agent.put("/v1/agent/service/deregister/" + g.name)
	}
	waitUntil(ctx, t, "the greeter cluster to leave the control plane's config", func() bool {
		return !strings.Contains(string(waitHTTP(ctx, t, cp.url("/debug/config"), 200)), "greeter.default.svc.cluster.local")
	})

	// The shared name: mesh.yaml's echo is served, the conflict was logged
	// once through all the changes above.
	cfg := string(waitHTTP(ctx, t, cp.url("/debug/config"), 200))
	if !strings.Contains(cfg, "127.0.0.9") || strings.Contains(cfg, "7001") {
		t.Errorf("echo should come from mesh.yaml (127.0.0.9:7000), not Consul (7001):\n%s", grepLines(cfg, "echo"))
	}
	conflicts := 0
	for _, l := range strings.Split(cp.output(), "\n") {
		if strings.Contains(l, `"msg":"service reported by more than one source"`) && strings.Contains(l, `"service":"default/echo"`) {
			conflicts++
		}
	}
	if conflicts != 1 {
		t.Errorf("the default/echo conflict was logged %d times, want once", conflicts)
	}
}

// get fetches url; ok is false on any error or a non-200 answer.
func get(url string) (string, bool) {
	resp, err := http.Get(url)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err == nil && resp.StatusCode == http.StatusOK
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

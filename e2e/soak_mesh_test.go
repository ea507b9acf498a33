package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The soak's mesh and what it does to it: the endpoint churn, pod kills
// and control-plane restarts TestSoak (soak_test.go) runs under load.

// soakMesh is a control plane with its CA, four greeter pods and a client
// pod, every pod meshed over mutual TLS. greeter-1 is never disturbed,
// greeter-2 and greeter-3 are killed in turn, greeter-4 comes and goes in
// mesh.yaml.
type soakMesh struct {
	lab        *lab
	cp, client *pod
	greeters   []*soakGreeter
	dir        string
	meshFile   string
	caDir      string
	// bin holds the binaries the soak runs (soakBinaries): built
	// without the race detector.
	bin string
	// cpProc is replaced by each restart, which only the test's goroutine
	// makes.
	cpProc        *process
	clientSidecar *process

	mu sync.Mutex // guards health and the writes of meshFile
	// health is each listed greeter's health in mesh.yaml (HEALTHY or
	// DRAINING); a greeter not in it is not listed.
	health map[string]string

	// sidecars are every greeter sidecar process the soak started,
	// restarted ones included.
	sidecars []*process

	eventsMu sync.Mutex // guards events
	events   []string
	start    time.Time
}

// soakGreeter is a greeter pod; app and sidecar are its current
// processes, replaced when it is restarted.
type soakGreeter struct {
	pod          *pod
	app, sidecar *process
}

func newSoakMesh(t *testing.T, ctx context.Context) *soakMesh {
	t.Helper()
	s := &soakMesh{lab: newLab(t), health: map[string]string{}, bin: soakBinaries(t)}
	s.cp = s.lab.addPod("cp", 2)
	for i := range 4 {
		s.greeters = append(s.greeters, &soakGreeter{pod: s.lab.addPod(fmt.Sprintf("greeter-%d", i+1), 11+i)})
	}
	s.client = s.lab.addPod("client", 20)
	s.dir = t.TempDir()
	// The sidecars run as 1337 and read their token and root from here.
	for _, d := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.meshFile = filepath.Join(s.dir, "mesh.yaml")
	s.caDir = filepath.Join(s.dir, "ca")
	writeFile(t, filepath.Join(s.dir, "tokens"), "# token namespace service-account\ntok-greeter default greeter\ntok-client default client\n")
	for _, w := range []string{"greeter", "client"} {
		writeFile(t, filepath.Join(s.dir, w+".token"), "tok-"+w+"\n")
	}
	for _, g := range s.greeters {
		s.health[g.pod.name] = "HEALTHY"
	}
	if err := s.writeMesh(); err != nil {
		t.Fatal(err)
	}
	s.cpProc = s.startControlPlane(ctx, t)
	if err := os.Chmod(s.caDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, g := range s.greeters {
		g.pod.run(t, "sidecar", "init")
		s.startGreeter(t, g)
	}
	s.client.run(t, "sidecar", "init")
	s.clientSidecar = s.startSidecar(t, s.client, "client")
	for _, p := range []*pod{s.client, s.greeters[0].pod, s.greeters[1].pod, s.greeters[2].pod, s.greeters[3].pod} {
		waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/ready", 200)
	}
	return s
}

func (s *soakMesh) startControlPlane(ctx context.Context, t *testing.T) *process {
	t.Helper()
	p := s.cp.startPath(t, "controlplane", filepath.Join(s.bin, "controlplane"), "--config-file", s.meshFile,
		"--xds-addr", "0.0.0.0:15010", "--xds-tls-addr", "0.0.0.0:15012", "--metrics-addr", "0.0.0.0:15014",
		"--ca-dir", s.caDir, "--bootstrap-tokens-file", filepath.Join(s.dir, "tokens"), "--log-format", "json", "--debounce", "50ms")
	p.waitLog(ctx, "control plane starting")
	return p
}

func (s *soakMesh) startSidecar(t *testing.T, p *pod, sa string) *process {
	t.Helper()
	return p.startPathAs(t, proxyUID, "sidecar", filepath.Join(s.bin, "sidecar"), "run",
		"--xds-addr", cpIP+":15012", "--xds-tls", "--ca-root-file", filepath.Join(s.caDir, "root-cert.pem"),
		"--token-file", filepath.Join(s.dir, sa+".token"), "--controlplane-identity", "spiffe://cluster.local/ns/tender-system/sa/tender-controlplane",
		"--pod-name", p.name, "--pod-namespace", "default", "--workload", sa, "--log-format", "json")
}

// startGreeter starts g's app and its sidecar (the pod's iptables rules
// outlive them).
func (s *soakMesh) startGreeter(t *testing.T, g *soakGreeter) {
	t.Helper()
	g.app = g.pod.startPath(t, "greeter", filepath.Join(s.bin, "greeter"), "--instance", g.pod.name, "--http-addr", ":8080", "--grpc-addr", ":9090")
	g.sidecar = s.startSidecar(t, g.pod, "greeter")
	s.sidecars = append(s.sidecars, g.sidecar)
}

// logged counts the log lines of procs with message msg whose field
// starts with prefix.
func logged(procs []*process, msg, field, prefix string) int {
	n := 0
	for _, p := range procs {
		p.mu.Lock()
		for _, l := range p.lines {
			if v, _ := l[field].(string); l["msg"] == msg && strings.HasPrefix(v, prefix) {
				n++
			}
		}
		p.mu.Unlock()
	}
	return n
}

// writeMesh writes mesh.yaml for the greeters listed in health. It
// returns an error rather than failing: the churn calls it from a
// goroutine of its own.
func (s *soakMesh) writeMesh() error {
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  - name: greeter\n    vip: %s\n    meshed: true\n%s", greeterVIP, soakPolicy)
	b.WriteString("    ports: [{name: http, port: 80, protocol: HTTP}, {name: grpc, port: 9090, protocol: GRPC}]\n    endpoints:\n")
	for _, g := range s.greeters {
		if h, ok := s.health[g.pod.name]; ok {
			fmt.Fprintf(&b, "      - {address: %s, ports: {http: 8080, grpc: 9090}, health: %s}\n", g.pod.ip, h)
		}
	}
	b.WriteString("mtls: {mode: STRICT}\n")
	tmp := s.meshFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.meshFile)
}

// setHealth lists g in mesh.yaml with health, or takes it out ("").
func (s *soakMesh) setHealth(g *soakGreeter, health string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if health == "" {
		delete(s.health, g.pod.name)
	} else {
		s.health[g.pod.name] = health
	}
	return s.writeMesh()
}

// listed reports whether g is in mesh.yaml.
func (s *soakMesh) listed(g *soakGreeter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.health[g.pod.name]
	return ok
}

// event notes what the soak did, and when, for the log.
func (s *soakMesh) event(format string, args ...any) {
	s.eventsMu.Lock()
	defer s.eventsMu.Unlock()
	s.events = append(s.events, fmt.Sprintf("%6.1fs  ", time.Since(s.start).Seconds())+fmt.Sprintf(format, args...))
}

func (s *soakMesh) eventLog() string {
	s.eventsMu.Lock()
	defer s.eventsMu.Unlock()
	return strings.Join(s.events, "\n")
}

// clientEndpoints is what the client's sidecar balances the greeter's
// two ports over, from /clusters: each endpoint address and whether it
// takes new requests.
func (s *soakMesh) clientEndpoints(ctx context.Context, t *testing.T) map[string]bool {
	t.Helper()
	var cls []struct {
		Name      string
		Endpoints []struct {
			Address string
			Healthy bool
		}
	}
	if err := json.Unmarshal(waitPodHTTP(ctx, t, s.client, "http://127.0.0.1:15000/clusters", 200), &cls); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, cl := range cls {
		if strings.HasPrefix(cl.Name, "outbound|80||greeter.") || strings.HasPrefix(cl.Name, "outbound|9090||greeter.") {
			for _, e := range cl.Endpoints {
				out[e.Address] = e.Healthy
			}
		}
	}
	return out
}

// takesRequests reports whether the client's sidecar still sends new
// requests to g, on either port.
func (s *soakMesh) takesRequests(ctx context.Context, t *testing.T, g *soakGreeter) bool {
	t.Helper()
	eps := s.clientEndpoints(ctx, t)
	return eps[g.pod.ip+":8080"] || eps[g.pod.ip+":9090"]
}

// killHard kills g's app and sidecar while mesh.yaml still lists it, as
// a node failure or an OOM kill does; retries must hide it. The pod comes
// back after soakDownFor.
func (s *soakMesh) killHard(ctx context.Context, t *testing.T, g *soakGreeter) {
	t.Helper()
	g.app.kill()
	g.sidecar.kill()
	s.event("%s killed (SIGKILL, endpoint still listed)", g.pod.name)
	s.restart(ctx, t, g)
}

// killTerminating is a pod deleted the Kubernetes way: its endpoint first
// turns terminating (DRAINING: no new requests), then the pod dies, its
// endpoint goes, and a new pod takes its place.
func (s *soakMesh) killTerminating(ctx context.Context, t *testing.T, g *soakGreeter) {
	t.Helper()
	if err := s.setHealth(g, "DRAINING"); err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	waitUntil(ctx, t, "the client sidecar to stop sending to "+g.pod.name, func() bool { return !s.takesRequests(ctx, t, g) })
	s.event("%s draining in the client sidecar after %v", g.pod.name, time.Since(from).Round(time.Millisecond))
	g.app.kill()
	g.sidecar.kill()
	if err := s.setHealth(g, ""); err != nil {
		t.Fatal(err)
	}
	s.event("%s killed (SIGKILL) after its endpoint drained; endpoint removed", g.pod.name)
	s.restart(ctx, t, g)
	if err := s.setHealth(g, "HEALTHY"); err != nil {
		t.Fatal(err)
	}
	s.event("%s listed again", g.pod.name)
}

// restart brings g back after soakDownFor: a killed pod's containers
// restart, so capacity comes back.
func (s *soakMesh) restart(ctx context.Context, t *testing.T, g *soakGreeter) {
	t.Helper()
	select {
	case <-time.After(soakDownFor): // the pod stays dead this long
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	from := time.Now()
	s.startGreeter(t, g)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	waitPodHTTP(rctx, t, g.pod, "http://127.0.0.1:15000/ready", 200)
	s.event("%s restarted, ready after %v", g.pod.name, time.Since(from).Round(time.Millisecond))
}

// restartControlPlane stops the control plane as a rollout does
// (SIGTERM; SIGKILL after 10 s), starts it again on the same mesh.yaml and
// CA, and waits for every sidecar to reconnect.
func (s *soakMesh) restartControlPlane(ctx context.Context, t *testing.T) {
	t.Helper()
	old := s.cpProc
	from := time.Now()
	old.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have died; kill waits either way
	select {
	case <-old.done:
	case <-time.After(10 * time.Second):
		s.event("control plane still running 10s after SIGTERM: killed")
	}
	old.kill()
	s.event("control plane stopped after %v", time.Since(from).Round(time.Millisecond))
	from = time.Now()
	s.cpProc = s.startControlPlane(ctx, t)
	nodes := []string{"client.default"}
	for _, g := range s.greeters {
		nodes = append(nodes, g.pod.name+".default")
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	waitUntil(rctx, t, "every sidecar to reconnect to the restarted control plane", func() bool {
		body := string(waitPodHTTP(rctx, t, s.cp, "http://127.0.0.1:15014/debug/proxies", 200))
		for _, n := range nodes {
			if !strings.Contains(body, `"`+n+`"`) {
				return false
			}
		}
		return true
	})
	s.event("control plane restarted; all %d sidecars reconnected after %v", len(nodes), time.Since(from).Round(time.Millisecond))
}

// churn adds greeter-4 to mesh.yaml or removes it every soakChurnEvery
// until ctx ends; it counts the changes.
func (s *soakMesh) churn(ctx context.Context, changes *atomic.Int64, errs chan<- error) {
	g := s.greeters[3]
	tick := time.NewTicker(soakChurnEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		health, what := "", "removed"
		if !s.listed(g) {
			health, what = "HEALTHY", "added"
		}
		if err := s.setHealth(g, health); err != nil {
			select {
			case errs <- err:
			default:
			}
			return
		}
		changes.Add(1)
		s.event("%s %s", g.pod.name, what)
	}
}

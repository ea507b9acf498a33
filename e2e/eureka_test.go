package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tender-mesh/tender/discovery/eureka/eurekatest"
)

// eurekaJS returns the NODE_PATH holding eureka-js-client (make
// tools-eureka-js installs it).
func eurekaJS(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node not installed (Debian package nodejs)")
	}
	dir, err := filepath.Abs("../.tools/eureka-js/node_modules")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "eureka-js-client", "package.json"))
	}
	if err != nil {
		t.Fatalf("eureka-js-client not installed (make tools-eureka-js): %v", err)
	}
	return dir
}

// eurekaInstance is one greeter registered by a real eureka-js-client
// process with every emulated server.
type eurekaInstance struct {
	id   string
	env  []string
	proc *process
}

func startEurekaInstance(t *testing.T, nodePath, id string, port string, servers ...*eurekatest.Server) *eurekaInstance {
	t.Helper()
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL())
	}
	var p int
	fmt.Sscan(port, &p)
	cfg, _ := json.Marshal(map[string]any{
		"servers": urls, "app": "GREETER", "id": id, "ip": "127.0.0.1", "port": p, "vip": "greeter",
		"metadata":    map[string]string{"tender.dev/protocol": "grpc", "tender.dev/port": "8080", "zone": "z1"},
		"heartbeatMs": 500, "fetchMs": 500, "leaseSecs": 2,
	})
	in := &eurekaInstance{id: id, env: []string{"NODE_PATH=" + nodePath, "TENDER_EUREKA_INSTANCE=" + string(cfg)}}
	in.start(t)
	return in
}

func (in *eurekaInstance) start(t *testing.T) {
	t.Helper()
	script, _ := filepath.Abs("testdata/eureka-instance.js")
	node, _ := exec.LookPath("node")
	// env(1) sets the environment and execs node, which gets the signals.
	in.proc = start(t, "eureka-js "+in.id, "/usr/bin/env", append(in.env, node, script)...)
}

// sees reports whether the instance's js client, through server url, has
// a registry in which cond holds of its "ID=STATUS,..." list.
func (in *eurekaInstance) sees(url string, cond func(string) bool) bool {
	p := in.proc
	p.mu.Lock()
	defer p.mu.Unlock()
	last := ""
	for _, l := range p.lines {
		if l["msg"] == "registry" && l["server"] == url {
			last, _ = l["instances"].(string)
		}
	}
	return cond(last)
}

// eurekaCall sends one REST call to every server, as an operator does to
// a replicated cluster.
func eurekaCall(t *testing.T, method, path string, servers ...*eurekatest.Server) time.Time {
	t.Helper()
	for _, s := range servers {
		req, _ := http.NewRequest(method, s.URL()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s%s: %s", method, s.URL(), path, resp.Status)
		}
	}
	return time.Now()
}

// TestEureka covers the Eureka source against two emulated Eureka servers
// (eurekatest) that real eureka-js-client processes register three
// greeters with: a proxyless gRPC client reaches all three through tender;
// an instance taken OUT_OF_SERVICE leaves the rotation at the next refresh
// without a failed RPC and returns when back UP, as does one set DOWN; a
// delta that lost its change is caught by its hash and repaired by a full
// fetch; an instance whose client dies leaves when its lease expires, one
// whose client deregisters at the next delta; the first server stopped,
// the source fails over to the second; both stopped, traffic continues
// on the last registry with /readyz and the metric showing the source
// failing, and it recovers when one comes back; a name in both Eureka
// and mesh.yaml goes to mesh.yaml, with the conflict logged once.
func TestEureka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodePath := eurekaJS(t)
	a, b := eurekatest.New(eurekatest.Options{}), eurekatest.New(eurekatest.Options{Single: true})
	for _, s := range []*eurekatest.Server{a, b} {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
	}
	servers := []*eurekatest.Server{a, b}
	gs, _ := startGreeters(t, 3)
	var ins []*eurekaInstance
	for _, g := range gs {
		ins = append(ins, startEurekaInstance(t, nodePath, g.name, g.port, a, b))
	}
	// A name mesh.yaml also has, registered by hand with a long lease.
	for _, s := range servers {
		body := `{"instance":{"instanceId":"echo-1","hostName":"echo-1","app":"ECHO","ipAddr":"127.0.0.1","port":{"$":7001,"@enabled":"true"},` +
			`"vipAddress":"echo","dataCenterInfo":{"name":"MyOwn"},"leaseInfo":{"durationInSecs":600}}}`
		resp, err := http.Post(s.URL()+"/apps/ECHO", "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("register echo: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	all := func(s string) bool {
		return s == "greeter-1=UP,greeter-2=UP,greeter-3=UP"
	}
	waitUntil(ctx, t, "the js clients to see all three instances on both servers", func() bool {
		for _, in := range ins {
			if !in.sees(a.URL(), all) || !in.sees(b.URL(), all) {
				return false
			}
		}
		return true
	})

	meshPath := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, meshPath, "services:\n  - name: echo\n    ports: [{name: tcp, port: 7000}]\n    endpoints: [{address: 127.0.0.9}]\n")
	started := time.Now()
	cp := startControlPlaneOn(t, ctx, meshPath, "", "", "--eureka-url", a.URL(), "--eureka-url", b.URL(), "--eureka-refresh", "500ms")
	c := dialXDS(t, cp, "eureka-client")
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")
	t.Logf("control plane started and a client reached all three in %v", time.Since(started).Round(time.Millisecond))

	log := startLoad(ctx, t, c)
	// leaves waits until name is out of the rotation and returns how long
	// after at it answered its last RPC.
	leaves := func(what, name string, at time.Time) time.Duration {
		t.Helper()
		waitUntil(ctx, t, "100 RPCs in a row without "+name+" ("+what+")", func() bool {
			r := log.recent(100)
			return r != nil && r[name] == 0
		})
		last, _, _ := log.snapshot()
		lag := last[name].Sub(at)
		t.Logf("%s: %s answered its last RPC %v after the change", what, name, lag.Round(time.Millisecond))
		return lag
	}
	returns := func(what, name string, at time.Time) {
		t.Helper()
		waitUntil(ctx, t, name+" back in the rotation ("+what+")", func() bool {
			last, _, _ := log.snapshot()
			return last[name].After(at)
		})
		t.Logf("%s: %s answered again %v after the change", what, name, time.Since(at).Round(time.Millisecond))
	}

	// OUT_OF_SERVICE drains at the next refresh; back UP, it returns.
	at := eurekaCall(t, http.MethodPut, "/apps/GREETER/greeter-2/status?value=OUT_OF_SERVICE", a, b)
	leaves("OUT_OF_SERVICE", "greeter-2", at)
	log.noErrors(t, "an instance taken OUT_OF_SERVICE")
	waitUntil(ctx, t, "the js client to see greeter-2 out of service through a delta", func() bool {
		return ins[0].sees(a.URL(), func(s string) bool { return strings.Contains(s, "greeter-2=OUT_OF_SERVICE") })
	})
	at = eurekaCall(t, http.MethodDelete, "/apps/GREETER/greeter-2/status?value=UP", a, b)
	returns("back UP", "greeter-2", at)

	// DOWN is not served.
	at = eurekaCall(t, http.MethodPut, "/apps/GREETER/greeter-3/status?value=DOWN", a, b)
	leaves("DOWN", "greeter-3", at)
	at = eurekaCall(t, http.MethodDelete, "/apps/GREETER/greeter-3/status?value=UP", a, b)
	returns("back UP", "greeter-3", at)
	log.noErrors(t, "an instance DOWN and back")

	// A delta that lost its change: the hash does not match, a full fetch
	// repairs the registry.
	fullBefore, _ := a.Fetches()
	a.LoseNextDelta("tender-controlplane") // not the js clients'
	at = eurekaCall(t, http.MethodPut, "/apps/GREETER/greeter-1/status?value=OUT_OF_SERVICE", a, b)
	leaves("a lost delta", "greeter-1", at)
	if full, _ := a.Fetches(); full <= fullBefore {
		t.Errorf("no full fetch after the lost delta (%d before, %d after)", fullBefore, full)
	}
	if !strings.Contains(cp.output(), "eureka delta does not reconcile; fetching the full registry") {
		t.Error("the control plane did not log the delta that did not reconcile")
	}
	at = eurekaCall(t, http.MethodDelete, "/apps/GREETER/greeter-1/status?value=UP", a, b)
	returns("back UP", "greeter-1", at)
	log.noErrors(t, "a lost delta")

	// A client that dies stops renewing: its instance leaves when the
	// lease (2 s) expires. Restarted, it registers again.
	ins[0].proc.kill()
	at = time.Now()
	if lag := leaves("lease expired", "greeter-1", at); lag < time.Second {
		t.Errorf("greeter-1 left %v after its client died, before its 2 s lease could expire", lag)
	}
	log.noErrors(t, "a lease expiring")
	at = time.Now()
	ins[0].start(t)
	returns("registered again", "greeter-1", at)

	// A client that deregisters (SIGTERM: stop()) leaves at the next delta.
	ins[0].proc.cmd.Process.Signal(syscall.SIGTERM)
	at = time.Now()
	leaves("deregistered", "greeter-1", at)
	<-ins[0].proc.done
	if !strings.Contains(ins[0].proc.output(), `"msg":"deregistered"`) {
		t.Errorf("the js client did not deregister:\n%s", ins[0].proc.output())
	}
	log.noErrors(t, "an instance deregistered")

	// The first server stopped: the source fails over to the second and
	// stays healthy.
	a.Stop()
	cp.waitLog(ctx, "eureka: failed over")
	at = eurekaCall(t, http.MethodPut, "/apps/GREETER/greeter-2/status?value=OUT_OF_SERVICE", b)
	leaves("through the second server", "greeter-2", at)
	at = eurekaCall(t, http.MethodDelete, "/apps/GREETER/greeter-2/status?value=UP", b)
	returns("through the second server", "greeter-2", at)
	if m := string(waitHTTP(ctx, t, cp.url("/metrics"), 200)); !strings.Contains(m, `tender_discovery_source_healthy{source="eureka"} 1`) {
		t.Errorf("after a failover that worked, the source is not healthy:\n%s", grepLines(m, "tender_discovery_source"))
	}

	// Both stopped: the last registry keeps serving, the source is
	// reported unhealthy; one back, it recovers.
	b.Stop()
	waitUntil(ctx, t, "/readyz to report the eureka source failing", func() bool {
		var st struct {
			Sources map[string]struct {
				Err string `json:"error"`
			}
		}
		body, ok := get(cp.url("/readyz"))
		return ok && json.Unmarshal([]byte(body), &st) == nil && strings.Contains(st.Sources["eureka"].Err, b.URL())
	})
	if m := string(waitHTTP(ctx, t, cp.url("/metrics"), 200)); !strings.Contains(m, `tender_discovery_source_healthy{source="eureka"} 0`) {
		t.Errorf("metrics do not show the eureka source unhealthy:\n%s", grepLines(m, "tender_discovery_source"))
	}
	downAt := time.Now()
	waitUntil(ctx, t, "greeter-2 and greeter-3 to answer 20 RPCs each with both servers down", func() bool {
		n := log.sentSince(downAt)
		return n["greeter-2"] >= 20 && n["greeter-3"] >= 20
	})
	log.noErrors(t, "both servers down")
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	waitUntil(ctx, t, "the eureka source healthy again", func() bool {
		m, ok := get(cp.url("/metrics"))
		return ok && strings.Contains(m, `tender_discovery_source_healthy{source="eureka"} 1`)
	})
	t.Logf("the source was healthy again %v after a server came back", time.Since(upAt).Round(time.Millisecond))
	at = eurekaCall(t, http.MethodPut, "/apps/GREETER/greeter-3/status?value=OUT_OF_SERVICE", a)
	leaves("after the servers came back", "greeter-3", at)
	log.noErrors(t, "a server back")
	log.Stop()

	// The shared name: mesh.yaml's echo is served, the conflict was logged
	// once through all the changes above.
	cfg := string(waitHTTP(ctx, t, cp.url("/debug/config"), 200))
	if !strings.Contains(cfg, "127.0.0.9") || strings.Contains(cfg, "7001") {
		t.Errorf("echo should come from mesh.yaml (127.0.0.9:7000), not Eureka (7001):\n%s", grepLines(cfg, "echo"))
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

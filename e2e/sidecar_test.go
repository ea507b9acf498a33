package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

const (
	greeterVIP  = "10.96.0.10"
	echoVIP     = "10.96.0.11"
	greeterVIP6 = "fd96::10"
	bannerVIP   = "10.96.0.12"
	cpIP        = labSubnet + ".2"
	proxyUID    = 1337
	drainWindow = "5s"
)

// mesh is a lab with a control plane, greeter pods and a client pod, each
// meshed pod with real iptables capture and a sidecar.
type mesh struct {
	lab      *lab
	cp       *pod
	cpProc   *process
	meshFile string
	greeters []*pod
	apps     map[string]*process
	sidecars map[string]*process
	client   *pod
}

func meshConfig(greeters []*pod) string { return meshConfigWith(greeters, "") }

// meshConfigWith is meshConfig with policy (mesh.yaml lines, such as
// "\n    timeout: 1s") added to the greeter service.
func meshConfigWith(greeters []*pod, policy string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  - name: greeter\n    namespace: default\n    vip: %s%s\n", greeterVIP, policy)
	b.WriteString("    ports:\n      - {name: http, port: 80, protocol: HTTP}\n      - {name: grpc, port: 9090, protocol: GRPC}\n    endpoints:\n")
	for _, g := range greeters {
		fmt.Fprintf(&b, "      - {address: %s, ports: {http: 8080, grpc: 9090}, zone: z1}\n", g.ip)
	}
	// The greeter again, for IPv6 clients.
	fmt.Fprintf(&b, "  - name: greeter6\n    vip: %s\n    ports: [{name: http, port: 80, protocol: HTTP}]\n    endpoints:\n", greeterVIP6)
	for _, g := range greeters {
		fmt.Fprintf(&b, "      - {address: %q, port: 8080}\n", g.ip6)
	}
	// Two TCP services whose protocol is left to detection: an echo (the
	// client speaks first) and a banner service (the server does).
	for _, svc := range []struct {
		name, vip string
		port      int
	}{{"echo", echoVIP, 7000}, {"banner", bannerVIP, 2525}} {
		fmt.Fprintf(&b, "  - name: %s\n    vip: %s\n    ports: [{name: tcp, port: %d}]\n    endpoints:\n", svc.name, svc.vip, svc.port)
		for _, g := range greeters {
			fmt.Fprintf(&b, "      - {address: %s}\n", g.ip)
		}
	}
	return b.String()
}

func newMesh(t *testing.T, ctx context.Context, greeters int) *mesh {
	t.Helper()
	return newMeshWith(t, ctx, greeters)
}

// newMeshWith is newMesh with extra flags for the client's sidecar.
func newMeshWith(t *testing.T, ctx context.Context, greeters int, clientSidecarArgs ...string) *mesh {
	t.Helper()
	m := &mesh{lab: newLab(t), apps: map[string]*process{}, sidecars: map[string]*process{}}
	m.cp = m.lab.addPod("cp", 2)
	for i := range greeters {
		m.greeters = append(m.greeters, m.lab.addPod(fmt.Sprintf("greeter-%d", i+1), 11+i))
	}
	m.client = m.lab.addPod("client", 20)

	m.meshFile = filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, m.meshFile, meshConfig(m.greeters))
	m.cpProc = m.cp.start(t, "controlplane", "controlplane", "--config-file", m.meshFile,
		"--xds-addr", "0.0.0.0:15010", "--metrics-addr", "0.0.0.0:15014", "--log-format", "json", "--debounce", "50ms")
	m.cpProc.waitLog(ctx, "control plane starting")

	for _, g := range m.greeters {
		g.run(t, "sidecar", "init")
		m.apps[g.name] = g.start(t, "greeter", "greeter", "--instance", g.name, "--http-addr", ":8080", "--grpc-addr", ":9090",
			"--tcp-echo-addr", ":7000", "--banner-addr", ":2525")
		m.sidecars[g.name] = m.startSidecar(t, g)
	}
	m.client.run(t, "sidecar", "init")
	m.sidecars["client"] = m.startSidecar(t, m.client, clientSidecarArgs...)
	for _, p := range append([]*pod{m.client}, m.greeters...) {
		waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/ready", 200)
	}
	m.waitPreloaded(ctx, t)
	return m
}

// labPreload subscribes a lab sidecar to the lab mesh's services at
// start: the tests that change a service's config wait for the client's
// sidecar to hold the change, which an on-demand sidecar holds only once
// it called the service (TestOnDemand tests on-demand itself).
const labPreload = "--preload=greeter.default.svc.cluster.local:80,greeter.default.svc.cluster.local:9090," +
	"greeter6.default.svc.cluster.local:80,echo.default.svc.cluster.local:7000,banner.default.svc.cluster.local:2525"

func (m *mesh) startSidecar(t *testing.T, p *pod, extra ...string) *process {
	t.Helper()
	return p.startAs(t, proxyUID, "sidecar", "sidecar", append([]string{"run", "--xds-addr", cpIP + ":15010",
		"--pod-name", p.name, "--pod-namespace", "default", "--zone", "z1", "--log-format", "json", "--drain-timeout", drainWindow,
		labPreload}, extra...)...)
}

// waitPreloaded waits until the client's sidecar holds the greeter with
// every greeter pod.
func (m *mesh) waitPreloaded(ctx context.Context, t *testing.T) {
	t.Helper()
	waitUntil(ctx, t, "the client sidecar to hold the preloaded greeter", func() bool {
		body := string(waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/clusters", 200))
		if !strings.Contains(body, "outbound|80||greeter.default.svc.cluster.local") {
			return false
		}
		for _, g := range m.greeters {
			if !strings.Contains(body, `"`+g.ip+":") {
				return false
			}
		}
		return true
	})
}

// waitDropped waits until the client's sidecar no longer has g as an
// endpoint.
func (m *mesh) waitDropped(ctx context.Context, t *testing.T, g *pod) {
	t.Helper()
	waitUntil(ctx, t, "the client sidecar to drop "+g.name, func() bool {
		body := waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/clusters", 200)
		return !strings.Contains(string(body), `"`+g.ip+":")
	})
}

// httpClient sends requests from inside p.
func (p *pod) httpClient(h2c bool) *http.Client {
	tr := &http.Transport{DialContext: p.dial, MaxIdleConnsPerHost: 16}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func waitPodHTTP(ctx context.Context, t *testing.T, p *pod, url string, want int) []byte {
	t.Helper()
	c := p.httpClient(false)
	defer c.CloseIdleConnections()
	return pollHTTP(ctx, t, c, url, want)
}

func (p *pod) grpcConn(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return p.dial(ctx, "tcp", addr) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func greetHTTP(c *http.Client) (string, error) {
	resp, err := c.Get("http://" + greeterVIP + "/greet?name=lab")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var g struct{ Instance string }
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("status %s: %s", resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		return "", err
	}
	return g.Instance, nil
}

func inboundRequests(ctx context.Context, t *testing.T, p *pod) int {
	t.Helper()
	return sidecarStat(ctx, t, p, "inbound_requests")
}

func checkSpread(t *testing.T, what string, counts map[string]int, names ...string) {
	t.Helper()
	for _, n := range names {
		if c := counts[n]; c < 95 || c > 105 {
			t.Errorf("%s: %s answered %d of 300, want 100 ± 5 (all: %v)", what, n, c, counts)
		}
	}
}

// TestSidecarRoundRobin is acceptance 1: a client with no mesh code calls
// the greeter's VIP over HTTP/1.1, h2c and gRPC; capture sends every
// request through the sidecars, which spread them evenly, and each inbound
// sidecar saw its share.
func TestSidecarRoundRobin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 3)
	names := []string{"greeter-1", "greeter-2", "greeter-3"}
	total := map[string]int{}

	for _, h2c := range []bool{false, true} {
		c := m.client.httpClient(h2c)
		counts := map[string]int{}
		for range 300 {
			inst, err := greetHTTP(c)
			if err != nil {
				t.Fatalf("h2c=%v: request failed: %v", h2c, err)
			}
			counts[inst]++
			total[inst]++
		}
		c.CloseIdleConnections()
		t.Logf("HTTP (h2c=%v), 300 requests: %v", h2c, counts)
		checkSpread(t, fmt.Sprintf("HTTP (h2c=%v)", h2c), counts, names...)
	}

	gc := pb.NewGreeterClient(m.client.grpcConn(t, greeterVIP+":9090"))
	counts := map[string]int{}
	for range 300 {
		r, err := gc.Greet(ctx, &pb.GreetRequest{Name: "lab"})
		if err != nil {
			t.Fatalf("gRPC request failed: %v", err)
		}
		counts[r.GetInstance()]++
		total[r.GetInstance()]++
	}
	t.Logf("gRPC, 300 requests on one connection: %v", counts)
	checkSpread(t, "gRPC", counts, names...)

	// IPv6: the original destination of a v6 connection is found too.
	c6 := m.client.httpClient(false)
	resp, err := c6.Get("http://[" + greeterVIP6 + "]/greet?name=v6")
	if err != nil {
		t.Fatalf("IPv6 VIP: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("IPv6 VIP: got %s, want 200", resp.Status)
	}
	total[resp.Header.Get("X-Instance")]++

	for _, g := range m.greeters {
		if got := inboundRequests(ctx, t, g); got != total[g.name] {
			t.Errorf("%s's inbound sidecar saw %d requests, want the %d it answered", g.name, got, total[g.name])
		}
	}
}

// TestSidecarStreamsAndLargeMessages is acceptance 2.
func TestSidecarStreamsAndLargeMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 1)
	gc := pb.NewGreeterClient(m.client.grpcConn(t, greeterVIP+":9090"))

	big := make([]byte, 16<<20)
	rand.Read(big)
	r, err := gc.Echo(ctx, &pb.EchoMessage{Payload: big})
	if err != nil {
		t.Fatalf("16 MiB Echo: %v", err)
	}
	if !bytes.Equal(r.GetPayload(), big) {
		t.Fatalf("16 MiB Echo came back changed (%d bytes)", len(r.GetPayload()))
	}

	st, err := gc.Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := st.Send(&pb.EchoMessage{Payload: []byte(fmt.Sprint(i))}); err != nil {
				errc <- err
				return
			}
		}
		errc <- st.CloseSend()
	}()
	for i := range n {
		msg, err := st.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := string(msg.GetPayload()); got != fmt.Sprint(i) {
			t.Fatalf("message %d came back as %q", i, got)
		}
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after %d messages: got %v, want io.EOF", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("send: %v", err)
	}
}

// TestSidecarEndpointLossAndControlPlaneLoss is acceptance 4: a killed
// greeter app, once the control plane removes it, costs no request; with
// the control plane stopped, traffic keeps flowing on the last config.
func TestSidecarEndpointLossAndControlPlaneLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 3)
	c := m.client.httpClient(false)

	m.apps["greeter-3"].kill()
	writeFile(t, m.meshFile, meshConfig(m.greeters[:2]))
	m.waitDropped(ctx, t, m.greeters[2])
	for i := range 200 {
		if _, err := greetHTTP(c); err != nil {
			t.Fatalf("request %d after the removal failed: %v", i, err)
		}
	}

	m.cpProc.kill()
	counts := map[string]int{}
	for i := range 200 {
		inst, err := greetHTTP(c)
		if err != nil {
			t.Fatalf("request %d with the control plane down failed: %v", i, err)
		}
		counts[inst]++
	}
	if counts["greeter-1"] == 0 || counts["greeter-2"] == 0 || counts["greeter-3"] != 0 {
		t.Errorf("with the control plane down got %v, want greeter-1 and greeter-2 only", counts)
	}
}

// TestSidecarDrain is acceptance 5: SIGTERM to a greeter's sidecar under
// load lets in-flight requests finish; no client sees a reset.
func TestSidecarDrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 2)
	c := m.client.httpClient(false)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	stop := make(chan struct{})
	var phase atomic.Value
	phase.Store("load")
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// /echo streams a body through both sidecars.
				resp, err := c.Post("http://"+greeterVIP+"/echo", "text/plain", strings.NewReader(strings.Repeat("x", 64<<10)))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", phase.Load(), err))
					mu.Unlock()
				}
			}
		})
	}
	// The control plane first stops sending traffic to greeter-1 (as
	// Kubernetes removes a terminating pod's endpoint), then its sidecar
	// gets SIGTERM with requests in flight.
	writeFile(t, m.meshFile, meshConfig(m.greeters[1:]))
	m.waitDropped(ctx, t, m.greeters[0])
	phase.Store("removed")
	// Requests in flight at greeter-1 itself when its sidecar gets the
	// signal: bodies streamed over a second, straight to its pod address.
	before := inboundRequests(ctx, t, m.greeters[0])
	slow := make(chan error, 2)
	started := make(chan struct{}, 2)
	for range 2 {
		go func() { slow <- slowEcho(m.client.httpClient(false), "http://"+m.greeters[0].ip+":8080/echo", started) }()
	}
	<-started
	<-started
	waitUntil(ctx, t, "greeter-1's sidecar to be serving both slow requests", func() bool {
		return inboundRequests(ctx, t, m.greeters[0]) >= before+2
	})
	sc := m.sidecars["greeter-1"]
	phase.Store("sigint")
	if err := sc.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sc.done:
	case <-ctx.Done():
		t.Fatal("sidecar did not exit after SIGINT")
	}
	phase.Store("exited")
	for range 2 {
		if err := <-slow; err != nil {
			t.Errorf("request in flight during the drain failed: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if code := sc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("drained sidecar exited %d, want 0", code)
	}
	if len(errs) > 0 {
		t.Fatalf("%d requests failed during the drain: %v", len(errs), errs)
	}
}

// slowEcho posts a body written in pieces over about a second and checks
// that it comes back whole.
func slowEcho(c *http.Client, url string, started chan<- struct{}) error {
	pr, pw := io.Pipe()
	const piece, pieces = "0123456789abcdef", 20
	go func() {
		for i := range pieces {
			if _, err := pw.Write([]byte(piece)); err != nil {
				return
			}
			if i == 0 {
				started <- struct{}{}
			}
			time.Sleep(50 * time.Millisecond) // the client's pace, not a wait
		}
		pw.Close()
	}()
	resp, err := c.Post(url, "text/plain", pr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if want := strings.Repeat(piece, pieces); string(body) != want || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("got %s with %d bytes, want 200 with %d", resp.Status, len(body), len(want))
	}
	return nil
}

// TestSidecarTCP is acceptance 3: an opaque TCP echo and a
// server-speaks-first service both work through capture.
func TestSidecarTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 2)

	c, err := m.client.dial(ctx, "tcp", echoVIP+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "not http, just bytes\n"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	// Half-close: the echo sees EOF, finishes, and the proxy passes the
	// close back.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}

	// A destination that is no service (a pod address) passes through.
	d, err := m.client.dial(ctx, "tcp", m.greeters[0].ip+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(d, "direct\n")
	if line, err := bufio.NewReader(d).ReadString('\n'); err != nil || line != "direct\n" {
		t.Errorf("passthrough to a pod address: got %q, %v; want the echo", line, err)
	}
	// With --outbound-policy=registry-only it is refused, while services
	// still work.
	strict := m.lab.addPod("strict", 21)
	strict.run(t, "sidecar", "init")
	strict.startAs(t, proxyUID, "sidecar", "sidecar", "run", "--xds-addr", cpIP+":15010", "--pod-name", "strict",
		"--outbound-policy", "registry-only", "--log-format", "json")
	waitPodHTTP(ctx, t, strict, "http://127.0.0.1:15000/ready", 200)
	if _, err := greetHTTP(strict.httpClient(false)); err != nil {
		t.Errorf("registry-only: a registered service failed: %v", err)
	}
	if r, err := strict.dial(ctx, "tcp", m.greeters[0].ip+":7000"); err == nil {
		r.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(r, "direct\n")
		if b, err := io.ReadAll(r); err == nil && len(b) > 0 {
			t.Errorf("registry-only: an unregistered destination answered %q", b)
		}
		r.Close()
	}

	b, err := m.client.dial(ctx, "tcp", bannerVIP+":2525")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The client says nothing: the banner must still come, well within
	// the deadline, after protocol detection gives up.
	start := time.Now()
	b.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(b)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220 greeter-") {
		t.Fatalf("banner: got %q, %v; want a 220 greeting", line, err)
	}
	t.Logf("banner arrived after %v", time.Since(start))
	if _, err := io.WriteString(b, "EHLO lab\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "EHLO lab\r\n" {
		t.Fatalf("after the banner: got %q, %v; want the echo", line, err)
	}
}

// h2specSummary matches h2spec's closing line.
var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestSidecarH2spec is acceptance 6: h2spec against the inbound HTTP/2
// listener in front of the h2c greeter. The sidecar must fail no more
// cases than the app itself does when h2spec talks to it directly.
func TestSidecarH2spec(t *testing.T) {
	h2spec, err := filepath.Abs("../.tools/h2spec")
	if err == nil {
		_, err = os.Stat(h2spec)
	}
	if err != nil {
		t.Fatalf("h2spec not built (make tools): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 1)
	g := m.greeters[0]
	// runH2spec returns the summary and the set of failed cases.
	runH2spec := func(p *pod, host string) ([]string, map[string]bool) {
		t.Helper()
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", p.ns, h2spec, "-h", host, "-p", "8080", "--timeout", "5").CombinedOutput()
		sm := h2specSummary.FindStringSubmatch(string(out))
		if sm == nil {
			t.Fatalf("h2spec against %s printed no summary:\n%s", host, out)
		}
		t.Logf("h2spec via %s: %s", host, sm[0])
		failed := map[string]bool{}
		for _, l := range strings.Split(string(out), "\n") {
			if _, c, ok := strings.Cut(l, "× "); ok {
				failed[strings.TrimSpace(c)] = true
			}
		}
		return sm, failed
	}
	// A case is the sidecar's fault when it fails through the sidecar and
	// passes directly, round after round: on a loaded machine a case can
	// time out once on either side.
	var extra []string
	for round := range 3 {
		direct, directFailed := runH2spec(g, "127.0.0.1") // loopback: not captured
		before := inboundRequests(ctx, t, g)
		viaSidecar, sidecarFailed := runH2spec(m.cp, g.ip) // from another pod: captured into :15006
		if after := inboundRequests(ctx, t, g); after == before {
			t.Fatalf("h2spec via %s did not pass through the inbound sidecar (inbound requests stayed %d)", g.ip, after)
		}
		if direct[1] != viaSidecar[1] {
			t.Fatalf("h2spec ran %s cases directly and %s through the sidecar", direct[1], viaSidecar[1])
		}
		extra = extra[:0]
		for c := range sidecarFailed {
			if !directFailed[c] {
				extra = append(extra, c)
			}
		}
		if len(extra) == 0 {
			return
		}
		t.Logf("round %d: failed through the sidecar only: %q", round+1, extra)
	}
	t.Errorf("through the inbound sidecar h2spec fails cases the app passes directly, in every round: %q", extra)
}

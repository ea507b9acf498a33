package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/tender-mesh/tender/examples/greeter"
	"github.com/tender-mesh/tender/examples/greeter/pb"
)

const greeterTarget = "xds:///greeter.default.svc.cluster.local:8080"

// greeterInstance is one greeter gRPC server on loopback.
type greeterInstance struct {
	name string
	port string
}

// slowGreeter delays Greet, to tell policies apart.
type slowGreeter struct {
	pb.GreeterServer
	delay time.Duration
}

func (s *slowGreeter) Greet(ctx context.Context, req *pb.GreetRequest) (*pb.GreetReply, error) {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.GreeterServer.Greet(ctx, req)
}

func startGreeter(t *testing.T, name string, delay time.Duration) greeterInstance {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	srv := greeter.NewGRPCServer(greeter.MakeEndpoints(greeter.NewService(name)), name)
	if delay > 0 {
		srv = &slowGreeter{GreeterServer: srv, delay: delay}
	}
	pb.RegisterGreeterServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	return greeterInstance{name: name, port: port}
}

func startGreeters(t *testing.T, n int) ([]greeterInstance, []string) {
	t.Helper()
	var gs []greeterInstance
	var ports []string
	for i := range n {
		g := startGreeter(t, fmt.Sprintf("greeter-%d", i+1), 0)
		gs = append(gs, g)
		ports = append(ports, g.port)
	}
	return gs, ports
}

// dialXDS connects a proxyless grpc-go client to target through cp.
func dialXDS(t *testing.T, cp *controlPlane, node string) pb.GreeterClient {
	t.Helper()
	builder, err := xds.NewXDSResolverWithConfigForTesting(cp.bootstrap(node))
	if err != nil {
		t.Fatalf("xds resolver: %v", err)
	}
	conn, err := grpc.NewClient(greeterTarget, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(builder))
	if err != nil {
		t.Fatalf("dial %s: %v", greeterTarget, err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewGreeterClient(conn)
}

func greet(ctx context.Context, c pb.GreeterClient, md ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	r, err := c.Greet(ctx, &pb.GreetRequest{Name: "e2e"})
	if err != nil {
		return "", err
	}
	return r.GetInstance(), nil
}

// waitServing waits until RPCs succeed and every instance in want has
// answered at least once (the client has the whole config).
func waitServing(ctx context.Context, t *testing.T, c pb.GreeterClient, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	var lastErr error
	for {
		inst, err := greet(ctx, c)
		if err == nil {
			seen[inst] = true
			all := true
			for _, w := range want {
				all = all && seen[w]
			}
			if all {
				return
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("client never reached %v (saw %v, last error %v)", want, seen, lastErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestProxylessRoundRobin is acceptance 1: 300 RPCs over three instances,
// 100 ± 5 each.
func TestProxylessRoundRobin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, ports := startGreeters(t, 3)
	cp := startControlPlane(t, ctx, meshYAML("", ports...), "", "")
	c := dialXDS(t, cp, "rr-client")
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")

	counts := map[string]int{}
	for range 300 {
		inst, err := greet(ctx, c)
		if err != nil {
			t.Fatalf("RPC failed: %v", err)
		}
		counts[inst]++
	}
	t.Logf("300 RPCs: %v", counts)
	for _, name := range []string{"greeter-1", "greeter-2", "greeter-3"} {
		if n := counts[name]; n < 95 || n > 105 {
			t.Errorf("%s answered %d of 300, want 100 ± 5 (all: %v)", name, n, counts)
		}
	}
}

// rpcLog records every RPC of a background load.
type rpcLog struct {
	mu sync.Mutex // guards the fields below
	// last holds when each instance last answered.
	last map[string]time.Time
	// answers lists every answered call with when it was sent: a
	// balancer change shows at once in what is sent after it, while a
	// call already on its way may still be answered by the old choice.
	answers []answer
	errs    []error
	n       int
}

type answer struct {
	inst string
	sent time.Time
}

func (l *rpcLog) add(inst string, err error, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if err != nil {
		l.errs = append(l.errs, err)
		return
	}
	l.last[inst] = time.Now()
	l.answers = append(l.answers, answer{inst, sent})
}

// sentSince counts, per instance, the answered calls sent after t.
func (l *rpcLog) sentSince(t time.Time) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, a := range l.answers {
		if a.sent.After(t) {
			out[a.inst]++
		}
	}
	return out
}

// recent counts, per instance, the last k answers; nil until there are
// k. A balancer that still chose an instance would show in them: of 100
// answers in a row round robin over three gives each about 33.
func (l *rpcLog) recent(k int) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.answers) < k {
		return nil
	}
	out := map[string]int{}
	for _, a := range l.answers[len(l.answers)-k:] {
		out[a.inst]++
	}
	return out
}

func (l *rpcLog) snapshot() (map[string]time.Time, []error, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.last), append([]error(nil), l.errs...), l.n
}

// load sends RPCs back to back until stop is closed (bounded by ctx).
func load(ctx context.Context, c pb.GreeterClient, stop <-chan struct{}) (*rpcLog, <-chan struct{}) {
	return loadWith(ctx, stop, 1, func() (string, error) { return greet(ctx, c) })
}

// steadyLoad is load a test keeps up across its steps, checks for
// failed RPCs between them, and stops once (at the latest when the test
// ends).
type steadyLoad struct {
	*rpcLog
	stop chan struct{}
	done <-chan struct{}
	once sync.Once
}

// startLoad starts load on c until Stop or the end of the test.
func startLoad(ctx context.Context, t *testing.T, c pb.GreeterClient) *steadyLoad {
	t.Helper()
	return startLoadWith(ctx, t, 1, func() (string, error) { return greet(ctx, c) })
}

// startLoadWith is startLoad with workers goroutines running call.
func startLoadWith(ctx context.Context, t *testing.T, workers int, call func() (string, error)) *steadyLoad {
	t.Helper()
	sl := &steadyLoad{stop: make(chan struct{})}
	sl.rpcLog, sl.done = loadWith(ctx, sl.stop, workers, call)
	t.Cleanup(sl.Stop)
	return sl
}

// Stop ends the load and waits for its last RPC.
func (sl *steadyLoad) Stop() {
	sl.once.Do(func() {
		close(sl.stop)
		<-sl.done
	})
}

// noErrors fails the test if any RPC so far failed.
func (sl *steadyLoad) noErrors(t *testing.T, when string) {
	t.Helper()
	if _, errs, n := sl.snapshot(); len(errs) > 0 {
		t.Fatalf("%s: %d of %d RPCs failed; first: %v", when, len(errs), n, errs[0])
	}
}

// loadWith runs call back to back in workers goroutines until stop is
// closed (bounded by ctx), logging each answering instance; done closes
// when every worker has returned.
func loadWith(ctx context.Context, stop <-chan struct{}, workers int, call func() (string, error)) (*rpcLog, <-chan struct{}) {
	l := &rpcLog{last: map[string]time.Time{}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				sent := time.Now()
				inst, err := call()
				l.add(inst, err, sent)
			}
		})
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return l, done
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestProxylessEndpointRemoval is acceptance 2: an instance removed from
// mesh.yaml gets no RPC within 1 s and no RPC fails; added back, it gets
// traffic again.
func TestProxylessEndpointRemoval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, ports := startGreeters(t, 3)
	cp := startControlPlane(t, ctx, meshYAML("", ports...), "", "")
	c := dialXDS(t, cp, "removal-client")
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")

	stop := make(chan struct{})
	log, done := load(ctx, c, stop)
	defer func() { close(stop); <-done }()

	removedAt := time.Now()
	cp.setMesh(t, meshYAML("", ports[0], ports[1]))
	// Once greeter-3 is out of 100 answers in a row the change has
	// landed; then check when it last answered.
	var recent map[string]int
	waitUntil(ctx, t, "100 RPCs in a row without greeter-3", func() bool {
		recent = log.recent(100)
		return recent != nil && recent["greeter-3"] == 0
	})
	last, errs, n := log.snapshot()
	if len(errs) > 0 {
		t.Fatalf("%d of %d RPCs failed during the removal; first: %v", len(errs), n, errs[0])
	}
	lag := last["greeter-3"].Sub(removedAt)
	t.Logf("greeter-3 answered its last RPC %v after its removal from mesh.yaml (%d RPCs, none failed)", lag, n)
	if lag > time.Second {
		t.Errorf("greeter-3 still answered %v after its removal, want none after 1 s", lag)
	}
	if recent["greeter-1"] == 0 || recent["greeter-2"] == 0 {
		t.Errorf("the last 100 RPCs went to %v, want greeter-1 and greeter-2 serving", recent)
	}

	addedAt := time.Now()
	cp.setMesh(t, meshYAML("", ports...))
	waitUntil(ctx, t, "greeter-3 to serve again", func() bool {
		last, _, _ := log.snapshot()
		return last["greeter-3"].After(addedAt)
	})
	if _, errs, n := log.snapshot(); len(errs) > 0 {
		t.Fatalf("%d of %d RPCs failed; first: %v", len(errs), n, errs[0])
	}
}

// TestProxylessLeastRequest is acceptance 3 (LEAST_REQUEST): grpc-go
// accepts the policy and sends a slow instance far less than its round
// robin third, because it always has more requests outstanding.
func TestProxylessLeastRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	slow := startGreeter(t, "slow", 100*time.Millisecond)
	fast1 := startGreeter(t, "fast-1", 0)
	fast2 := startGreeter(t, "fast-2", 0)
	cp := startControlPlane(t, ctx, meshYAML("    lb: LEAST_REQUEST\n", slow.port, fast1.port, fast2.port), "", "")
	c := dialXDS(t, cp, "lr-client")
	waitServing(ctx, t, c, "slow", "fast-1", "fast-2")

	const workers, perWorker = 16, 40
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				inst, err := greet(ctx, c)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				counts[inst]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("RPC failed: %v", err)
	}
	share := float64(counts["slow"]) / float64(workers*perWorker)
	t.Logf("LEAST_REQUEST with one instance 100 ms slower: %v (slow share %.1f%%)", counts, 100*share)
	// Round robin would give it a third; least request with two choices
	// picks it only when both choices land on it (at most ~1/9).
	if share > 0.2 {
		t.Errorf("slow instance got %.0f%% of RPCs (%v), want under 20%% with LEAST_REQUEST", 100*share, counts)
	}
}

// TestProxylessRingHash is acceptance 3 (RING_HASH): one x-user value
// always lands on one instance, and different values spread.
func TestProxylessRingHash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, ports := startGreeters(t, 3)
	cp := startControlPlane(t, ctx, meshYAML("    lb: RING_HASH\n    hashHeader: x-user\n", ports...), "", "")
	c := dialXDS(t, cp, "rh-client")
	// Ring hash connects lazily: wait until the config is in place.
	waitUntil(ctx, t, "a first RPC", func() bool { _, err := greet(ctx, c, "x-user", "warmup"); return err == nil })

	used := map[string]bool{}
	for u := range 30 {
		user := "user-" + strconv.Itoa(u)
		first := ""
		for i := range 10 {
			inst, err := greet(ctx, c, "x-user", user)
			if err != nil {
				t.Fatalf("RPC for %s failed: %v", user, err)
			}
			if i == 0 {
				first = inst
			} else if inst != first {
				t.Fatalf("x-user %s went to %s, then to %s; want one instance", user, first, inst)
			}
		}
		used[first] = true
	}
	if len(used) < 2 {
		t.Errorf("30 users all hashed to %v; want them spread over the instances", used)
	}
}

// TestBrokenMeshKeepsServing is acceptance 5: a broken mesh.yaml keeps the
// old config serving, and the error names the line.
func TestBrokenMeshKeepsServing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, ports := startGreeters(t, 3)
	cp := startControlPlane(t, ctx, meshYAML("", ports...), "", "")
	c := dialXDS(t, cp, "broken-client")
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")
	before := string(waitHTTP(ctx, t, cp.url("/debug/config"), 200))

	broken := strings.Replace(meshYAML("", ports...), "port: "+ports[2], "port: 99999", 1)
	cp.setMesh(t, broken)
	waitUntil(ctx, t, "the error in /readyz", func() bool {
		return strings.Contains(string(waitHTTP(ctx, t, cp.url("/readyz"), 200)), "mesh.yaml:9")
	})
	if !strings.Contains(cp.output(), "mesh.yaml:9") {
		t.Errorf("control plane log does not name mesh.yaml:9:\n%s", cp.output())
	}
	if after := string(waitHTTP(ctx, t, cp.url("/debug/config"), 200)); after != before {
		t.Errorf("served config changed after a broken mesh.yaml")
	}
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")
}

// TestControlPlaneRestart is acceptance 6: with the control plane killed
// the client keeps working on its last config; restarted, it reconnects
// and follows updates again.
func TestControlPlaneRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	_, ports := startGreeters(t, 3)
	cp := startControlPlane(t, ctx, meshYAML("", ports...), "", "")
	c := dialXDS(t, cp, "restart-client")
	waitServing(ctx, t, c, "greeter-1", "greeter-2", "greeter-3")

	cp.kill()
	counts := map[string]int{}
	for range 150 {
		inst, err := greet(ctx, c)
		if err != nil {
			t.Fatalf("RPC failed with the control plane down: %v", err)
		}
		counts[inst]++
	}
	if len(counts) != 3 {
		t.Errorf("with the control plane down RPCs reached %v, want all three instances", counts)
	}

	cp.setMesh(t, meshYAML("", ports[0], ports[1]))
	cp2 := startControlPlaneOn(t, ctx, cp.mesh, cp.xdsAddr, cp.metricsAddr)
	waitUntil(ctx, t, "the client to reconnect", func() bool {
		return strings.Contains(string(waitHTTP(ctx, t, cp2.url("/debug/proxies"), 200)), "restart-client")
	})
	// The update (greeter-3 removed) reaches the client: after a quiet
	// second, greeter-3 gets nothing.
	var quietSince time.Time
	waitUntil(ctx, t, "greeter-3 to stop receiving RPCs", func() bool {
		inst, err := greet(ctx, c)
		if err != nil {
			t.Fatalf("RPC failed after the restart: %v", err)
		}
		if inst == "greeter-3" || quietSince.IsZero() {
			quietSince = time.Now()
		}
		return time.Since(quietSince) > time.Second
	})
}

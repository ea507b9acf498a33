package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/tender-mesh/tender/examples/greeter/pb"
)

// The soak (issue 22): idempotent HTTP and gRPC through two sidecars over
// mutual TLS for a while, with the mesh changing under it the whole time.
// `make test` runs it for a minute; `make soak` for SOAK_DURATION (10m),
// passed as TENDER_SOAK.
const (
	// soakRate is the load, in requests per second: half HTTP GET /greet,
	// half gRPC Greet.
	soakRate = 500
	// soakWorkers is how many requests of each protocol may be in flight.
	soakWorkers = 64
	// soakCallTimeout bounds each request the load sends.
	soakCallTimeout = 10 * time.Second
	// Every soakChurnEvery an endpoint is added to mesh.yaml or removed.
	soakChurnEvery = 5 * time.Second
	// Every soakKillEvery one pod is killed hard (its endpoint still
	// listed) and another after its endpoint was marked terminating; each
	// is restarted after soakDownFor.
	soakKillEvery = 30 * time.Second
	soakDownFor   = 2 * time.Second
	// Every soakRestartEvery the control plane is restarted; runs too
	// short for that restart it once, half way.
	soakRestartEvery = 2 * time.Minute
	// soakDriftLimit is the RSS growth, from the second sixth of the run
	// to the last (the mean of the samples in each), that fails a run of
	// at least soakDriftMinRun.
	soakDriftLimit  = 0.10
	soakDriftMinRun = 5 * time.Minute
	// soakSampleEvery is how often, on average, every watched process's
	// /metrics is read through the run (a run shorter than 10 minutes
	// reads it 120 times, at least a second apart on average). The
	// spacing is random, between half and one and a half times that: a
	// sidecar's RSS rises and falls with its 10 s --trim-interval (by a
	// fifth under this load), and samples at a fixed spacing would each
	// catch the same one or two points of that cycle.
	soakSampleEvery = 5 * time.Second
	// soakPrewarm is the load sent before the run proper, with nothing
	// disturbed, so that the quiesced baseline is read from sidecars
	// that have carried the load (pools, caches, lazily started work).
	soakPrewarm = 15 * time.Second
	// soakQuiesce is how long after the load stops the quiesced figures
	// are read: a sidecar closes an upstream connection idle for 60 s
	// (the pool's HTTP/1.1 ones at the next --trim-interval, every 10 s;
	// an HTTP/2 one on its own timer), and a greeter's sidecar closes its
	// downstream one when the client's sidecar does. Connections to the
	// app are closed by the soak itself.
	soakQuiesce = 80 * time.Second
)

// soakPolicy is the greeter's traffic policy, written as a user would for
// idempotent calls that must survive a pod dying: retry a request whose
// connection failed or broke, or that got a 5xx or UNAVAILABLE, on
// another endpoint; eject an endpoint after 3 such errors in a row. A
// pod that dies fails every request it has in flight at once (a third of
// them with three greeters), and so does a burst of refused connections:
// under this load the default retry budget (20% of the requests in
// flight, at least 10) refused some of those retries, and the requests
// failed. So the budget admits as many retries as there are requests in
// flight (Istio sets no retry limit at all).
const soakPolicy = `    retries: {attempts: 3, on: [5xx, reset, connect-failure, unavailable], budget: {percent: 100, minConcurrency: 20}}
    outlierDetection: {consecutive5xx: 3, baseEjectionTime: 5s, maxEjectionPercent: 50}
`

const (
	soakHTTP = iota
	soakGRPC
)

var soakKinds = [2]string{"HTTP", "gRPC"}

// soakLoad is the client pod's load: paced, spread over keep-alive HTTP
// connections and one gRPC connection, every answer checked.
type soakLoad struct {
	start  time.Time
	sent   [2]atomic.Int64
	failed [2]atomic.Int64
	// behind counts requests the pacer could not hand to a worker: all of
	// that protocol's were busy.
	behind atomic.Int64

	mu    sync.Mutex      // guards first and took
	first []string        // the first failures, with when
	took  []time.Duration // every request's latency
}

func (l *soakLoad) record(kind int, err error, took time.Duration) {
	l.sent[kind].Add(1)
	if err != nil {
		l.failed[kind].Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.took = append(l.took, took)
	if err != nil && len(l.first) < 20 {
		l.first = append(l.first, fmt.Sprintf("%6.1fs  %s: %v", time.Since(l.start).Seconds(), soakKinds[kind], err))
	}
}

func (l *soakLoad) total() (sent, failed int64) {
	return l.sent[0].Load() + l.sent[1].Load(), l.failed[0].Load() + l.failed[1].Load()
}

// startSoakLoad sends soakRate requests a second from the client pod to
// the greeter's VIP until stop is called; stop waits for the last answer
// and closes the load's connections to the client's sidecar.
func startSoakLoad(ctx context.Context, t *testing.T, s *soakMesh) (l *soakLoad, stop func()) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: s.client.dial, MaxIdleConnsPerHost: soakWorkers}, Timeout: soakCallTimeout}
	conn := s.client.grpcConn(t, greeterVIP+":9090")
	gc := pb.NewGreeterClient(conn)
	calls := [2]func() error{
		soakHTTP: func() error {
			resp, err := hc.Get("http://" + greeterVIP + "/greet?name=soak")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return fmt.Errorf("reading the body: %w", err)
			}
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "greeter-") {
				return fmt.Errorf("got %s %q (x-tender-error %q), want 200 from a greeter", resp.Status, body, resp.Header.Get("X-Tender-Error"))
			}
			return nil
		},
		soakGRPC: func() error {
			cctx, cancel := context.WithTimeout(ctx, soakCallTimeout)
			defer cancel()
			r, err := gc.Greet(cctx, &pb.GreetRequest{Name: "soak"})
			if err == nil && !strings.HasPrefix(r.GetInstance(), "greeter-") {
				err = fmt.Errorf("answered by %q, want a greeter", r.GetInstance())
			}
			return err
		},
	}
	l = &soakLoad{start: time.Now()}
	lctx, cancel := context.WithCancel(ctx)
	tokens := [2]chan struct{}{make(chan struct{}, soakWorkers), make(chan struct{}, soakWorkers)}
	var wg sync.WaitGroup
	// The pacer: open loop, so a slow answer does not lower the rate
	// while workers are free.
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var issued int64
		for {
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
			for due := int64(time.Since(l.start).Seconds() * soakRate); issued < due; issued++ {
				select {
				case tokens[issued%2] <- struct{}{}:
				default:
					l.behind.Add(1)
				}
			}
		}
	})
	for kind := range 2 {
		for range soakWorkers {
			wg.Go(func() {
				for {
					select {
					case <-lctx.Done():
						return
					case <-tokens[kind]:
					}
					t0 := time.Now()
					err := calls[kind]()
					l.record(kind, err, time.Since(t0))
				}
			})
		}
	}
	var once sync.Once
	return l, func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			hc.CloseIdleConnections()
			conn.Close()
		})
	}
}

// soakFigures is what a process reports about itself on /metrics.
type soakFigures struct {
	rss, heap, goroutines, fds float64
}

// soakWatched are the processes whose figures the soak follows: the
// sidecars that live through the whole run (the client's, the undisturbed
// greeter's and the churned greeter's) and the control plane (a new
// process after each restart: later figures are the latest one's).
// metrics is the port of their /metrics, admin that of their
// /debug/pprof/ (served to the pod's loopback).
var soakWatched = []struct {
	name, pod      string
	metrics, admin int
}{
	{"client sidecar", "client", 15090, 15000},
	{"greeter-1 sidecar", "greeter-1", 15090, 15000},
	{"greeter-4 sidecar", "greeter-4", 15090, 15000},
	{"control plane", "cp", 15014, 15014},
}

func (s *soakMesh) pod(name string) *pod {
	for _, p := range s.lab.pods {
		if p.name == name {
			return p
		}
	}
	return nil
}

// process is the watched process name runs as now.
func (s *soakMesh) process(name string) *process {
	switch name {
	case "client sidecar":
		return s.clientSidecar
	case "greeter-1 sidecar":
		return s.greeters[0].sidecar
	case "greeter-4 sidecar":
		return s.greeters[3].sidecar
	default:
		return s.cpProc
	}
}

// soakGet fetches url from inside p once. Unlike waitPodHTTP it neither
// retries nor fails the test, so the sampler's goroutine can call it
// while a process restarts. It asks for no compression: a gzipped
// /metrics costs the process a flate compressor (0.5–0.9 MiB of heap,
// kept in a pool for a GC cycle or two), which would be most of what the
// figures at rest compare.
func soakGet(ctx context.Context, p *pod, url string) ([]byte, error) {
	c := p.httpClient(false)
	defer c.CloseIdleConnections()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, err
}

// read reads every watched process's /metrics once; a process that does
// not answer (a control plane restarting) is left out.
func (s *soakMesh) read(ctx context.Context) map[string]soakFigures {
	out := map[string]soakFigures{}
	for _, w := range soakWatched {
		m, err := soakGet(ctx, s.pod(w.pod), fmt.Sprintf("http://127.0.0.1:%d/metrics", w.metrics))
		if err != nil {
			continue
		}
		out[w.name] = soakFigures{
			rss: metricSum(m, "process_resident_memory_bytes"), heap: metricSum(m, "go_memstats_heap_inuse_bytes"),
			goroutines: metricSum(m, "go_goroutines"), fds: metricSum(m, "process_open_fds"),
		}
	}
	return out
}

// soakSample is one reading of the watched processes, at a time from the
// start of the run.
type soakSample struct {
	at  time.Duration
	fig map[string]soakFigures
}

// sample reads the watched processes about every interval (see
// soakSampleEvery) from the start of the run until ctx ends; wait returns
// the samples taken by then.
func (s *soakMesh) sample(ctx context.Context, interval time.Duration) (wait func() []soakSample) {
	var samples []soakSample
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			at := time.Since(s.start)
			if fig := s.read(ctx); len(fig) > 0 && ctx.Err() == nil {
				samples = append(samples, soakSample{at, fig})
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(float64(interval) * (0.5 + rand.Float64()))):
			}
		}
	}()
	return func() []soakSample {
		<-done
		return samples
	}
}

// mean is the mean of each figure of name over samples (zero if none
// has it), and how many have it. Not the median: under load a sidecar's
// RSS flips between two levels some 3 MiB apart (every 10 s the trim
// hands back its executable's pages, and the code that runs faults them
// back in), and a window's median lands on either level by the luck of
// the samples' timing.
func mean(samples []soakSample, name string) (soakFigures, int) {
	var sum soakFigures
	n := 0
	for _, x := range samples {
		if f, ok := x.fig[name]; ok {
			sum = soakFigures{sum.rss + f.rss, sum.heap + f.heap, sum.goroutines + f.goroutines, sum.fds + f.fds}
			n++
		}
	}
	if n == 0 {
		return soakFigures{}, 0
	}
	k := float64(n)
	return soakFigures{sum.rss / k, sum.heap / k, sum.goroutines / k, sum.fds / k}, n
}

// peak is the largest of each figure of name over samples.
func peak(samples []soakSample, name string) soakFigures {
	var p soakFigures
	for _, x := range samples {
		f := x.fig[name]
		p = soakFigures{max(p.rss, f.rss), max(p.heap, f.heap), max(p.goroutines, f.goroutines), max(p.fds, f.fds)}
	}
	return p
}

// lowest is the smallest of each figure of name over samples, if any has
// it.
func lowest(samples []soakSample, name string) (soakFigures, bool) {
	var l soakFigures
	n := 0
	for _, x := range samples {
		if f, ok := x.fig[name]; ok {
			if n == 0 {
				l = f
			}
			l = soakFigures{min(l.rss, f.rss), min(l.heap, f.heap), min(l.goroutines, f.goroutines), min(l.fds, f.fds)}
			n++
		}
	}
	return l, n > 0
}

// between is the samples taken in [from, to).
func between(samples []soakSample, from, to time.Duration) []soakSample {
	var out []soakSample
	for _, x := range samples {
		if x.at >= from && x.at < to {
			out = append(out, x)
		}
	}
	return out
}

// soakQuiet is the watched processes at rest: their figures (the lowest
// of six readings two seconds apart: a sidecar collects and hands memory
// back every 10 s, --trim-interval, so its heap in use is then its live
// heap), their goroutines by stack (pprof's goroutine profile, debug=1)
// and their open files by kind.
type soakQuiet struct {
	fig    map[string]soakFigures
	stacks map[string]map[string]int
	files  map[string]map[string]int
}

// quiet waits until soakQuiesce after since (when the load stopped) and
// reads the watched processes at rest. With TENDER_SOAK_PROFILES set to
// a directory, their goroutine and heap profiles go there too, named
// after when (before or after the run) and the process: compare them with
// go tool pprof -base.
func (s *soakMesh) quiet(ctx context.Context, t *testing.T, since time.Time, when string) soakQuiet {
	t.Helper()
	select {
	case <-time.After(time.Until(since.Add(soakQuiesce))):
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	var samples []soakSample
	for i := range 6 {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		samples = append(samples, soakSample{fig: s.read(ctx)})
	}
	q := soakQuiet{fig: map[string]soakFigures{}, stacks: map[string]map[string]int{}, files: map[string]map[string]int{}}
	for _, w := range soakWatched {
		if f, ok := lowest(samples, w.name); ok {
			q.fig[w.name] = f
		}
		if prof, err := soakGet(ctx, s.pod(w.pod), fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", w.admin)); err == nil {
			q.stacks[w.name] = goroutineStacks(string(prof))
		} else {
			t.Logf("%s: goroutine profile: %v", w.name, err)
		}
		if dir := os.Getenv("TENDER_SOAK_PROFILES"); dir != "" {
			for _, prof := range []string{"goroutine?debug=1", "goroutine", "heap"} {
				b, err := soakGet(ctx, s.pod(w.pod), fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s", w.admin, prof))
				if err != nil {
					t.Logf("%s: %s profile: %v", w.name, prof, err)
					continue
				}
				name := strings.NewReplacer(" ", "-", "?debug=1", ".txt").Replace(fmt.Sprintf("%s-%s-%s", when, w.name, prof))
				if !strings.HasSuffix(name, ".txt") {
					name += ".pb.gz"
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Error(err)
				}
			}
		}
		if files, err := openFiles(s.process(w.name)); err == nil {
			q.files[w.name] = files
		} else {
			t.Logf("%s: open files: %v", w.name, err)
		}
	}
	return q
}

// goroutineStacks counts a debug=1 goroutine profile's goroutines by
// stack: the function and line of each frame, without addresses.
func goroutineStacks(prof string) map[string]int {
	out := map[string]int{}
	// The header ("goroutine profile: total N") opens the first block.
	for _, block := range strings.Split(prof, "\n\n") {
		n := 0
		var frames []string
		for _, l := range strings.Split(block, "\n") {
			if f := strings.Fields(l); len(f) >= 4 && f[0] == "#" && strings.HasPrefix(f[1], "0x") {
				fn, _, _ := strings.Cut(f[2], "+0x")
				frames = append(frames, fn+" "+f[3])
			} else if n == 0 {
				fmt.Sscanf(l, "%d @", &n) //nolint:errcheck // not that line
			}
		}
		if n > 0 {
			if len(frames) == 0 {
				frames = []string{"(the runtime's own frames only)"}
			}
			out[strings.Join(frames, "\n")] += n
		}
	}
	return out
}

// stackGrowth lists the stacks with more goroutines in end than in base,
// most grown first, their top frames only.
func stackGrowth(base, end map[string]int) string {
	type grown struct {
		stack    string
		from, to int
	}
	var gs []grown
	for st, n := range end {
		if n > base[st] {
			gs = append(gs, grown{st, base[st], n})
		}
	}
	slices.SortFunc(gs, func(a, b grown) int { return (b.to - b.from) - (a.to - a.from) })
	if len(gs) == 0 {
		return "  none\n"
	}
	var b strings.Builder
	for _, g := range gs[:min(len(gs), 8)] {
		frames := strings.Split(g.stack, "\n")
		fmt.Fprintf(&b, "  %d → %d goroutines:\n    %s\n", g.from, g.to, strings.Join(frames[:min(len(frames), 10)], "\n    "))
	}
	return b.String()
}

// openFiles counts p's open files by kind; sockets by TCP state and by
// the listener they came from or the address they go to (as root, from
// /proc; /proc/PID/net is the process's network namespace).
func openFiles(p *process) (map[string]int, error) {
	if p == nil || p.cmd.Process == nil {
		return nil, errors.New("no process")
	}
	// ip netns exec and setpriv exec the binary: the PID is its own.
	dir := fmt.Sprintf("/proc/%d", p.cmd.Process.Pid)
	sockets := map[string]string{} // inode → state and address
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) < 10 {
				continue
			}
			sockets[fs[9]] = tcpSocket(fs[1], fs[2], fs[3])
		}
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kind := target
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			kind = "socket (not TCP)"
			if sk, ok := sockets[strings.TrimSuffix(inode, "]")]; ok {
				kind = sk
			}
		} else if i := strings.Index(target, ":["); i > 0 {
			kind = target[:i] // pipe:[…], anon_inode:[eventpoll]
			if strings.HasPrefix(target, "anon_inode:") {
				kind = target
			}
		}
		out[kind]++
	}
	return out, nil
}

// soakPorts are the ports the lab's processes listen on, by name.
var soakPorts = map[int]string{15000: "admin", 15001: "outbound", 15006: "inbound", 15090: "metrics",
	15010: "xds", 15012: "xds-tls", 15014: "cp-metrics", 8080: "app http", 9090: "app grpc"}

// tcpSocket describes a /proc/net/tcp entry: its state, and the local
// port it was accepted on or the address it goes to.
func tcpSocket(local, remote, state string) string {
	states := map[string]string{"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
		"06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
	port := func(a string) int {
		_, p, _ := strings.Cut(a, ":")
		n, _ := strconv.ParseUint(p, 16, 16)
		return int(n)
	}
	st := states[state]
	if st == "LISTEN" {
		return fmt.Sprintf("tcp LISTEN :%d", port(local))
	}
	if name, ok := soakPorts[port(local)]; ok && port(local) != port(remote) {
		return fmt.Sprintf("tcp %s accepted on :%d (%s)", st, port(local), name)
	}
	return fmt.Sprintf("tcp %s to :%d (%s)", st, port(remote), soakPorts[port(remote)])
}

// fileGrowth lists the kinds of open files more numerous in end than in
// base.
func fileGrowth(base, end map[string]int) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(end)) {
		if end[k] > base[k] {
			out = append(out, fmt.Sprintf("  %s: %d → %d", k, base[k], end[k]))
		}
	}
	return strings.Join(out, "\n")
}

// soakBinaries builds the sidecar, the control plane and the greeter as
// make build does (the sidecar static, stripped, with SIDECAR_TAGS) into
// a directory the sidecars' user can read: without the race detector,
// whose shadow memory is most of a race binary's RSS and never shrinks,
// so the soak's RSS is the shipped binaries'. The e2e tests' binaries
// (binDir) carry the race detector.
func soakBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"../cmd/controlplane", "../examples/greeter/cmd/greeter"}},
		{[]string{"CGO_ENABLED=0"}, []string{"-trimpath", "-tags", "disable_pgv,grpcnotrace", "-ldflags=-s -w", "../cmd/sidecar"}},
	} {
		cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, b.args...)...)
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", strings.Join(b.args, " "), err, out)
		}
	}
	return dir
}

// soakDuration is TENDER_SOAK, or a minute.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("TENDER_SOAK")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 30*time.Second {
		t.Fatalf("TENDER_SOAK=%q: want a duration of at least 30s (e.g. 10m)", v)
	}
	return d
}

// soakSampling is the average spacing of the samples in a run of d.
func soakSampling(d time.Duration) time.Duration {
	return min(max(d/120, time.Second), soakSampleEvery)
}

// soakStep is one disruption of the timeline, at a time from the start of
// the load.
type soakStep struct {
	at   time.Duration
	what string
	do   func()
}

// TestSoak is issue 22: about 500 requests a second of idempotent HTTP and
// gRPC from a client pod through its sidecar and the greeters' sidecars,
// over mutual TLS, for TENDER_SOAK (a minute by default), while an
// endpoint is added or removed every 5 s, every 30 s one greeter pod is
// killed hard and another after its endpoint was marked terminating (each
// comes back), and the control plane restarts every 2 minutes (once, half
// way, in shorter runs). No request may fail.
//
// The sidecars and the control plane run as shipped, without the race
// detector. Their RSS, Go heap, goroutines and open files are sampled
// through the run; RSS must not drift from the second sixth of the run
// to the last (the mean of the samples in each). And read at rest, once
// the load has stopped and idle connections have closed, after a
// pre-warm load and after the run, their goroutines and open files must
// come back to where they were: more is a leak. Both are checked in runs
// of soakDriftMinRun or more, logged in shorter ones.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs for a minute at least")
	}
	requireLab(t)
	d := soakDuration(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+soakPrewarm+2*soakQuiesce+5*time.Minute)
	defer cancel()
	setup := time.Now()
	s := newSoakMesh(t, ctx)
	t.Logf("mesh ready after %v (binaries built, without the race detector)", time.Since(setup).Round(time.Millisecond))

	// The quiesced baseline: the sidecars at rest after carrying the
	// load, nothing disturbed yet. Read only in runs long enough to be
	// checked (each reading at rest waits soakQuiesce): make test's
	// minute runs the load and its disturbances, not the leak check.
	atRest := d >= soakDriftMinRun
	base, end := soakQuiet{}, soakQuiet{}
	if atRest {
		pre, stopPre := startSoakLoad(ctx, t, s)
		time.Sleep(soakPrewarm)
		stopPre()
		if sent, failed := pre.total(); failed > 0 {
			t.Errorf("pre-warm: %d of %d requests failed with nothing disturbed:\n%s", failed, sent, strings.Join(pre.first, "\n"))
		}
		base = s.quiet(ctx, t, time.Now(), "before")
	}

	var kills, terminations, restarts int
	var steps []soakStep
	victims := []*soakGreeter{s.greeters[1], s.greeters[2]}
	last := d - 15*time.Second // time for the last step to finish before the end
	for k, at := 0, 15*time.Second; at <= last; k, at = k+1, at+soakKillEvery {
		hard, gentle := victims[k%2], victims[(k+1)%2]
		steps = append(steps, soakStep{at, "kill " + hard.pod.name, func() { s.killHard(ctx, t, hard); kills++ }})
		if at+10*time.Second <= last {
			steps = append(steps, soakStep{at + 10*time.Second, "terminate " + gentle.pod.name, func() { s.killTerminating(ctx, t, gentle); terminations++ }})
		}
	}
	restartAt := []time.Duration{}
	for at := soakRestartEvery; at <= last; at += soakRestartEvery {
		restartAt = append(restartAt, at)
	}
	if len(restartAt) == 0 {
		restartAt = append(restartAt, d/2)
	}
	for _, at := range restartAt {
		steps = append(steps, soakStep{at, "restart the control plane", func() { s.restartControlPlane(ctx, t); restarts++ }})
	}
	churnCtx, stopChurn := context.WithCancel(ctx)
	var churned atomic.Int64
	churnErrs := make(chan error, 1)
	churnDone := make(chan struct{})
	// The churn ends 5 s before the load, so that the last mesh.yaml
	// can be compared with the client's endpoints.
	steps = append(steps, soakStep{d - 5*time.Second, "stop the churn", func() { stopChurn(); <-churnDone }})
	slices.SortStableFunc(steps, func(a, b soakStep) int { return int(a.at - b.at) })

	s.start = time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	samples := s.sample(sampleCtx, soakSampling(d))
	load, stopLoad := startSoakLoad(ctx, t, s)
	defer stopLoad()
	defer func() {
		stopChurn()
		<-churnDone
	}()
	go func() {
		defer close(churnDone)
		s.churn(churnCtx, &churned, churnErrs)
	}()

	for _, st := range steps {
		select {
		case <-time.After(time.Until(s.start.Add(st.at))):
		case <-ctx.Done():
			t.Fatalf("timed out before %q at %v; events:\n%s", st.what, st.at, s.eventLog())
		}
		if late := time.Since(s.start) - st.at; late > 5*time.Second {
			s.event("%s, %v late", st.what, late.Round(time.Millisecond))
		}
		st.do()
	}
	select {
	case <-time.After(time.Until(s.start.Add(d))):
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	stopLoad()
	stopped := time.Now()
	elapsed := stopped.Sub(s.start)
	// Sampling goes on while connections close, and stops before the
	// readings at rest, which it would add a connection to.
	time.AfterFunc(soakQuiesce-5*time.Second, stopSampling)
	select {
	case err := <-churnErrs:
		t.Errorf("churn: %v", err)
	default:
	}

	sent, failed := load.total()
	clientMetrics := waitPodHTTP(ctx, t, s.client, "http://127.0.0.1:15090/metrics", 200)
	retries := metricSum(clientMetrics, "tender_upstream_retries_total")
	ejections := metricSum(clientMetrics, "tender_outlier_ejections_total")
	overflows := metricSum(clientMetrics, "tender_upstream_overflows_total")
	restartsWord := "restarts"
	if restarts == 1 {
		restartsWord = "restart"
	}
	summary := fmt.Sprintf("%v: %d requests (%d HTTP GET, %d gRPC Greet; %.0f/s, %d not sent: every worker busy), %d failed; "+
		"%d pods killed with their endpoint listed, %d after it drained, %d endpoint changes, %d control-plane %s; "+
		"the client sidecar retried %.0f times (%.0f retries or requests refused by the budget or breaker) and ejected an endpoint %.0f times",
		d, sent, load.sent[soakHTTP].Load(), load.sent[soakGRPC].Load(), float64(sent)/elapsed.Seconds(), load.behind.Load(), failed,
		kills, terminations, churned.Load(), restarts, restartsWord, retries, overflows, ejections)
	load.mu.Lock()
	slices.Sort(load.took)
	n := len(load.took)
	summary += fmt.Sprintf("; latency p50 %v, p99 %v, max %v", load.took[n/2].Round(100*time.Microsecond),
		load.took[n*99/100].Round(time.Millisecond), load.took[n-1].Round(time.Millisecond))
	load.mu.Unlock()
	// The client's sidecar dials the greeters over mutual TLS only; a
	// greeter sidecar that took one of those connections for plaintext
	// (a hello later than the sniff window, before the fix) refused it
	// (STRICT), and only the retry saved the request.
	if n := logged(s.sidecars, "plaintext connection refused: the destination takes mutual TLS only (STRICT)", "remote", s.client.ip+":"); n > 0 {
		summary += fmt.Sprintf("; %d of the client sidecar's mTLS connections refused as plaintext by a greeter's sidecar", n)
		t.Errorf("%d of the client sidecar's mutual-TLS connections were taken for plaintext", n)
	}
	t.Log("soak: " + summary)
	if failed > 0 {
		load.mu.Lock()
		first := strings.Join(load.first, "\n")
		load.mu.Unlock()
		t.Errorf("%d of %d idempotent requests failed (%d HTTP, %d gRPC), want none; the first:\n%s\nevents:\n%s",
			failed, sent, load.failed[soakHTTP].Load(), load.failed[soakGRPC].Load(), first, s.eventLog())
	} else {
		t.Logf("events:\n%s", s.eventLog())
	}
	// A pacer far behind means the machine could not carry the load: the
	// run did not soak what it says.
	if want := int64(elapsed.Seconds() * soakRate); sent < want*8/10 {
		t.Errorf("sent %d requests in %v, want about %d (%d/s)", sent, elapsed.Round(time.Second), want, soakRate)
	}

	// After the load nothing is left counted in flight, and the client's
	// sidecar follows the last mesh.yaml: the restarted control plane
	// still pushes.
	var inFlight string
	waitUntil(ctx, t, "the client sidecar to settle", func() bool {
		var cls []struct {
			Name           string
			ActiveRequests int64 `json:"active_requests"`
			ActiveRetries  int64 `json:"active_retries"`
			Endpoints      []struct{ Active int64 }
		}
		if err := json.Unmarshal(waitPodHTTP(ctx, t, s.client, "http://127.0.0.1:15000/clusters", 200), &cls); err != nil {
			t.Fatal(err)
		}
		inFlight = ""
		for _, cl := range cls {
			for _, e := range cl.Endpoints {
				cl.ActiveRequests += e.Active
			}
			if cl.ActiveRequests != 0 || cl.ActiveRetries != 0 {
				inFlight += fmt.Sprintf(" %s: %d requests, %d retries", cl.Name, cl.ActiveRequests, cl.ActiveRetries)
			}
		}
		return inFlight == "" || time.Since(stopped) > 5*time.Second
	})
	if inFlight != "" {
		t.Errorf("after the load the client sidecar still counts in flight:%s", inFlight)
	}
	waitUntil(ctx, t, "the client sidecar to follow the last mesh.yaml", func() bool {
		eps := s.clientEndpoints(ctx, t)
		for _, g := range s.greeters {
			if eps[g.pod.ip+":8080"] != s.listed(g) || eps[g.pod.ip+":9090"] != s.listed(g) {
				return false
			}
		}
		return true
	})

	ss := samples()
	if atRest {
		end = s.quiet(ctx, t, stopped, "after")
	}
	s.report(t, d, summary, ss, base, end)
}

// soakLeakMargin is how many more goroutines, and open files, a process
// at rest may have after the run than before it: a sidecar's xDS client
// and a control plane just restarted come and go by a few.
func soakLeakMargin(before float64) float64 { return max(3, before/20) }

// report logs the samples, the figures under load and at rest, and
// checks them in long runs: RSS must not drift from the second sixth of
// the run to the last, and goroutines and open files at rest must come
// back to their baseline. A minute is too short to tell warm-up from
// drift (pools, caches and the GC's pacing still move), so a run shorter
// than soakDriftMinRun only logs them. With TENDER_SOAK_REPORT set (make
// soak) the figures go to that file too, as Markdown for
// bench/RESULTS.md.
func (s *soakMesh) report(t *testing.T, d time.Duration, summary string, samples []soakSample, base, end soakQuiet) {
	t.Helper()
	mib := func(v float64) string { return fmt.Sprintf("%.1f", v/(1<<20)) }
	check := d >= soakDriftMinRun
	var series strings.Builder
	for _, w := range soakWatched {
		fmt.Fprintf(&series, "%s (s: RSS MiB, heap MiB, goroutines, fds):", w.name)
		for i, x := range samples {
			if i%6 == 0 {
				series.WriteString("\n ")
			}
			if f, ok := x.fig[w.name]; ok {
				fmt.Fprintf(&series, "  %4.0f: %s %s %.0f %.0f", x.at.Seconds(), mib(f.rss), mib(f.heap), f.goroutines, f.fds)
			}
		}
		series.WriteString("\n")
	}
	t.Logf("samples (the load stopped at %v):\n%s", d, series.String())

	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", summary)
	first, lastSixth, loaded := between(samples, d/6, 2*d/6), between(samples, 5*d/6, d), between(samples, 0, d)
	fmt.Fprintf(&b, "Under load: the mean of the samples (every %v on average) in the second sixth of the run → in the last sixth, and the highest sample:\n\n",
		soakSampling(d))
	b.WriteString("| process | RSS MiB | drift | Go heap in use MiB | goroutines | open fds |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, w := range soakWatched {
		a, na := mean(first, w.name)
		z, nz := mean(lastSixth, w.name)
		p := peak(loaded, w.name)
		if na == 0 || nz == 0 {
			t.Errorf("%s: %d samples in the second sixth of the run, %d in the last, want some", w.name, na, nz)
			continue
		}
		drift := (z.rss - a.rss) / a.rss
		fmt.Fprintf(&b, "| %s | %s → %s (max %s) | %+.1f%% | %s → %s (max %s) | %.0f → %.0f (max %.0f) | %.0f → %.0f (max %.0f) |\n",
			w.name, mib(a.rss), mib(z.rss), mib(p.rss), 100*drift, mib(a.heap), mib(z.heap), mib(p.heap),
			a.goroutines, z.goroutines, p.goroutines, a.fds, z.fds, p.fds)
		if check && drift >= soakDriftLimit {
			t.Errorf("%s: RSS %s MiB in the second sixth of the run, %s MiB in the last: %+.1f%%, want under %+.0f%%",
				w.name, mib(a.rss), mib(z.rss), 100*drift, 100*soakDriftLimit)
		}
	}
	if check {
		fmt.Fprintf(&b, "\nAt rest, %v after the load stopped (the lowest reading over 10 s): after a %v pre-warm → after the run:\n\n", soakQuiesce, soakPrewarm)
		b.WriteString("| process | RSS MiB | Go heap in use MiB | goroutines | open fds |\n| --- | --- | --- | --- | --- |\n")
	}
	for _, w := range soakWatched {
		if !check {
			break // not read in runs this short
		}
		a, aok := base.fig[w.name]
		z, zok := end.fig[w.name]
		if !aok || !zok {
			t.Errorf("%s: no figures at rest (before the run: %v, after: %v)", w.name, aok, zok)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s → %s | %s → %s | %.0f → %.0f | %.0f → %.0f |\n",
			w.name, mib(a.rss), mib(z.rss), mib(a.heap), mib(z.heap), a.goroutines, z.goroutines, a.fds, z.fds)
		report := t.Logf
		if check {
			report = t.Errorf
		}
		if z.goroutines > a.goroutines+soakLeakMargin(a.goroutines) {
			report("%s: %.0f goroutines at rest after the run, %.0f before it: more than %.0f more; the stacks that grew:\n%s",
				w.name, z.goroutines, a.goroutines, soakLeakMargin(a.goroutines), stackGrowth(base.stacks[w.name], end.stacks[w.name]))
		}
		if z.fds > a.fds+soakLeakMargin(a.fds) {
			report("%s: %.0f open files at rest after the run, %.0f before it: more than %.0f more; the kinds that grew:\n%s",
				w.name, z.fds, a.fds, soakLeakMargin(a.fds), fileGrowth(base.files[w.name], end.files[w.name]))
		}
	}
	if !check {
		fmt.Fprintf(&b, "\n(logged, not checked: the run is shorter than %v)\n", soakDriftMinRun)
	}
	for _, w := range soakWatched {
		t.Logf("%s at rest: goroutines by stack that grew:\n%s\nopen files before → after:\n%s", w.name,
			stackGrowth(base.stacks[w.name], end.stacks[w.name]), fileDiff(base.files[w.name], end.files[w.name]))
	}
	t.Logf("soak figures:\n%s", strings.TrimLeft(strings.TrimPrefix(b.String(), summary), "\n"))
	if path := os.Getenv("TENDER_SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// fileDiff lists every kind of open file with its count in base and end.
func fileDiff(base, end map[string]int) string {
	kinds := map[string]bool{}
	for k := range base {
		kinds[k] = true
	}
	for k := range end {
		kinds[k] = true
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		out = append(out, fmt.Sprintf("  %s: %d → %d", k, base[k], end[k]))
	}
	return strings.Join(out, "\n")
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
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
	// soakDriftLimit is the RSS growth, from the end of the warm-up to the
	// end of the run, that fails a run of at least soakDriftMinRun.
	soakDriftLimit  = 0.10
	soakDriftMinRun = 5 * time.Minute
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
// the greeter's VIP until stop is called; stop waits for the last answer.
func startSoakLoad(ctx context.Context, t *testing.T, s *soakMesh) (l *soakLoad, stop func()) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: s.client.dial, MaxIdleConnsPerHost: soakWorkers}, Timeout: soakCallTimeout}
	gc := pb.NewGreeterClient(s.client.grpcConn(t, greeterVIP+":9090"))
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
	return l, func() {
		cancel()
		wg.Wait()
		hc.CloseIdleConnections()
	}
}

// soakFigures is what a process reports about itself on /metrics.
type soakFigures struct {
	rss, heap, goroutines, fds float64
}

// soakWatched are the processes whose figures the soak compares: the
// sidecars that live through the whole run (the client's, the undisturbed
// greeter's and the churned greeter's) and the control plane (a new
// process after each restart: its end figures are the last one's).
var soakWatched = []struct {
	name, pod string
	port      int
}{
	{"client sidecar", "client", 15090},
	{"greeter-1 sidecar", "greeter-1", 15090},
	{"greeter-4 sidecar", "greeter-4", 15090},
	{"control plane", "cp", 15014},
}

func (s *soakMesh) pod(name string) *pod {
	for _, p := range s.lab.pods {
		if p.name == name {
			return p
		}
	}
	return nil
}

// figures reads every watched process's /metrics n times, a second apart,
// and keeps the median of each figure: the sidecar hands memory back
// every 10 s (--trim-interval), so one reading can catch either side of
// that.
func (s *soakMesh) figures(ctx context.Context, t *testing.T, n int) map[string]soakFigures {
	t.Helper()
	samples := map[string][]soakFigures{}
	for i := range n {
		if i > 0 {
			select {
			case <-time.After(time.Second): // the spacing of the samples
			case <-ctx.Done():
				t.Fatal("timed out")
			}
		}
		for _, w := range soakWatched {
			m := waitPodHTTP(ctx, t, s.pod(w.pod), fmt.Sprintf("http://127.0.0.1:%d/metrics", w.port), 200)
			samples[w.name] = append(samples[w.name], soakFigures{
				rss: metricSum(m, "process_resident_memory_bytes"), heap: metricSum(m, "go_memstats_heap_inuse_bytes"),
				goroutines: metricSum(m, "go_goroutines"), fds: metricSum(m, "process_open_fds"),
			})
		}
	}
	out := map[string]soakFigures{}
	for name, ss := range samples {
		median := func(f func(soakFigures) float64) float64 {
			v := make([]float64, len(ss))
			for i, x := range ss {
				v[i] = f(x)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		out[name] = soakFigures{
			rss:        median(func(f soakFigures) float64 { return f.rss }),
			heap:       median(func(f soakFigures) float64 { return f.heap }),
			goroutines: median(func(f soakFigures) float64 { return f.goroutines }),
			fds:        median(func(f soakFigures) float64 { return f.fds }),
		}
	}
	return out
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
// way, in shorter runs). No request may fail. The sidecars' and the
// control plane's RSS, goroutines and open files are logged after a
// warm-up and at the end.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs for a minute at least")
	}
	requireLab(t)
	d := soakDuration(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()
	setup := time.Now()
	s := newSoakMesh(t, ctx)
	t.Logf("mesh ready after %v", time.Since(setup).Round(time.Millisecond))

	// The warm-up: connections, pools, certificates and the GC settle in
	// its first part of the run; figures are compared from its end.
	warmUp := min(max(d/6, 10*time.Second), 2*time.Minute)
	var start, end map[string]soakFigures
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
	steps = append(steps,
		soakStep{warmUp, "figures after the warm-up", func() { start = s.figures(ctx, t, 5) }},
		// Five samples a second apart: they end with the run.
		soakStep{d - 5*time.Second, "figures at the end", func() { end = s.figures(ctx, t, 5) }})
	slices.SortStableFunc(steps, func(a, b soakStep) int { return int(a.at - b.at) })

	s.start = time.Now()
	load, stopLoad := startSoakLoad(ctx, t, s)
	defer stopLoad()
	churnCtx, stopChurn := context.WithCancel(ctx)
	var churned atomic.Int64
	churnErrs := make(chan error, 1)
	churnDone := make(chan struct{})
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
		if st.at == d-5*time.Second {
			// The churn ends with the end figures, so that the last
			// mesh.yaml can be compared with the client's endpoints.
			stopChurn()
			<-churnDone
		}
		st.do()
	}
	select {
	case <-time.After(time.Until(s.start.Add(d))):
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	stopLoad()
	elapsed := time.Since(s.start)
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
		return inFlight == "" || time.Since(s.start) > d+5*time.Second
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

	s.report(t, d, summary, start, end)
}

// report logs the figures at the end of the warm-up and of the run, and
// checks the drift of RSS in long runs. A minute is too short to tell
// warm-up from drift (pools, caches and the GC's pacing still move), so a
// run shorter than soakDriftMinRun only logs it. With TENDER_SOAK_REPORT
// set (make soak) the figures go to that file too, as Markdown for
// bench/RESULTS.md.
func (s *soakMesh) report(t *testing.T, d time.Duration, summary string, start, end map[string]soakFigures) {
	t.Helper()
	mib := func(v float64) string { return fmt.Sprintf("%.1f", v/(1<<20)) }
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", summary)
	b.WriteString("| process | RSS MiB, after warm-up → end | drift | Go heap in use MiB | goroutines | open fds |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, w := range soakWatched {
		a, z := start[w.name], end[w.name]
		drift := (z.rss - a.rss) / a.rss
		fmt.Fprintf(&b, "| %s | %s → %s | %+.1f%% | %s → %s | %.0f → %.0f | %.0f → %.0f |\n",
			w.name, mib(a.rss), mib(z.rss), 100*drift, mib(a.heap), mib(z.heap), a.goroutines, z.goroutines, a.fds, z.fds)
		if d >= soakDriftMinRun && drift >= soakDriftLimit {
			t.Errorf("%s: RSS %s MiB after the warm-up, %s MiB at the end: %+.1f%%, want under %+.0f%%",
				w.name, mib(a.rss), mib(z.rss), 100*drift, 100*soakDriftLimit)
		}
	}
	if d < soakDriftMinRun {
		fmt.Fprintf(&b, "\n(drift logged, not checked: the run is shorter than %v)\n", soakDriftMinRun)
	}
	t.Logf("soak figures:\n%s", strings.TrimLeft(strings.TrimPrefix(b.String(), summary), "\n"))
	if path := os.Getenv("TENDER_SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

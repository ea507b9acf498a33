package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// setPolicy rewrites the mesh with policy (mesh.yaml lines for the greeter
// service) and waits until the client's sidecar has a config holding every
// marker (compact JSON fragments of its clusters or routes).
func (m *mesh) setPolicy(ctx context.Context, t *testing.T, policy string, markers ...string) {
	t.Helper()
	writeFile(t, m.meshFile, meshConfigWith(m.greeters, policy))
	m.waitConfig(ctx, t, markers...)
}

// waitConfig waits until the client's sidecar has a config holding every
// marker (compact JSON fragments of its clusters or routes).
func (m *mesh) waitConfig(ctx context.Context, t *testing.T, markers ...string) {
	t.Helper()
	waitUntil(ctx, t, "the client sidecar to apply "+strings.Join(markers, " "), func() bool {
		var dump any
		if err := json.Unmarshal(waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/config_dump", 200), &dump); err != nil {
			t.Fatal(err)
		}
		compact, _ := json.Marshal(dump) // protojson's spacing varies; encoding/json's does not
		for _, mk := range markers {
			if !bytes.Contains(compact, []byte(mk)) {
				return false
			}
		}
		return true
	})
}

// setFault makes greeter g misbehave (query: "status=503", "delay=10s",
// "" for none), through its /fault endpoint on the pod's loopback.
func setFault(ctx context.Context, t *testing.T, g *pod, query string) {
	t.Helper()
	c := g.httpClient(false)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://127.0.0.1:8080/fault?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: PUT /fault?%s: %v", g.name, query, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: PUT /fault?%s: %s", g.name, query, resp.Status)
	}
}

// greeterAttempts is how many requests the greeters' inbound sidecars
// received, per greeter.
func (m *mesh) greeterAttempts(ctx context.Context, t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, g := range m.greeters {
		out[g.name] = inboundRequests(ctx, t, g)
	}
	return out
}

func sum(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// clientMetric sums a metric of the client's sidecar.
func (m *mesh) clientMetric(ctx context.Context, t *testing.T, name string) float64 {
	t.Helper()
	return metricSum(sidecarMetrics(ctx, t, m.client), name)
}

// hammer sends n GET /greet through the client's sidecar from workers
// goroutines and returns the first failures.
func hammer(c *http.Client, n, workers int) (failures []error) {
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				_, err := greetHTTP(c)
				mu.Lock()
				if err != nil && len(failures) < 10 {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failures
}

// TestResilience covers the resilience acceptance in one mesh of three
// greeters, changing the greeter's policy in mesh.yaml between the steps.
func TestResilience(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := newMeshWith(t, ctx, 3, "--access-log", "json")
	c := m.client.httpClient(false)
	defer c.CloseIdleConnections()
	bad, slow := m.greeters[2], m.greeters[1]

	// 1. One pod answers 503: retries hide it, outlier detection ejects it
	// within 5 consecutive errors, and lets it back once healthy.
	t.Run("503 pod: retries and ejection", func(t *testing.T) {
		m.setPolicy(ctx, t, `
    retries: {attempts: 2, on: [5xx, connect-failure, reset]}
    outlierDetection: {consecutive5xx: 5, baseEjectionTime: 3s, maxEjectionPercent: 50}`,
			`"numRetries":2`, `"baseEjectionTime":"3s"`)
		setFault(ctx, t, bad, "status=503")
		const workers = 4
		before := m.greeterAttempts(ctx, t)
		ejectionsBefore := m.clientMetric(ctx, t, "tender_outlier_ejections_total")
		if failures := hammer(c, 1000, workers); len(failures) > 0 {
			t.Fatalf("%d+ of 1000 requests failed with one 503 pod and retries on; first: %v", len(failures), failures[0])
		}
		checkSettled(ctx, t, m)
		after := m.greeterAttempts(ctx, t)
		ejections := m.clientMetric(ctx, t, "tender_outlier_ejections_total") - ejectionsBefore
		badTries := after[bad.name] - before[bad.name]
		// Each ejection comes with the 5th consecutive error; a returning
		// pod gets 5 more before the next one. Requests the other workers
		// sent it before that 5th answer came back are already on their
		// way (as in Envoy): at most workers-1 more per ejection.
		if ejections < 1 || badTries < 5 || float64(badTries) > (5+workers-1)*ejections {
			t.Errorf("the 503 pod got %d requests and was ejected %v times; want at most 5 (+%d in flight) per ejection",
				badTries, ejections, workers-1)
		}
		t.Logf("1000 requests: 503 pod got %d tries, %v ejections, retries %v", badTries, ejections,
			m.clientMetric(ctx, t, "tender_upstream_retries_total"))

		// Healthy again: back in rotation once its ejection time is over
		// (3s × ejections so far, at most 30s).
		setFault(ctx, t, bad, "")
		healed := time.Now()
		waitUntil(ctx, t, bad.name+" to be back in rotation", func() bool {
			if _, err := greetHTTP(c); err != nil {
				t.Fatal(err)
			}
			return inboundRequests(ctx, t, bad) > after[bad.name]
		})
		t.Logf("%s back %v after it was healthy", bad.name, time.Since(healed).Round(time.Millisecond))
	})

	// 2. A pod that hangs: a 200ms per-try timeout and one retry answer
	// from another pod well before the route's 2s timeout (within 1s,
	// room for a loaded machine).
	t.Run("hanging pod: per-try timeout", func(t *testing.T) {
		m.setPolicy(ctx, t, `
    timeout: 2s
    retries: {attempts: 1, on: [5xx, reset, connect-failure], perTryTimeout: 200ms}`,
			`"numRetries":1`, `"perTryTimeout":"0.200s"`)
		setFault(ctx, t, slow, "delay=30s")
		defer setFault(ctx, t, slow, "")
		before := inboundRequests(ctx, t, slow)
		for i := range 30 {
			start := time.Now()
			inst, err := greetHTTP(c)
			took := time.Since(start)
			if err != nil || inst == slow.name || took > time.Second {
				t.Errorf("request %d: answered by %q (err %v) after %v; want another pod within 1s", i, inst, err, took)
			}
		}
		if n := inboundRequests(ctx, t, slow) - before; n < 5 {
			t.Errorf("the hanging pod got %d of 30 first tries, want about 10", n)
		}
	})

	// 4. A circuit breaker of 10 requests in flight against a slow service:
	// the 11th fails at once with 503 and UO; a flood of refused requests
	// costs the sidecar no memory to speak of.
	t.Run("circuit breaker", func(t *testing.T) {
		m.setPolicy(ctx, t, `
    circuitBreaker: {maxRequests: 10}`, `"maxRequests":10`)
		// Slow until the fault is cleared, which lets them finish.
		for _, g := range m.greeters {
			setFault(ctx, t, g, "delay=1h")
		}
		clear := sync.OnceFunc(func() {
			for _, g := range m.greeters {
				setFault(ctx, t, g, "")
			}
		})
		defer clear()
		slowClient := m.client.httpClient(false)
		defer slowClient.CloseIdleConnections()
		var wg sync.WaitGroup
		var slowFailures atomic.Int32
		for range 10 {
			wg.Go(func() {
				if _, err := greetHTTP(slowClient); err != nil {
					slowFailures.Add(1)
				}
			})
		}
		waitUntil(ctx, t, "10 requests in flight", func() bool {
			r, _, e := inFlight(ctx, t, m)
			return r == 10 && e == 10
		})
		start := time.Now()
		resp, err := c.Get("http://" + greeterVIP + "/greet?name=eleventh")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Header.Get("X-Tender-Error"), "circuit breaker") ||
			took > time.Second {
			t.Errorf("11th request: %s %q after %v; want 503 from the circuit breaker at once", resp.Status, resp.Header.Get("X-Tender-Error"), took)
		}
		waitUntil(ctx, t, "the access log to show UO", func() bool {
			return accessLogged(m.sidecars["client"], func(l map[string]any) bool {
				return l["response_flags"] == "UO" && l["status"] == float64(503)
			})
		})

		// The sidecar is built with the race detector here, whose shadow
		// memory swamps its RSS: read the Go heap it reports instead.
		heapBefore := m.clientMetric(ctx, t, "go_memstats_heap_inuse_bytes")
		flood := &http.Client{Transport: &http.Transport{DialContext: m.client.dial, MaxIdleConnsPerHost: 200}, Timeout: 20 * time.Second}
		defer flood.CloseIdleConnections()
		var refused, other atomic.Int32
		var fw sync.WaitGroup
		for range 200 {
			fw.Go(func() {
				for range 10 {
					resp, err := flood.Get("http://" + greeterVIP + "/greet?name=flood")
					if err != nil {
						other.Add(1)
						continue
					}
					resp.Body.Close()
					if resp.StatusCode == http.StatusServiceUnavailable {
						refused.Add(1)
					} else {
						other.Add(1)
					}
				}
			})
		}
		fw.Wait()
		heapAfter := m.clientMetric(ctx, t, "go_memstats_heap_inuse_bytes")
		t.Logf("flood of 2000 requests from 200 clients: %d refused, %d other; sidecar heap in use %.1f → %.1f MiB",
			refused.Load(), other.Load(), heapBefore/(1<<20), heapAfter/(1<<20))
		if refused.Load() < 1990 {
			t.Errorf("%d of 2000 requests refused while 10 were in flight, want all", refused.Load())
		}
		if heapAfter > 64<<20 {
			t.Errorf("sidecar heap in use %.1f MiB after 200 concurrent refused clients, want a bounded amount (< 64 MiB)", heapAfter/(1<<20))
		}
		clear()
		wg.Wait()
		checkSettled(ctx, t, m)
		if n := slowFailures.Load(); n != 0 {
			t.Errorf("%d of the 10 admitted slow requests failed", n)
		}
	})

	// 5. Every endpoint failing: the retry budget (20% of requests in
	// flight) keeps retries from multiplying the load.
	t.Run("retry budget", func(t *testing.T) {
		m.setPolicy(ctx, t, `
    retries: {attempts: 3, on: [5xx], backoff: {base: 1ms, max: 5ms}, budget: {percent: 20, minConcurrency: 1}}`,
			`"numRetries":3`, `"budgetPercent":{"value":20}`)
		for _, g := range m.greeters {
			setFault(ctx, t, g, "status=503")
		}
		defer func() {
			for _, g := range m.greeters {
				setFault(ctx, t, g, "")
			}
		}()
		before := sum(m.greeterAttempts(ctx, t))
		overflowsBefore := m.clientMetric(ctx, t, "tender_upstream_overflows_total")
		const n = 1000
		failures := hammer(c, n, 20)
		checkSettled(ctx, t, m)
		attempts := sum(m.greeterAttempts(ctx, t)) - before
		overflows := m.clientMetric(ctx, t, "tender_upstream_overflows_total") - overflowsBefore
		t.Logf("%d requests against failing endpoints: %d upstream attempts (without a budget: %d), %v retries refused",
			n, attempts, 4*n, overflows)
		if len(failures) == 0 {
			t.Error("no request failed with every endpoint answering 503")
		}
		// Retries are at most 20% of the requests in flight, so at most
		// about a quarter more attempts than requests; allow for the moments
		// when fewer than 20 are in flight.
		if attempts < n || attempts > n*3/2 || overflows == 0 {
			t.Errorf("%d upstream attempts for %d requests (%v retries refused); want at most %d", attempts, n, overflows, n*3/2)
		}
	})

	// 3. A greeter pod killed under steady load, before the control plane
	// knows: idempotent requests are retried elsewhere, none fails.
	t.Run("pod killed under load", func(t *testing.T) {
		m.setPolicy(ctx, t, `
    retries: {attempts: 2, on: [5xx, reset, connect-failure]}
    outlierDetection: {consecutive5xx: 5, baseEjectionTime: 30s}`,
			`"numRetries":2`, `"baseEjectionTime":"30s"`)
		var failures []error
		var mu sync.Mutex
		stop := make(chan struct{})
		var sent atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := greetHTTP(c)
					sent.Add(1)
					if err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					}
				}
			})
		}
		// Counted in requests, not seconds, so a slow machine sends as
		// many: the load under way, then enough after the kill that the
		// dead pod is chosen many times (a third of them, until ejected).
		waitUntil(ctx, t, "100 requests before the kill", func() bool { return sent.Load() >= 100 })
		victim := m.greeters[0]
		m.apps[victim.name].kill()
		m.sidecars[victim.name].kill()
		killed := sent.Load()
		waitUntil(ctx, t, "300 requests after the kill", func() bool { return sent.Load() >= killed+300 })
		close(stop)
		wg.Wait()
		checkSettled(ctx, t, m)
		if len(failures) > 0 {
			t.Errorf("%d of %d requests failed after a pod was killed; first: %v", len(failures), sent.Load(), failures[0])
		}
		t.Logf("%d requests, %d failed, across the kill of %s", sent.Load(), len(failures), victim.name)
	})
}

// inFlight is what the client sidecar has in flight to the greeter's HTTP
// port, from /clusters: requests, retries, and requests on endpoints.
func inFlight(ctx context.Context, t *testing.T, m *mesh) (requests, retries, onEndpoints int64) {
	t.Helper()
	var cls []struct {
		Name           string
		ActiveRequests int64 `json:"active_requests"`
		ActiveRetries  int64 `json:"active_retries"`
		Endpoints      []struct{ Active int64 }
	}
	if err := json.Unmarshal(waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/clusters", 200), &cls); err != nil {
		t.Fatal(err)
	}
	for _, cl := range cls {
		if strings.HasPrefix(cl.Name, "outbound|80||greeter.") {
			requests, retries = cl.ActiveRequests, cl.ActiveRetries
			for _, e := range cl.Endpoints {
				onEndpoints += e.Active
			}
		}
	}
	return requests, retries, onEndpoints
}

// checkSettled checks that once the load is over the client sidecar
// counts nothing in flight: no leaked request, retry or endpoint count.
func checkSettled(ctx context.Context, t *testing.T, m *mesh) {
	t.Helper()
	var r, rt, e int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r, rt, e = inFlight(ctx, t, m); r == 0 && rt == 0 && e == 0 {
			return
		}
	}
	t.Errorf("after the load: %d requests, %d retries, %d endpoint requests still counted in flight", r, rt, e)
}

// accessLogged reports whether p logged an access-log line matching ok.
func accessLogged(p *process, ok func(map[string]any) bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if l["msg"] == "request" && ok(l) {
			return true
		}
	}
	return false
}

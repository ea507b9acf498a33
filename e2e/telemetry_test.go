package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The observed mesh: client → frontend → greeter, every pod meshed, plus
// Jaeger and Prometheus in pods of their own.
const (
	frontendVIP = "10.96.0.20"
	jaegerIP    = labSubnet + ".3"
	promIP      = labSubnet + ".4"
	greeterHost = "greeter.default.svc.cluster.local"
	frontHost   = "frontend.default.svc.cluster.local"
)

type observedMesh struct {
	lab      *lab
	cp       *pod
	jaeger   *pod
	jaegerP  *process
	prom     *pod
	greeters []*pod
	frontend *pod
	client   *pod
	sidecars map[string]*process
}

// tool returns the path of a tool make tools built, or fails the test.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs("../.tools/" + name)
	if err == nil {
		_, err = os.Stat(p)
	}
	if err != nil {
		t.Fatalf("%s not built (make tools): %v", name, err)
	}
	return p
}

func newObservedMesh(t *testing.T, ctx context.Context) *observedMesh {
	t.Helper()
	jaegerBin := tool(t, "jaeger")
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not installed (Debian package prometheus; .ci/run installs it)")
	}
	m := &observedMesh{lab: newLab(t), sidecars: map[string]*process{}}
	m.cp = m.lab.addPod("cp", 2)
	m.jaeger = m.lab.addPod("jaeger", 3)
	m.prom = m.lab.addPod("prometheus", 4)
	for i := range 3 {
		m.greeters = append(m.greeters, m.lab.addPod(fmt.Sprintf("greeter-%d", i+1), 11+i))
	}
	m.frontend = m.lab.addPod("frontend", 15)
	m.client = m.lab.addPod("client", 20)

	var mesh strings.Builder
	fmt.Fprintf(&mesh, "services:\n  - name: greeter\n    vip: %s\n    ports: [{name: http, port: 80, protocol: HTTP}]\n    endpoints:\n", greeterVIP)
	for _, g := range m.greeters {
		fmt.Fprintf(&mesh, "      - {address: %s, port: 8080}\n", g.ip)
	}
	fmt.Fprintf(&mesh, "  - name: frontend\n    vip: %s\n    ports: [{name: http, port: 80, protocol: HTTP}]\n    endpoints:\n      - {address: %s, port: 8080}\n",
		frontendVIP, m.frontend.ip)
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, meshFile, mesh.String())
	cp := m.cp.start(t, "controlplane", "controlplane", "--config-file", meshFile,
		"--xds-addr", "0.0.0.0:15010", "--metrics-addr", "0.0.0.0:15014", "--log-format", "json", "--debounce", "50ms")
	cp.waitLog(ctx, "control plane starting")

	m.jaegerP = m.jaeger.startPath(t, "jaeger", "/usr/bin/env", "JAEGER_LISTEN_HOST=0.0.0.0", jaegerBin)
	m.startPrometheus(t, promBin)

	otlp := jaegerIP + ":4317"
	for _, g := range m.greeters {
		m.initPod(t, g)
		g.start(t, "greeter", "greeter", "--instance", g.name, "--http-addr", ":8080", "--grpc-addr", "",
			"--otlp-endpoint", otlp, "--service-name", "greeter")
		m.sidecars[g.name] = m.startSidecar(t, g, "greeter")
	}
	m.initPod(t, m.frontend)
	m.frontend.start(t, "frontend", "greeter", "--instance", "frontend", "--http-addr", ":8080", "--grpc-addr", "",
		"--backend", "http://"+greeterVIP, "--otlp-endpoint", otlp, "--service-name", "frontend")
	m.sidecars["frontend"] = m.startSidecar(t, m.frontend, "frontend")
	m.initPod(t, m.client)
	m.sidecars["client"] = m.startSidecar(t, m.client, "client")
	for _, p := range append([]*pod{m.client, m.frontend}, m.greeters...) {
		waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/ready", 200)
	}
	waitPodHTTP(ctx, t, m.jaeger, "http://127.0.0.1:16686/api/services", 200)
	waitPodHTTP(ctx, t, m.prom, "http://"+promIP+":9090/-/ready", 200)
	return m
}

// initPod installs capture; the OTLP ports are excluded, as users exclude
// their telemetry backends, so the apps' own span exports are not traced.
func (m *observedMesh) initPod(t *testing.T, p *pod) {
	t.Helper()
	p.run(t, "sidecar", "init", "--exclude-outbound-ports", "4317,4318")
}

func (m *observedMesh) startSidecar(t *testing.T, p *pod, workload string) *process {
	t.Helper()
	return p.startAs(t, proxyUID, "sidecar", "sidecar", "run", "--xds-addr", cpIP+":15010",
		"--pod-name", p.name, "--pod-namespace", "default", "--workload", workload, "--log-format", "json",
		"--otlp-endpoint", jaegerIP+":4317", "--trace-sampling", "1", "--access-log", "json")
}

func (m *observedMesh) startPrometheus(t *testing.T, bin string) {
	t.Helper()
	dir := t.TempDir()
	var targets []string
	for _, p := range append([]*pod{m.client, m.frontend}, m.greeters...) {
		targets = append(targets, fmt.Sprintf("%q", p.ip+":15090"))
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: sidecars
    static_configs: [{targets: [%s]}]
  - job_name: controlplane
    static_configs: [{targets: [%q]}]
`, strings.Join(targets, ", "), cpIP+":15014")
	writeFile(t, filepath.Join(dir, "prometheus.yml"), cfg)
	m.prom.startPath(t, "prometheus", bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promIP+":9090", "--log.level=warn")
}

// runClient runs greeter-client in the client pod against the frontend and
// returns its output and the trace ids of its requests.
func (m *observedMesh) runClient(ctx context.Context, t *testing.T, args ...string) (string, []string) {
	t.Helper()
	ids := filepath.Join(t.TempDir(), "trace-ids")
	args = append([]string{"netns", "exec", m.client.ns, binPath("greeter-client"), "--http", "http://" + frontendVIP,
		"--otlp-endpoint", jaegerIP + ":4317", "--trace-ids", ids}, args...)
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("greeter-client: %v\n%s", err, out)
	}
	b, err := os.ReadFile(ids)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), strings.Fields(string(b))
}

var clientSummary = regexp.MustCompile(`summary: (\d+) ok, (\d+) failed`)

// promQuery runs an instant PromQL query and returns the single value.
func (m *observedMesh) promQuery(ctx context.Context, t *testing.T, q string) (float64, bool) {
	t.Helper()
	c := m.prom.httpClient(false)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+promIP+":9090/api/v1/query?query="+url.QueryEscape(q), nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) != 1 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// waitProm waits until q evaluates to want.
func (m *observedMesh) waitProm(ctx context.Context, t *testing.T, q string, want float64) {
	t.Helper()
	var got float64
	var ok bool
	for {
		if got, ok = m.promQuery(ctx, t, q); ok && got == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("PromQL %s = %v (found %v), want %v", q, got, ok, want)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// jaegerTrace is the part of Jaeger's /api/traces/{id} answer we check.
type jaegerTrace struct {
	Spans []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// chain returns, from the deepest span up to the root, "service kind" of
// each span on the path.
func (tr *jaegerTrace) chain() []string {
	byID := map[string]int{}
	children := map[string]int{}
	for i, s := range tr.Spans {
		byID[s.SpanID] = i
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				children[r.SpanID]++
			}
		}
	}
	// Deepest: the span whose path to the root is the longest.
	var best []string
	for i := range tr.Spans {
		var path []string
		seen := map[int]bool{}
		for j, ok := i, true; ok && !seen[j]; {
			seen[j] = true
			s := tr.Spans[j]
			kind := "internal"
			for _, tag := range s.Tags {
				if tag.Key == "span.kind" {
					kind, _ = tag.Value.(string)
				}
			}
			path = append(path, tr.Processes[s.ProcessID].ServiceName+" "+kind)
			ok = false
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" {
					j, ok = byID[r.SpanID]
				}
			}
		}
		if len(path) > len(best) {
			best = path
		}
	}
	return best
}

func (m *observedMesh) jaegerTrace(ctx context.Context, t *testing.T, id string) (*jaegerTrace, error) {
	t.Helper()
	c := m.jaeger.httpClient(false)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:16686/api/traces/"+id, nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if len(r.Data) != 1 {
		return nil, fmt.Errorf("trace %s: %d traces in the answer", id, len(r.Data))
	}
	return &r.Data[0], nil
}

// sidecarMetrics fetches a sidecar's /metrics in the Prometheus text format.
func sidecarMetrics(ctx context.Context, t *testing.T, p *pod) []byte {
	t.Helper()
	return waitPodHTTP(ctx, t, p, "http://127.0.0.1:15090/metrics", 200)
}

// metricSum adds the values of every sample of name in a text exposition.
func metricSum(exposition []byte, name string) float64 {
	var sum float64
	for _, line := range strings.Split(string(exposition), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// TestTelemetry covers the telemetry acceptance: one trace per request
// across client → frontend → greeter in a real Jaeger, request counts in a
// real Prometheus on both sides of each hop, error codes, promtool-clean
// metrics, and a dead Jaeger costing dropped spans but no request.
func TestTelemetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := newObservedMesh(t, ctx)

	const n = 50
	out, ids := m.runClient(ctx, t, "--count", strconv.Itoa(n), "--service-name", "greeter-client")
	if sm := clientSummary.FindStringSubmatch(out); sm == nil || sm[1] != strconv.Itoa(n) || sm[2] != "0" {
		t.Fatalf("client: want %d ok and 0 failed:\n%s", n, out)
	}
	if len(ids) != n {
		t.Fatalf("client wrote %d trace ids, want %d", len(ids), n)
	}

	t.Run("traces", func(t *testing.T) {
		// Each request is one trace through four processes on the way:
		// client app, client sidecar, frontend sidecar and app, greeter
		// sidecar and app; the sidecars' spans sit between the apps'.
		want := []string{
			"greeter server", "greeter.default server", "frontend.default client", "frontend client",
			"frontend server", "frontend.default server", "client.default client", "greeter-client client",
			"greeter-client internal",
		}
		for _, id := range ids {
			var got []string
			for {
				tr, err := m.jaegerTrace(ctx, t, id)
				if err == nil {
					if got = tr.chain(); strings.Join(got, ",") == strings.Join(want, ",") {
						break
					}
				}
				select {
				case <-ctx.Done():
					t.Fatalf("trace %s: span chain %q, want %q (last error %v)", id, got, want, err)
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
		t.Logf("all %d traces found in Jaeger with the chain %q", n, want)
		// The access log names the same trace.
		for _, sc := range []string{"client", "frontend"} {
			if !strings.Contains(m.sidecars[sc].output(), `"trace_id":"`+ids[0]+`"`) {
				t.Errorf("the %s sidecar's access log has no line for trace %s", sc, ids[0])
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// Both sides of both hops counted every request, and the inbound
		// side knows who called.
		for _, q := range []string{
			`sum(tender_requests_total{direction="outbound",destination_service="` + frontHost + `",response_code="200"})`,
			`sum(tender_requests_total{direction="inbound",destination_service="` + frontHost + `",source_workload="client",response_code="200"})`,
			`sum(tender_requests_total{direction="outbound",destination_service="` + greeterHost + `",source_workload="frontend",destination_workload="greeter"})`,
			`sum(tender_requests_total{direction="inbound",destination_service="` + greeterHost + `",source_workload="frontend",destination_workload="greeter"})`,
			`sum(tender_request_duration_seconds_count{direction="inbound",destination_service="` + greeterHost + `"})`,
		} {
			m.waitProm(ctx, t, q, n)
		}
		// An endpoint that fails shows up by its code.
		c := m.client.httpClient(false)
		defer c.CloseIdleConnections()
		const failures = 7
		for range failures {
			resp, err := c.Get("http://" + greeterVIP + "/status/500")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 500 {
				t.Fatalf("GET /status/500: %s", resp.Status)
			}
		}
		for _, dir := range []string{"outbound", "inbound"} {
			m.waitProm(ctx, t, `sum(tender_requests_total{direction="`+dir+`",destination_service="`+greeterHost+`",response_code="500"})`, failures)
		}
		m.waitProm(ctx, t, `sum(tender_sidecar_xds_connected)`, 5)
	})

	t.Run("promtool", func(t *testing.T) {
		expositions := map[string][]byte{
			"sidecar":       sidecarMetrics(ctx, t, m.greeters[0]),
			"control plane": waitPodHTTP(ctx, t, m.cp, "http://127.0.0.1:15014/metrics", 200),
		}
		for name, b := range expositions {
			cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
			cmd.Stdin = bytes.NewReader(b)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool check metrics on the %s: %v\n%s", name, err, out)
			}
		}
	})

	t.Run("dead collector", func(t *testing.T) {
		before := metricSum(sidecarMetrics(ctx, t, m.client), "tender_tracing_spans_dropped_total")
		m.jaegerP.kill()
		// A short client timeout: a request the dead collector held up
		// would fail it.
		out, _ := m.runClient(ctx, t, "--count", "200", "--concurrency", "4", "--timeout", "2s")
		if sm := clientSummary.FindStringSubmatch(out); sm == nil || sm[1] != "200" || sm[2] != "0" {
			t.Fatalf("with Jaeger down: want 200 ok and 0 failed:\n%s", out)
		}
		waitUntil(ctx, t, "the client sidecar to count dropped spans", func() bool {
			return metricSum(sidecarMetrics(ctx, t, m.client), "tender_tracing_spans_dropped_total") > before
		})
	})
}

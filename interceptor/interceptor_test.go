package interceptor

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// serve runs one request through the chain with a fresh outbound
// Exchange, as the proxy does, and returns the Exchange.
func serve(h http.Handler, r *http.Request, dir Direction) (*Exchange, *httptest.ResponseRecorder) {
	e := &Exchange{Direction: dir, Start: time.Now(), Service: "greeter.default.svc.cluster.local",
		Source: Peer{"client", "default"}, Destination: Peer{Unknown, Unknown}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r.WithContext(WithExchange(r.Context(), e)))
	return e, rec
}

func TestObserve(t *testing.T) {
	tests := []struct {
		name       string
		grpc       bool
		handler    http.HandlerFunc
		wantStatus int
		wantGRPC   string
		wantBytes  int64
	}{
		{"http body", false, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte("hello"))
		}, 201, "", 5},
		{"implicit 200", false, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }, 200, "", 0},
		{"grpc trailer", true, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Trailer", "Grpc-Status")
			w.Write([]byte("xx"))
			w.Header().Set("Grpc-Status", "5")
		}, 200, "5", 2},
		{"grpc trailers-only", true, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Grpc-Status", "14")
			w.WriteHeader(200)
		}, 200, "14", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/greet", strings.NewReader("0123456789"))
			if tt.grpc {
				r.ProtoMajor, r.ProtoMinor = 2, 0
				r.Header.Set("Content-Type", "application/grpc")
			}
			e, _ := serve(Observe(tt.handler), r, Outbound)
			if e.Status != tt.wantStatus || e.GRPCStatus != tt.wantGRPC || e.ResponseBytes != tt.wantBytes ||
				e.RequestBytes() != 10 || e.Duration <= 0 || e.GRPC != tt.grpc {
				t.Errorf("got status %d grpc %q resp %d req %d dur %v; want %d %q %d 10 >0",
					e.Status, e.GRPCStatus, e.ResponseBytes, e.RequestBytes(), e.Duration, tt.wantStatus, tt.wantGRPC, tt.wantBytes)
			}
		})
	}
	t.Run("client gone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		e, _ := serve(Observe(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})), r, Outbound)
		if e.Flags != FlagDownstreamReset || e.Status != 0 {
			t.Errorf("flags %v status %d, want DC and 0", e.Flags, e.Status)
		}
	})
}

func TestFlagsAndPeer(t *testing.T) {
	if got := (FlagNoHealthyUpstream | FlagDownstreamReset).String(); got != "UH,DC" {
		t.Errorf("flags = %q, want UH,DC", got)
	}
	if got := Flags(0).String(); got != "-" {
		t.Errorf("no flags = %q, want -", got)
	}
	p := Peer{Workload: "frontend", Namespace: "shop"}
	if got, ok := ParsePeer(p.String()); !ok || got != p {
		t.Errorf("ParsePeer(%q) = %v, %v", p.String(), got, ok)
	}
	for _, bad := range []string{"", "shop", "/x", "shop/", "a/b/c"} {
		if _, ok := ParsePeer(bad); ok {
			t.Errorf("ParsePeer(%q) accepted", bad)
		}
	}
}

func newRecorder(t *testing.T) (*tracetest.SpanRecorder, *sdktrace.TracerProvider) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return rec, tp
}

func testPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(b3.New(), propagation.TraceContext{})
}

func TestTracing(t *testing.T) {
	const parentTrace, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		name     string
		header   map[string]string
		dir      Direction
		wantKind trace.SpanKind
		wantB3   string // header that must carry the new span id
	}{
		{"w3c parent, outbound", map[string]string{"traceparent": "00-" + parentTrace + "-" + parentSpan + "-01"}, Outbound, trace.SpanKindClient, ""},
		{"b3 multi parent, inbound", map[string]string{"X-B3-TraceId": parentTrace, "X-B3-SpanId": parentSpan, "X-B3-Sampled": "1", "X-B3-ParentSpanId": "1111111111111111"}, Inbound, trace.SpanKindServer, "X-B3-SpanId"},
		{"b3 single parent", map[string]string{"b3": parentTrace + "-" + parentSpan + "-1"}, Outbound, trace.SpanKindClient, "b3"},
		{"no parent", nil, Outbound, trace.SpanKindClient, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spans, tp := newRecorder(t)
			var seen http.Header
			h := Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = r.Header.Clone()
				w.WriteHeader(http.StatusServiceUnavailable)
			}), Tracing(tp, testPropagator()), Observe)
			r := httptest.NewRequest(http.MethodGet, "http://greeter:8080/greet", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			e, _ := serve(h, r, tt.dir)
			ended := spans.Ended()
			if len(ended) != 1 {
				t.Fatalf("%d spans, want 1", len(ended))
			}
			s := ended[0]
			if s.SpanKind() != tt.wantKind || s.Name() != "GET greeter.default.svc.cluster.local" {
				t.Errorf("span %q kind %v, want %q %v", s.Name(), s.SpanKind(), "GET greeter.default.svc.cluster.local", tt.wantKind)
			}
			if tt.header != nil {
				if s.Parent().TraceID().String() != parentTrace || s.Parent().SpanID().String() != parentSpan {
					t.Errorf("parent %v, want %s/%s", s.Parent(), parentTrace, parentSpan)
				}
			} else if s.Parent().IsValid() {
				t.Errorf("a request without context got parent %v", s.Parent())
			}
			fwd := seen.Get("Traceparent")
			if !strings.Contains(fwd, s.SpanContext().SpanID().String()) || !strings.Contains(fwd, s.SpanContext().TraceID().String()) {
				t.Errorf("forwarded traceparent %q does not name the sidecar's span %v", fwd, s.SpanContext())
			}
			if tt.wantB3 != "" && !strings.Contains(seen.Get(tt.wantB3), s.SpanContext().SpanID().String()) {
				t.Errorf("forwarded %s %q does not carry the sidecar's span", tt.wantB3, seen.Get(tt.wantB3))
			}
			if tt.wantB3 == "" && (seen.Get("b3") != "" || seen.Get("X-B3-SpanId") != "") {
				t.Errorf("B3 added to a request that did not use it: %v", seen)
			}
			if seen.Get("X-B3-ParentSpanId") == "1111111111111111" {
				t.Error("stale X-B3-ParentSpanId forwarded")
			}
			attrs := map[string]string{}
			for _, a := range s.Attributes() {
				attrs[string(a.Key)] = a.Value.String()
			}
			for k, v := range map[string]string{attrMethod: "GET", attrPath: "/greet", attrStatus: "503",
				attrServerAddr: "greeter", attrServerPort: "8080", attrSrcWorkload: "client",
				attrDstService: "greeter.default.svc.cluster.local", attrRetries: "0"} {
				if attrs[k] != v {
					t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
				}
			}
			if s.Status().Code.String() != "Error" {
				t.Errorf("status %v, want Error for a 503", s.Status())
			}
			if !e.Trace.Equal(s.SpanContext()) {
				t.Errorf("exchange trace %v, want the span's %v", e.Trace, s.SpanContext())
			}
		})
	}
}

func TestTracingGRPC(t *testing.T) {
	spans, tp := newRecorder(t)
	h := Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Grpc-Status", "0")
	}), Tracing(tp, testPropagator()), Observe)
	r := httptest.NewRequest(http.MethodPost, "/greeter.v1.Greeter/Greet", nil)
	r.ProtoMajor = 2
	r.Header.Set("Content-Type", "application/grpc")
	serve(h, r, Inbound)
	s := spans.Ended()[0]
	attrs := map[string]string{}
	for _, a := range s.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if s.Name() != "greeter.v1.Greeter/Greet" || attrs[attrRPCService] != "greeter.v1.Greeter" ||
		attrs[attrRPCMethod] != "Greet" || attrs[attrGRPCStatus] != "0" || attrs[attrRPCSystem] != "grpc" {
		t.Errorf("span %q attrs %v", s.Name(), attrs)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	_, tp := newRecorder(t)
	h := Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(500)
		}
		w.Write([]byte("hi"))
	}), m.Middleware(), Tracing(tp, testPropagator()), Observe)
	for _, path := range []string{"/a", "/b", "/fail"} {
		serve(h, httptest.NewRequest(http.MethodGet, path, nil), Outbound)
	}
	ok := m.requests.WithLabelValues("outbound", "client", "default", "greeter.default.svc.cluster.local", Unknown, Unknown, Unknown, "none", "200", "")
	failed := m.requests.WithLabelValues("outbound", "client", "default", "greeter.default.svc.cluster.local", Unknown, Unknown, Unknown, "none", "500", "")
	if testutil.ToFloat64(ok) != 2 || testutil.ToFloat64(failed) != 1 {
		t.Errorf("requests: 200=%v 500=%v, want 2 and 1 (paths must not be labels)", testutil.ToFloat64(ok), testutil.ToFloat64(failed))
	}
	// Exemplars carry the trace id.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "tender_requests_total" {
			for _, mt := range mf.GetMetric() {
				for _, lp := range mt.GetCounter().GetExemplar().GetLabel() {
					found = found || (lp.GetName() == "trace_id" && len(lp.GetValue()) == 32)
				}
			}
		}
	}
	if !found {
		t.Error("no trace_id exemplar on tender_requests_total")
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}

	e := &Exchange{Direction: Inbound, Source: Peer{Unknown, Unknown}, Destination: Peer{"greeter", "default"}, Service: "echo.default.svc.cluster.local",
		SourcePrincipal: "spiffe://cluster.local/ns/default/sa/client", MTLS: true}
	m.TCPOpen(e)
	e.AddRequestBytes(100)
	e.ResponseBytes = 300
	m.TCPClose(e)
	lv := []string{"inbound", Unknown, Unknown, "echo.default.svc.cluster.local", "greeter",
		"spiffe://cluster.local/ns/default/sa/client", Unknown, "mutual_tls"}
	if o, c, r, s := testutil.ToFloat64(m.tcpOpen.WithLabelValues(lv...)), testutil.ToFloat64(m.tcpClose.WithLabelValues(lv...)),
		testutil.ToFloat64(m.tcpRecv.WithLabelValues(lv...)), testutil.ToFloat64(m.tcpSent.WithLabelValues(lv...)); o != 1 || c != 1 || r != 100 || s != 300 {
		t.Errorf("tcp opened %v closed %v received %v sent %v, want 1 1 100 300", o, c, r, s)
	}
}

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	al := NewAccessLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	_, tp := newRecorder(t)
	h := Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		FromContext(r.Context()).Flags |= FlagNoHealthyUpstream
		w.WriteHeader(503)
	}), al.Middleware(), Tracing(tp, testPropagator()), Observe)
	e, _ := serve(h, httptest.NewRequest(http.MethodPost, "http://greeter:8080/greet", strings.NewReader("abc")), Outbound)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	for k, v := range map[string]any{"msg": "request", "method": "POST", "authority": "greeter:8080", "path": "/greet",
		"status": float64(503), "response_flags": "UH", "trace_id": e.Trace.TraceID().String(), "direction": "outbound",
		"bytes_received": float64(0), "source_workload": "default/client"} {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"time", "duration_ms", "upstream", "bytes_sent"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access log lacks %s: %v", k, line)
		}
	}
}

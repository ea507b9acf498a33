package interceptor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tender-mesh/tender/telemetry"
)

// serve runs r through h with a fresh Exchange in direction dir, as the
// engine does, and returns the Exchange and what the engine would send.
func serve(h Handler, r *fakeRequest, dir Direction) (*Exchange, Response) {
	e := &Exchange{Direction: dir, Start: time.Now(), Service: "greeter.default.svc.cluster.local",
		Source: Peer{"client", "default"}, Destination: Peer{Unknown, Unknown}, Req: r}
	resp, _ := run(h, e)
	return e, resp
}

// TestExchange checks what the engine and the chain rely on: the
// response's measures reach the deferred functions, which run once, last
// registered first, after the duration is recorded; Reset clears an
// Exchange for reuse.
func TestExchange(t *testing.T) {
	tests := []struct {
		name       string
		grpc       bool
		resp       *fakeResponse
		wantStatus int
		wantGRPC   string
	}{
		{"http", false, response(201), 201, ""},
		{"grpc", true, response(200, "Grpc-Status", "5"), 200, "5"},
		{"grpc unavailable", true, response(200, "Grpc-Status", "14"), 200, "14"},
		{"grpc status out of range", true, response(200, "Grpc-Status", "17"), 200, "invalid"},
		{"grpc status not a number", true, response(200, "Grpc-Status", "05"), 200, "invalid"},
		{"grpc without status", true, response(200), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest("POST", "/greet")
			if tt.grpc {
				r = grpcRequest()
			}
			var order []string
			var seen Exchange
			h := Chain(final(func(x *Exchange) Response {
				x.AddRequestBytes(10)
				x.ResponseBytes = 5
				return tt.resp
			}), func(next Handler) Handler {
				return HandlerFunc(func(x *Exchange) (Response, error) {
					x.Defer(func(x *Exchange) {
						order = append(order, "outer")
						seen.Status, seen.GRPCStatus, seen.Duration, seen.ResponseBytes = x.Status, x.GRPCStatus, x.Duration, x.ResponseBytes
						seen.AddRequestBytes(x.RequestBytes())
					})
					return next.Handle(x)
				})
			}, func(next Handler) Handler {
				return HandlerFunc(func(x *Exchange) (Response, error) {
					x.Defer(func(*Exchange) { order = append(order, "inner") })
					return next.Handle(x)
				})
			})
			e, resp := serve(h, r, Outbound)
			if resp != tt.resp {
				t.Errorf("response %v, want the upstream's", resp)
			}
			if seen.Status != tt.wantStatus || seen.GRPCStatus != tt.wantGRPC || seen.ResponseBytes != 5 ||
				seen.RequestBytes() != 10 || seen.Duration <= 0 || e.GRPC != tt.grpc {
				t.Errorf("deferred saw status %d grpc %q resp %d req %d dur %v (grpc %v); want %d %q 5 10 >0 %v",
					seen.Status, seen.GRPCStatus, seen.ResponseBytes, seen.RequestBytes(), seen.Duration, e.GRPC,
					tt.wantStatus, tt.wantGRPC, tt.grpc)
			}
			if strings.Join(order, ",") != "inner,outer" {
				t.Errorf("deferred ran %v, want inner,outer", order)
			}
			e.Finish()
			if len(order) != 2 {
				t.Errorf("a second Finish ran the deferred functions again: %v", order)
			}
			e.Tried = append(e.Tried, netip.MustParseAddrPort("10.0.0.1:80"))
			e.Reset()
			if e.Status != 0 || e.GRPC || e.Req != nil || e.RequestBytes() != 0 || len(e.Tried) != 0 || cap(e.Tried) == 0 {
				t.Errorf("after Reset: %+v", e)
			}
			e.Finish()
			if len(order) != 2 {
				t.Errorf("Finish after Reset ran the previous request's functions: %v", order)
			}
		})
	}
	t.Run("client gone", func(t *testing.T) {
		e, resp := serve(HandlerFunc(func(*Exchange) (Response, error) { return nil, ErrClientGone }), newRequest("GET", "/"), Outbound)
		if e.Flags != FlagDownstreamReset || e.Status != 0 || resp != nil {
			t.Errorf("flags %v status %d response %v, want DC, 0 and none", e.Flags, e.Status, resp)
		}
	})
}

func TestIsGRPC(t *testing.T) {
	for _, tt := range []struct {
		proto, ctype string
		want         bool
	}{
		{"HTTP/2.0", "application/grpc", true},
		{"HTTP/2.0", "application/grpc+proto", true},
		{"HTTP/1.1", "application/grpc", false},
		{"HTTP/2.0", "application/json", false},
		{"HTTP/2.0", "", false},
	} {
		r := newRequest("POST", "/")
		r.proto = tt.proto
		if tt.ctype != "" {
			r.SetHeader("content-type", tt.ctype)
		}
		if got := IsGRPC(r); got != tt.want {
			t.Errorf("IsGRPC(%s, %q) = %v, want %v", tt.proto, tt.ctype, got, tt.want)
		}
	}
	if IsGRPC(nil) {
		t.Error("IsGRPC(nil) = true")
	}
}

func TestReplyFor(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewResilienceMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		err        error
		wantStatus int // 0: no reply
		wantFlags  Flags
		wantGRPC   string
	}{
		{ErrNoEndpoint, 503, FlagNoHealthyUpstream, "14"},
		{ErrTimeout, 504, FlagUpstreamTimeout, "4"},
		{ErrPerTryTimeout, 504, FlagUpstreamTimeout, "4"},
		{ErrClientGone, 0, FlagDownstreamReset, ""},
		{fmt.Errorf("%w: dial tcp: connection refused", ErrConnect), 503, FlagUpstreamConnectFailure, "14"},
		{fmt.Errorf("%w: bad status line", ErrBadResponse), 502, FlagUpstreamProtocolError, "14"},
		{fmt.Errorf("%w: EOF", ErrReset), 503, FlagUpstreamReset, "14"},
		{io.ErrUnexpectedEOF, 503, FlagUpstreamReset, "14"},
	} {
		x := &Exchange{Service: "greeter"}
		lr := ReplyFor(x, tt.err, m)
		switch {
		case tt.wantStatus == 0 && lr != nil:
			t.Errorf("%v: reply %+v, want none", tt.err, lr)
		case tt.wantStatus != 0 && (lr == nil || lr.StatusCode() != tt.wantStatus || lr.GRPCStatus() != tt.wantGRPC ||
			lr.Header("X-Tender-Error") == "" || lr.Header("X-Tender-Error") != lr.Message):
			t.Errorf("%v: reply %+v, want %d (gRPC %s) with X-Tender-Error", tt.err, lr, tt.wantStatus, tt.wantGRPC)
		}
		if x.Flags != tt.wantFlags {
			t.Errorf("%v: flags %v, want %v", tt.err, x.Flags, tt.wantFlags)
		}
	}
	if got := testutil.ToFloat64(m.timeouts.WithLabelValues("greeter")); got != 2 {
		t.Errorf("tender_upstream_timeouts_total = %v, want 2", got)
	}
	if ReplyFor(&Exchange{}, ErrTimeout, nil) == nil {
		t.Error("no reply without metrics")
	}
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
	for _, bad := range []string{"", "shop", "/x", "shop/", "a/b/c", "Shop/frontend", "shop/front end", "shop/" + strings.Repeat("a", 254)} {
		if _, ok := ParsePeer(bad); ok {
			t.Errorf("ParsePeer(%q) accepted", bad)
		}
	}
}

func FuzzParsePeer(f *testing.F) {
	for _, s := range []string{"shop/frontend", "", "/", "a/b/c", "default/greeter-v1.x", "\xff/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		p, ok := ParsePeer(v)
		if !ok {
			if p != (Peer{}) {
				t.Errorf("ParsePeer(%q) refused but returned %+v", v, p)
			}
			return
		}
		if p.String() != v {
			t.Errorf("ParsePeer(%q) = %+v, which renders as %q", v, p, p.String())
		}
		if q, ok := ParsePeer(p.String()); !ok || q != p {
			t.Errorf("%+v does not round-trip: %+v %v", p, q, ok)
		}
	})
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
			var seen header
			var open bool
			h := Chain(final(func(x *Exchange) Response {
				seen = x.Req.(*fakeRequest).headers()
				open = x.Span != nil && x.Span.IsRecording()
				return response(http.StatusServiceUnavailable)
			}), Tracing(tp, testPropagator()))
			r := newRequest(http.MethodGet, "http://greeter:8080/greet")
			for k, v := range tt.header {
				r.SetHeader(k, v)
			}
			e, _ := serve(h, r, tt.dir)
			if !open {
				t.Error("no open span on the Exchange while the request was forwarded")
			}
			if e.Span != nil {
				t.Error("the span is still on the Exchange after Finish")
			}
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
			for k, v := range map[string]string{telemetry.AttrMethod: "GET", telemetry.AttrPath: "/greet", telemetry.AttrStatus: "503",
				telemetry.AttrServerAddr: "greeter", telemetry.AttrServerPort: "8080", telemetry.AttrSrcWorkload: "client",
				telemetry.AttrDstService: "greeter.default.svc.cluster.local", telemetry.AttrRetries: "0"} {
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
	h := Chain(final(func(*Exchange) Response { return response(200, "Grpc-Status", "0") }), Tracing(tp, testPropagator()))
	r := grpcRequest()
	r.path = "/greeter.v1.Greeter/Greet"
	serve(h, r, Inbound)
	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans, want 1", len(ended))
	}
	s := ended[0]
	attrs := map[string]string{}
	for _, a := range s.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if s.Name() != "greeter.v1.Greeter/Greet" || attrs[telemetry.AttrRPCService] != "greeter.v1.Greeter" ||
		attrs[telemetry.AttrRPCMethod] != "Greet" || attrs[telemetry.AttrGRPCStatus] != "0" || attrs[telemetry.AttrRPCSystem] != "grpc" {
		t.Errorf("span %q attrs %v", s.Name(), attrs)
	}
}

// A gRPC call that failed is an error span, though its HTTP status is 200.
func TestTracingGRPCError(t *testing.T) {
	spans, tp := newRecorder(t)
	h := Chain(final(func(*Exchange) Response { return response(200, "Grpc-Status", "14") }), Tracing(tp, testPropagator()))
	serve(h, grpcRequest(), Inbound)
	s := spans.Ended()[0]
	if s.Status().Code.String() != "Error" {
		t.Errorf("status %v, want Error for grpc-status 14", s.Status())
	}
}

// Strings the span keeps are its own: the engine reuses the request's
// buffer once the exchange ends.
func TestTracingCopiesRequest(t *testing.T) {
	spans, tp := newRecorder(t)
	buf := []byte("/greet\xff")
	r := newRequest(http.MethodGet, "http://greeter:8080/")
	r.path = unsafe.String(&buf[0], len(buf))
	serve(Tracing(tp, testPropagator())(final(func(*Exchange) Response { return response(200) })), r, Outbound)
	copy(buf, "XXXXXXX")
	for _, a := range spans.Ended()[0].Attributes() {
		if a.Key == telemetry.AttrPath && a.Value.AsString() != "/greet\uFFFD" {
			t.Errorf("span path %q, want %q (a copy, valid UTF-8)", a.Value.AsString(), "/greet\uFFFD")
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	_, tp := newRecorder(t)
	h := Chain(final(func(x *Exchange) Response {
		x.ResponseBytes = 2
		if x.Req.Path() == "/fail" {
			return response(500)
		}
		return response(200)
	}), m.Middleware(), Tracing(tp, testPropagator()))
	for _, path := range []string{"/a", "/b", "/fail"} {
		serve(h, newRequest(http.MethodGet, path), Outbound)
	}
	ok := m.requests.WithLabelValues("outbound", "client", "default", "greeter.default.svc.cluster.local", Unknown, Unknown, Unknown, "none", "200", "")
	failed := m.requests.WithLabelValues("outbound", "client", "default", "greeter.default.svc.cluster.local", Unknown, Unknown, Unknown, "none", "500", "")
	if testutil.ToFloat64(ok) != 2 || testutil.ToFloat64(failed) != 1 {
		t.Errorf("requests: 200=%v 500=%v, want 2 and 1 (paths must not be labels)", testutil.ToFloat64(ok), testutil.ToFloat64(failed))
	}
	if n := testutil.CollectAndCount(m.respBytes); n != 2 {
		t.Errorf("%d response size series, want 2", n)
	}
	// A local reply is counted with its status, a gRPC one with its gRPC
	// status.
	serve(Chain(HandlerFunc(func(*Exchange) (Response, error) { return nil, ErrNoEndpoint }), m.Middleware()), grpcRequest(), Outbound)
	if got := testutil.ToFloat64(m.requests.WithLabelValues("outbound", "client", "default", "greeter.default.svc.cluster.local",
		Unknown, Unknown, Unknown, "none", "200", "14")); got != 1 {
		t.Errorf("gRPC local reply counted %v times with 200/14, want 1", got)
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
	h := Chain(HandlerFunc(func(*Exchange) (Response, error) { return nil, ErrNoEndpoint }),
		al.Middleware(), Tracing(tp, testPropagator()))
	e, resp := serve(h, newRequest(http.MethodPost, "http://greeter:8080/greet"), Outbound)
	if resp == nil || resp.StatusCode() != 503 {
		t.Errorf("response %v, want 503", resp)
	}
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

func TestAccessLogTCP(t *testing.T) {
	var buf bytes.Buffer
	al := NewAccessLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	e := &Exchange{Direction: Inbound, Upstream: netip.MustParseAddrPort("10.0.0.7:9000"), ResponseBytes: 300, Flags: FlagRBACDenied}
	e.AddRequestBytes(100)
	al.TCPOpen(e)
	if buf.Len() != 0 {
		t.Errorf("logged on open: %s", buf.String())
	}
	al.TCPClose(e)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	for k, v := range map[string]any{"msg": "connection", "upstream": "10.0.0.7:9000", "bytes_received": float64(100),
		"bytes_sent": float64(300), "response_flags": "RBAC", "direction": "inbound", "destination_service": Unknown} {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["method"]; ok {
		t.Errorf("a connection logged a method: %v", line)
	}
}

// header is a request's header as a try saw it, keys in any case.
type header map[string]string

func (h header) Get(k string) string { return h[strings.ToLower(k)] }

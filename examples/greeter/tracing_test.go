package greeter

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// recordSpans installs, until t ends, a global TracerProvider that records
// every ended span, and the package's propagator.
func recordSpans(t *testing.T) *tracetest.SpanRecorder {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	SetPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		if err := tp.Shutdown(context.Background()); err != nil {
			t.Errorf("TracerProvider.Shutdown: %v", err)
		}
	})
	return rec
}

// span is what the trace tests compare of a span.
type span struct {
	Name string
	Kind trace.SpanKind
	// RemoteParent is set when the parent's context came over the wire.
	RemoteParent bool
}

// traceChain waits until root's trace has want spans and returns them
// from root down, each the parent of the next. It fails t if a span has
// more than one child or the trace has spans off the chain.
func traceChain(t *testing.T, rec *tracetest.SpanRecorder, root trace.SpanContext, want int) []span {
	t.Helper()
	// Servers end their spans after writing the response, so the caller
	// may be back before they are recorded.
	var spans []sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		spans = spans[:0]
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() == root.TraceID() {
				spans = append(spans, s)
			}
		}
		if len(spans) >= want || time.Now().After(deadline) {
			break
		}
	}
	var first sdktrace.ReadOnlySpan
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.SpanContext().SpanID() == root.SpanID() {
			first = s
			continue
		}
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
	}
	if first == nil {
		t.Fatalf("root span %s not recorded", root.SpanID())
	}
	var chain []span
	for s := first; ; {
		chain = append(chain, span{Name: s.Name(), Kind: s.SpanKind(), RemoteParent: s.Parent().IsRemote()})
		next := children[s.SpanContext().SpanID()]
		if len(next) > 1 {
			t.Fatalf("span %q has %d children, want at most 1", s.Name(), len(next))
		}
		if len(next) == 0 {
			break
		}
		s = next[0]
	}
	if len(chain) != len(spans) {
		t.Errorf("trace has %d spans, %d of them in one chain from the root", len(spans), len(chain))
	}
	return chain
}

// startFrontend starts a frontend Server, HTTP and gRPC on loopback, whose
// Service calls the greeter at backendURL over HTTP.
func startFrontend(t *testing.T, backendURL string) *Server {
	t.Helper()
	hc := &http.Client{}
	t.Cleanup(hc.CloseIdleConnections)
	backend, err := NewHTTPClient(backendURL, hc)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	return startServer(t, ServerOptions{Instance: "frontend", HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", Service: backend})
}

// newHTTPClient returns NewHTTPClient for srv; its connections close when t
// ends.
func newHTTPClient(t *testing.T, srv *Server) Service {
	t.Helper()
	hc := &http.Client{}
	t.Cleanup(hc.CloseIdleConnections)
	svc, err := NewHTTPClient("http://"+srv.HTTPAddr(), hc)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	return svc
}

// newGRPCClient returns NewGRPCClient for srv, dialed with DialOptions.
func newGRPCClient(t *testing.T, srv *Server) Service {
	t.Helper()
	conn, err := grpc.NewClient(srv.GRPCAddr(), append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatalf("dial %s: %v", srv.GRPCAddr(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return NewGRPCClient(conn)
}

// TestTrace checks that a call, directly or through a frontend, is one
// trace: every span is the child of the one before, and each server span
// continues the context its caller sent.
func TestTrace(t *testing.T) {
	rec := recordSpans(t)
	backend := startServer(t, ServerOptions{Instance: "backend", HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"})
	frontend := startFrontend(t, "http://"+backend.HTTPAddr())

	const grpcGreet = "tender.greeter.v1.Greeter/Greet"
	parent := span{Name: "parent", Kind: trace.SpanKindInternal}
	httpHop := []span{
		{Name: "POST /greet", Kind: trace.SpanKindClient},
		{Name: "POST /greet", Kind: trace.SpanKindServer, RemoteParent: true},
	}
	grpcHop := []span{
		{Name: grpcGreet, Kind: trace.SpanKindClient},
		{Name: grpcGreet, Kind: trace.SpanKindServer, RemoteParent: true},
	}
	tests := []struct {
		name string
		svc  Service
		want []span
	}{
		{name: "HTTP", svc: newHTTPClient(t, backend), want: append([]span{parent}, httpHop...)},
		{name: "gRPC", svc: newGRPCClient(t, backend), want: append([]span{parent}, grpcHop...)},
		{name: "HTTP via frontend", svc: newHTTPClient(t, frontend), want: append(append([]span{parent}, httpHop...), httpHop...)},
		{name: "gRPC via frontend", svc: newGRPCClient(t, frontend), want: append(append([]span{parent}, grpcHop...), httpHop...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, root := otel.Tracer("test").Start(t.Context(), "parent")
			g, err := tt.svc.Greet(ctx, "World")
			root.End()
			if err != nil {
				t.Fatalf("Greet: %v", err)
			}
			if got, want := g.Instance, "backend"; got != want {
				t.Errorf("Greet instance: got %q, want %q", got, want)
			}
			got := traceChain(t, rec, root.SpanContext(), len(tt.want))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("trace, from the root down (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("health checks are not traced", func(t *testing.T) {
		before := len(rec.Ended())
		hc := &http.Client{}
		defer hc.CloseIdleConnections()
		if code, _, err := httpGet(t, hc, "http://"+backend.HTTPAddr()+"/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("GET /healthz: got %d, %v; want 200", code, err)
		}
		// dialGRPC's connection has no client spans of its own.
		if _, err := healthpb.NewHealthClient(dialGRPC(t, backend.GRPCAddr())).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("gRPC health Check: %v", err)
		}
		if err := backend.Close(); err != nil { // waits for the handlers
			t.Fatalf("Close: %v", err)
		}
		if got := len(rec.Ended()) - before; got != 0 {
			t.Errorf("spans of GET /healthz: got %d, want 0", got)
		}
	})
}

// collector is a fake OTLP collector: it records, per export, the spans as
// "SERVICE.NAME SPAN-NAME".
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string
}

// Export implements coltracepb.TraceServiceServer.
func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, service+" "+s.GetName())
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (c *collector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans
}

// serveGRPC serves c as an OTLP/gRPC collector and returns its host:port.
func serveGRPC(t *testing.T, c *collector) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, c)
	go s.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// serveHTTP serves c as an OTLP/HTTP (protobuf) collector and returns its
// host:port.
func serveHTTP(t *testing.T, c *collector) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		req := new(coltracepb.ExportTraceServiceRequest)
		if err == nil {
			err = proto.Unmarshal(body, req)
		}
		if r.URL.Path != "/v1/traces" || err != nil {
			t.Errorf("collector: %s %s: %v", r.Method, r.URL.Path, err)
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		resp, err := c.Export(r.Context(), req)
		if err == nil {
			body, err = proto.Marshal(resp)
		}
		if err != nil {
			t.Errorf("collector: %v", err)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestNewTracerProvider(t *testing.T) {
	tests := []struct {
		name     string
		protocol string
		serve    func(*testing.T, *collector) string // starts the collector; nil: none, no endpoint
		scheme   string                              // goes before the endpoint
		wantErr  bool
	}{
		{name: "gRPC", protocol: "grpc", serve: serveGRPC},
		{name: "default protocol is gRPC", protocol: "", serve: serveGRPC},
		{name: "HTTP", protocol: "http/protobuf", serve: serveHTTP},
		{name: "unknown protocol", protocol: "http/json", serve: serveHTTP, wantErr: true},
		{name: "URL, not host:port", protocol: "grpc", serve: serveGRPC, scheme: "http://", wantErr: true},
		{name: "no endpoint", protocol: "grpc", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := new(collector)
			var endpoint string
			if tt.serve != nil {
				endpoint = tt.scheme + tt.serve(t, c)
			}
			tp, err := NewTracerProvider(t.Context(), "svc", endpoint, tt.protocol)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewTracerProvider: got error %v, want error %t", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			_, s := tp.Tracer("test").Start(t.Context(), "probe")
			s.End()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(ctx); err != nil { // flushes the batch
				t.Fatalf("Shutdown: %v", err)
			}
			if diff := cmp.Diff([]string{"svc probe"}, c.got()); diff != "" {
				t.Errorf("exported spans (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStartTracingOff checks that without an endpoint, or with a bad one,
// nothing global changes.
func TestStartTracingOff(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		wantErr  bool
	}{
		{name: "no endpoint"},
		{name: "bad endpoint", endpoint: "http://collector:4317", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
			shutdown, err := StartTracing(t.Context(), "svc", tt.endpoint, "grpc")
			if (err != nil) != tt.wantErr {
				t.Fatalf("StartTracing: got error %v, want error %t", err, tt.wantErr)
			}
			if err == nil {
				if err := shutdown(t.Context()); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			}
			if otel.GetTracerProvider() != tp || otel.GetTextMapPropagator() != prop {
				t.Errorf("StartTracing(%q) changed the global TracerProvider or propagator", tt.endpoint)
			}
		})
	}
}

func TestOTLPEndpointFromEnv(t *testing.T) {
	tests := []struct {
		env  string
		want string
	}{
		{env: "", want: ""},
		{env: "jaeger:4317", want: "jaeger:4317"},
		{env: "http://jaeger:4317", want: "jaeger:4317"},
		{env: "http://jaeger:4318/", want: "jaeger:4318"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tt.env)
			if got := OTLPEndpointFromEnv(); got != tt.want {
				t.Errorf("OTLPEndpointFromEnv with %q: got %q, want %q", tt.env, got, tt.want)
			}
		})
	}
}

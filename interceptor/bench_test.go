package interceptor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BenchmarkChain measures what the interceptors add to one request: the
// chain the sidecar runs, without and with tracing (every request
// sampled, spans discarded by the processor).
func BenchmarkChain(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discardProcessor{}))
	defer tp.Shutdown(context.Background())
	final := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("hello")) })
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"metrics", Chain(final, m.Middleware(), Observe)},
		{"metrics+tracing", Chain(final, m.Middleware(), Tracing(tp, testPropagator()), Observe)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "http://greeter/greet", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				e := &Exchange{Direction: Outbound, Start: time.Now(), Service: "greeter.default.svc.cluster.local",
					Source: Peer{"client", "default"}, Destination: Peer{Unknown, Unknown}}
				r.Header.Del("Traceparent")
				bc.h.ServeHTTP(w, r.WithContext(WithExchange(context.Background(), e)))
				w.Body.Reset()
			}
		})
	}
}

type discardProcessor struct{}

func (discardProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discardProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discardProcessor) Shutdown(context.Context) error                  { return nil }
func (discardProcessor) ForceFlush(context.Context) error                { return nil }

package interceptor

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BenchmarkChain measures what the interceptors add to one request: the
// chain the sidecar runs, without and with tracing (every request
// sampled, spans discarded by the processor), over one Exchange reset
// per request as the HTTP/1.1 engine keeps it.
func BenchmarkChain(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discardProcessor{}))
	defer tp.Shutdown(context.Background())
	ok := response(http.StatusOK)
	last := final(func(x *Exchange) Response { x.ResponseBytes = 5; return ok })
	for _, bc := range []struct {
		name string
		h    Handler
	}{
		{"metrics", Chain(last, m.Middleware())},
		{"metrics+tracing", Chain(last, m.Middleware(), Tracing(tp, testPropagator()))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := newRequest(http.MethodGet, "http://greeter/greet")
			x := &Exchange{}
			b.ReportAllocs()
			for b.Loop() {
				x.Reset()
				x.Direction, x.Start, x.Service, x.Req = Outbound, time.Now(), "greeter.default.svc.cluster.local", r
				x.Source, x.Destination = Peer{"client", "default"}, Peer{Unknown, Unknown}
				r.DelHeader("traceparent") // lower case: the fake then does not allocate
				resp, err := bc.h.Handle(x)
				if err != nil {
					b.Fatal(err)
				}
				x.Status = resp.StatusCode()
				x.Finish()
			}
		})
	}
}

type discardProcessor struct{}

func (discardProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discardProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discardProcessor) Shutdown(context.Context) error                  { return nil }
func (discardProcessor) ForceFlush(context.Context) error                { return nil }

package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// fakeExporter records batches; block makes exports hang until released,
// fail makes them fail.
type fakeExporter struct {
	mu      sync.Mutex
	spans   int
	block   chan struct{}
	fail    bool
	stopped bool
}

func (f *fakeExporter) ExportSpans(ctx context.Context, s []sdktrace.ReadOnlySpan) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.fail {
		return errors.New("collector unreachable")
	}
	f.mu.Lock()
	f.spans += len(s)
	f.mu.Unlock()
	return nil
}

func (f *fakeExporter) Shutdown(context.Context) error {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	return nil
}

func newTestQueue(t *testing.T, exp *fakeExporter, queue int) (*sdktrace.TracerProvider, *spanQueue) {
	t.Helper()
	q, err := newSpanQueue(exp, TracingOptions{QueueSize: queue, BatchSize: 8, Interval: 10 * time.Millisecond,
		Timeout: time.Second, Endpoint: "test", Logger: slog.New(slog.DiscardHandler)}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(q))
	return tp, q
}

func TestSpanQueueExports(t *testing.T) {
	exp := &fakeExporter{}
	tp, q := newTestQueue(t, exp, 64)
	for range 20 {
		_, s := tp.Tracer("t").Start(context.Background(), "op")
		s.End()
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exp.spans != 20 || !exp.stopped || testutil.ToFloat64(q.exported) != 20 {
		t.Errorf("exported %d (metric %v), stopped %v; want 20 spans flushed at shutdown",
			exp.spans, testutil.ToFloat64(q.exported), exp.stopped)
	}
}

func TestSpanQueueNeverBlocks(t *testing.T) {
	exp := &fakeExporter{block: make(chan struct{})}
	tp, q := newTestQueue(t, exp, 16)
	start := time.Now()
	for range 1000 {
		_, s := tp.Tracer("t").Start(context.Background(), "op")
		s.End()
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("1000 spans took %v with a hung collector; span end must not wait for it", d)
	}
	if dropped := testutil.ToFloat64(q.queueFull); dropped < 1000-16-8 {
		t.Errorf("queue_full dropped %v, want about %d", dropped, 1000-16-8)
	}
	close(exp.block)
	tp.Shutdown(context.Background())
}

func TestSpanQueueCountsFailedExports(t *testing.T) {
	exp := &fakeExporter{fail: true}
	tp, q := newTestQueue(t, exp, 64)
	for range 10 {
		_, s := tp.Tracer("t").Start(context.Background(), "op")
		s.End()
	}
	tp.Shutdown(context.Background())
	if got := testutil.ToFloat64(q.failed); got != 10 {
		t.Errorf("export_failed = %v, want 10", got)
	}
}

func TestNewTracingValidates(t *testing.T) {
	for _, o := range []TracingOptions{{}, {Endpoint: "x:4317", SamplingRatio: 2}, {Endpoint: "x:4317", Protocol: "thrift"}} {
		if _, err := NewTracing(o, nil); err == nil {
			t.Errorf("NewTracing(%+v): got no error", o)
		}
	}
}

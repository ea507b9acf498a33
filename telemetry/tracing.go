package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TracingOptions configure span export.
type TracingOptions struct {
	// Endpoint is the OTLP collector's host:port (Jaeger: 4317 for gRPC,
	// 4318 for HTTP).
	Endpoint string
	// Protocol is "grpc" (default) or "http/protobuf".
	Protocol string
	// SamplingRatio applies to requests that arrive without a trace
	// context; requests with one follow their parent's decision.
	SamplingRatio float64
	// Resource names the process (service.name and friends).
	Resource []attribute.KeyValue
	// QueueSize bounds the spans waiting for export; more are dropped.
	// Default 2048.
	QueueSize int
	// BatchSize is the most spans one export sends; default 512.
	BatchSize int
	// Interval is how long a partial batch waits; default 1 s.
	Interval time.Duration
	// Timeout bounds one export; default 5 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Tracing owns the tracer provider of a process.
type Tracing struct {
	Provider *sdktrace.TracerProvider
}

// Shutdown flushes what is queued (until ctx ends) and stops exporting.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.Provider.Shutdown(ctx) }

// NewTracing builds a tracer provider exporting over OTLP through a
// bounded queue: a slow or dead collector costs dropped spans, counted in
// tender_tracing_spans_dropped_total, never a blocked request.
func NewTracing(o TracingOptions, reg prometheus.Registerer) (*Tracing, error) {
	if o.Endpoint == "" {
		return nil, errors.New("tracing: no OTLP endpoint")
	}
	if o.SamplingRatio < 0 || o.SamplingRatio > 1 {
		return nil, fmt.Errorf("tracing: sampling ratio %v: want 0 to 1", o.SamplingRatio)
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 2048
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var exp sdktrace.SpanExporter
	var err error
	// The exporters' own retries would hold the export goroutine for up
	// to a minute; the queue is the buffer, so a failed batch is dropped.
	switch o.Protocol {
	case "", "grpc":
		exp, err = otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(o.Endpoint),
			otlptracegrpc.WithInsecure(), otlptracegrpc.WithTimeout(o.Timeout),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	case "http/protobuf", "http":
		exp, err = otlptracehttp.New(context.Background(), otlptracehttp.WithEndpoint(o.Endpoint),
			otlptracehttp.WithInsecure(), otlptracehttp.WithTimeout(o.Timeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	default:
		return nil, fmt.Errorf("tracing: protocol %q: want grpc or http/protobuf", o.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter: %w", err)
	}
	q, err := newSpanQueue(exp, o, reg)
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(o.Resource...)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SamplingRatio))),
		sdktrace.WithSpanProcessor(q),
	)
	return &Tracing{Provider: tp}, nil
}

// Propagator reads W3C trace context, and B3 in its single- and
// multi-header forms; W3C wins when both are present.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)),
		propagation.TraceContext{},
	)
}

// spanQueue is a span processor with a bounded queue that never blocks
// the caller: OnEnd drops (and counts) when the queue is full.
type spanQueue struct {
	exp      sdktrace.SpanExporter
	o        TracingOptions
	ch       chan sdktrace.ReadOnlySpan
	flush    chan chan struct{}
	done     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once

	exported  prometheus.Counter
	queueFull prometheus.Counter
	failed    prometheus.Counter
	lastWarn  time.Time
	// shutdownCtx bounds the exports of the final drain.
	shutdownCtx atomic.Pointer[context.Context]
}

func newSpanQueue(exp sdktrace.SpanExporter, o TracingOptions, reg prometheus.Registerer) (*spanQueue, error) {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tender_tracing_spans_dropped_total",
		Help: "Spans not exported, by reason: queue_full (the collector is slower than the traffic) or export_failed.",
	}, []string{"reason"})
	exported := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tender_tracing_spans_exported_total",
		Help: "Spans the OTLP collector accepted.",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{dropped, exported} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("tracing metrics: %w", err)
			}
		}
	}
	q := &spanQueue{
		exp: exp, o: o,
		ch:        make(chan sdktrace.ReadOnlySpan, o.QueueSize),
		flush:     make(chan chan struct{}),
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
		exported:  exported,
		queueFull: dropped.WithLabelValues("queue_full"),
		failed:    dropped.WithLabelValues("export_failed"),
	}
	go q.loop()
	return q, nil
}

func (q *spanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *spanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case <-q.done: // shutting down: the final drain may have run
		q.queueFull.Inc()
		return
	default:
	}
	select {
	case q.ch <- s:
	default:
		q.queueFull.Inc()
	}
}

func (q *spanQueue) loop() {
	defer close(q.stopped)
	batch := make([]sdktrace.ReadOnlySpan, 0, q.o.BatchSize)
	tick := time.NewTicker(q.o.Interval)
	defer tick.Stop()
	send := func() {
		if len(batch) > 0 {
			q.export(batch)
			clear(batch)
			batch = batch[:0]
		}
	}
	drain := func() {
		for {
			select {
			case s := <-q.ch:
				batch = append(batch, s)
				if len(batch) == q.o.BatchSize {
					send()
				}
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.ch:
			batch = append(batch, s)
			if len(batch) == q.o.BatchSize {
				send()
			}
		case <-tick.C:
			send()
		case ack := <-q.flush:
			drain()
			close(ack)
		case <-q.done:
			drain()
			return
		}
	}
}

func (q *spanQueue) export(batch []sdktrace.ReadOnlySpan) {
	parent := context.Background()
	if p := q.shutdownCtx.Load(); p != nil {
		parent = *p // shutting down: within its deadline
	}
	ctx, cancel := context.WithTimeout(parent, q.o.Timeout)
	defer cancel()
	if err := q.exp.ExportSpans(ctx, batch); err != nil {
		q.failed.Add(float64(len(batch)))
		// One warning a minute is enough to say the collector is gone.
		if time.Since(q.lastWarn) > time.Minute {
			q.lastWarn = time.Now()
			q.o.Logger.Warn("span export failed; dropping spans until the collector answers",
				"endpoint", q.o.Endpoint, "spans", len(batch), "err", err)
		}
		return
	}
	q.exported.Add(float64(len(batch)))
}

func (q *spanQueue) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *spanQueue) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() {
		q.shutdownCtx.Store(&ctx)
		close(q.done)
	})
	select {
	case <-q.stopped:
	case <-ctx.Done():
		// The drain's exports are bounded by ctx too; they end soon.
		<-q.stopped
		q.exp.Shutdown(ctx) //nolint:errcheck // already failing with ctx's error
		return ctx.Err()
	}
	return q.exp.Shutdown(ctx)
}

package greeter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// NewTracerProvider returns a TracerProvider that batches spans to the OTLP
// collector at endpoint (host:port, plaintext) over protocol "grpc" (the
// default when empty) or "http/protobuf". Spans follow their parent's
// sampling decision; new traces are all sampled. Shut it down to flush.
func NewTracerProvider(ctx context.Context, serviceName, endpoint, protocol string) (*sdktrace.TracerProvider, error) {
	if endpoint == "" || strings.Contains(endpoint, "/") {
		return nil, fmt.Errorf("tracing: OTLP endpoint %q: want host:port", endpoint)
	}
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "", "grpc":
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure())
	default:
		return nil, fmt.Errorf("tracing: OTLP protocol %q: want grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// The service name goes last so that it wins over OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES; host.name tells the pods apart.
	res, err := resource.New(ctx,
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName(serviceName)),
	)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tracing: resource: %w", err), exp.Shutdown(ctx))
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	), nil
}

// SetPropagator installs W3C Trace Context and Baggage as the global
// propagator, which the instrumented transports read and write. Tender's
// sidecars always send traceparent, so B3 is not needed here.
func SetPropagator() {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
}

// StartTracing makes a NewTracerProvider the global TracerProvider and
// installs the propagator. With an empty endpoint tracing stays off: nothing
// is installed, the instrumentation records nothing, and the returned
// shutdown does nothing. Call shutdown before exiting to flush the spans.
func StartTracing(ctx context.Context, serviceName, endpoint, protocol string) (shutdown func(context.Context) error, err error) {
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	tp, err := NewTracerProvider(ctx, serviceName, endpoint, protocol)
	if err != nil {
		return nil, err
	}
	otel.SetTracerProvider(tp)
	SetPropagator()
	return func(ctx context.Context) error {
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: shut down: %w", err)
		}
		return nil
	}, nil
}

// OTLPEndpointFromEnv returns OTEL_EXPORTER_OTLP_ENDPOINT as host:port: the
// standard variable holds a URL such as http://jaeger:4317, the flags want
// host:port.
func OTLPEndpointFromEnv() string {
	e := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	return strings.TrimSuffix(strings.TrimPrefix(e, "http://"), "/")
}

package interceptor

import (
	"context"
	"net"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tender-mesh/tender/telemetry"
)

// Tracing records a span per request: a client span on the outbound side,
// a server span on the inbound side. It continues the trace the request
// carries (W3C traceparent, or B3), and hands the application (inbound) or
// the next hop (outbound) its own span as parent: traceparent always, B3
// in the form the request used when it came with B3. The span ends when
// the exchange finishes.
func Tracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) Middleware {
	tracer := tp.Tracer("github.com/tender-mesh/tender/interceptor")
	w3c := propagation.TraceContext{}
	b3single := b3.New(b3.WithInjectEncoding(b3.B3SingleHeader))
	b3multi := b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader))
	return func(next Handler) Handler {
		return HandlerFunc(func(e *Exchange) (Response, error) {
			r := e.Req
			if r == nil {
				return next.Handle(e)
			}
			carrier := headerCarrier{r}
			hadSingle, hadMulti := r.Header("B3") != "", r.Header("X-B3-Traceid") != ""
			ctx := prop.Extract(context.Background(), carrier)
			kind := trace.SpanKindClient
			if e.Direction == Inbound {
				kind = trace.SpanKindServer
			}
			name, startAttrs := requestAttributes(r, e)
			ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(startAttrs...),
				trace.WithTimestamp(e.Start))
			e.Trace, e.Span = span.SpanContext(), span
			w3c.Inject(ctx, carrier)
			if hadSingle {
				b3single.Inject(ctx, carrier)
			}
			if hadMulti {
				r.DelHeader("X-B3-Parentspanid")
				b3multi.Inject(ctx, carrier)
			}
			e.Defer(finishSpan)
			return next.Handle(e)
		})
	}
}

func finishSpan(e *Exchange) {
	if e.Span.IsRecording() {
		endSpan(e.Span, e)
	}
	e.Span.End()
	e.Span = nil
}

// headerCarrier lets propagators read and write a Request's header.
// Keys is not listed: the W3C and B3 propagators never ask for it.
type headerCarrier struct{ r Request }

func (c headerCarrier) Get(key string) string { return c.r.Header(key) }
func (c headerCarrier) Set(key, value string) { c.r.SetHeader(key, value) }
func (c headerCarrier) Keys() []string        { return nil }

// requestAttributes names the span and gives its attributes known before
// the request is forwarded. Every string is copied: the span outlives the
// request's buffer.
func requestAttributes(r Request, e *Exchange) (string, []attribute.KeyValue) {
	// Everything taken from the request is made valid UTF-8: OTLP refuses
	// to encode anything else, and would drop the whole batch.
	host, port := validCopy(r.Authority()), ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		host, port = h, p
	}
	path := validCopy(r.Path())
	method := validCopy(r.Method())
	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = append(attrs,
		attribute.String(telemetry.AttrDirection, e.Direction.String()),
		attribute.String(telemetry.AttrMethod, method),
		attribute.String(telemetry.AttrPath, path),
		attribute.String(telemetry.AttrServerAddr, host),
		attribute.String(telemetry.AttrProtoVersion, strings.TrimPrefix(r.Proto(), "HTTP/")),
		attribute.String(telemetry.AttrSrcWorkload, e.Source.Workload),
		attribute.String(telemetry.AttrSrcNS, e.Source.Namespace),
		attribute.String(telemetry.AttrDstService, orUnknown(e.Service)),
	)
	if n, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, attribute.Int(telemetry.AttrServerPort, n))
	}
	if e.Service != "" {
		attrs = append(attrs, attribute.String(telemetry.AttrPeerService, e.Service))
	}
	if e.Direction == Inbound {
		if h, _, err := net.SplitHostPort(e.Downstream); err == nil {
			attrs = append(attrs, attribute.String(telemetry.AttrPeerAddr, h))
		}
	}
	var name string
	if e.GRPC || IsGRPC(r) {
		// /package.Service/Method
		full := strings.TrimPrefix(path, "/")
		svc, m, _ := strings.Cut(full, "/")
		attrs = append(attrs, attribute.String(telemetry.AttrRPCSystem, "grpc"),
			attribute.String(telemetry.AttrRPCService, svc), attribute.String(telemetry.AttrRPCMethod, m))
		name = full
	} else {
		dest := e.Service
		if dest == "" {
			dest = host
		}
		name = method + " " + dest
	}
	return name, attrs
}

// validCopy returns s as valid UTF-8, in memory of its own.
func validCopy(s string) string { return strings.Clone(strings.ToValidUTF8(s, "\uFFFD")) }

// endSpan records what the response told.
func endSpan(span trace.Span, e *Exchange) {
	attrs := []attribute.KeyValue{
		attribute.String(telemetry.AttrDstWorkload, e.Destination.Workload),
		attribute.String(telemetry.AttrDstNS, e.Destination.Namespace),
		attribute.Int(telemetry.AttrRetries, e.Retries),
		attribute.String(telemetry.AttrFlags, e.Flags.String()),
		attribute.String(telemetry.AttrSecurity, e.SecurityPolicy()),
	}
	if e.SourcePrincipal != "" {
		attrs = append(attrs, attribute.String(telemetry.AttrSrcPrincipal, e.SourcePrincipal))
	}
	if e.DestinationPrincipal != "" {
		attrs = append(attrs, attribute.String(telemetry.AttrDstPrincipal, e.DestinationPrincipal))
	}
	if e.Status != 0 {
		attrs = append(attrs, attribute.Int(telemetry.AttrStatus, e.Status))
	}
	if e.Upstream.IsValid() {
		attrs = append(attrs, attribute.String(telemetry.AttrUpstream, e.Upstream.String()))
		if e.Direction == Outbound {
			attrs = append(attrs, attribute.String(telemetry.AttrPeerAddr, e.Upstream.Addr().String()))
		}
	}
	failed := e.Flags != 0 || e.Status >= 500 || (e.Direction == Outbound && e.Status >= 400)
	if e.GRPC && e.GRPCStatus != "" {
		if n, err := strconv.Atoi(e.GRPCStatus); err == nil {
			attrs = append(attrs, attribute.Int(telemetry.AttrGRPCStatus, n))
			failed = failed || n != 0
		}
	}
	span.SetAttributes(attrs...)
	if failed {
		desc := ""
		if e.Flags != 0 {
			desc = e.Flags.String()
		}
		span.SetStatus(codes.Error, desc)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}

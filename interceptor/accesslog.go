package interceptor

import (
	"context"
	"log/slog"
)

// AccessLog writes one line per request (and per opaque TCP connection,
// when it closes) to its logger, Envoy's access log in slog form.
type AccessLog struct {
	logger *slog.Logger
}

// NewAccessLog logs to logger at info level.
func NewAccessLog(logger *slog.Logger) *AccessLog { return &AccessLog{logger: logger} }

// Middleware logs every exchange once it is done.
func (a *AccessLog) Middleware() Middleware {
	log := a.logRequest
	return func(next Handler) Handler {
		return HandlerFunc(func(e *Exchange) (Response, error) {
			e.Defer(log)
			return next.Handle(e)
		})
	}
}

func (a *AccessLog) logRequest(e *Exchange) {
	attrs := a.common(e)
	if r := e.Req; r != nil {
		attrs = append(attrs,
			slog.String("method", r.Method()),
			slog.String("authority", r.Authority()),
			slog.String("path", r.Path()),
			slog.String("protocol", r.Proto()),
		)
	}
	attrs = append(attrs, slog.Int("status", e.Status))
	if e.GRPC {
		attrs = append(attrs, slog.String("grpc_status", e.GRPCStatus))
	}
	a.logger.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// common are the fields of every line.
func (a *AccessLog) common(e *Exchange) []slog.Attr {
	attrs := make([]slog.Attr, 0, 20)
	traceID := ""
	if e.Trace.IsSampled() {
		traceID = e.Trace.TraceID().String()
	}
	upstream := ""
	if e.Upstream.IsValid() {
		upstream = e.Upstream.String()
	}
	return append(attrs,
		slog.String("direction", e.Direction.String()),
		slog.String("trace_id", traceID),
		slog.String("downstream", e.Downstream),
		slog.String("upstream", upstream),
		slog.String("destination_service", orUnknown(e.Service)),
		slog.String("source_workload", e.Source.String()),
		slog.String("destination_workload", e.Destination.String()),
		slog.String("source_principal", e.SourcePrincipal),
		slog.String("destination_principal", e.DestinationPrincipal),
		slog.String("connection_security_policy", e.SecurityPolicy()),
		slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000),
		slog.Int64("bytes_received", e.RequestBytes()),
		slog.Int64("bytes_sent", e.ResponseBytes),
		slog.String("response_flags", e.Flags.String()),
		slog.Int("retries", e.Retries),
	)
}

// TCPOpen does nothing: a connection is logged when it closes.
func (a *AccessLog) TCPOpen(*Exchange) {}

// TCPClose logs the connection.
func (a *AccessLog) TCPClose(e *Exchange) {
	a.logger.LogAttrs(context.Background(), slog.LevelInfo, "connection", a.common(e)...)
}

var _ TCPObserver = (*AccessLog)(nil)

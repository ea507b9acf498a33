package interceptor

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Middleware wraps an http.Handler, like a Go kit endpoint.Middleware.
type Middleware func(http.Handler) http.Handler

// Chain composes middlewares: the first is the outermost.
func Chain(h http.Handler, mws ...Middleware) http.Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Direction says which way a request goes through the sidecar.
type Direction uint8

// Directions, as in metric labels.
const (
	Outbound Direction = iota
	Inbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Peer is a workload as metrics and spans name it.
type Peer struct {
	Workload  string
	Namespace string
}

// Unknown names a peer the sidecar could not identify (a client without a
// sidecar, a destination outside the mesh).
const Unknown = "unknown"

// PeerHeader carries a sidecar's identity to its peer sidecar: outbound
// sidecars add it to requests, inbound sidecars to responses, and each side
// removes it before the application sees it. The value is NAMESPACE/WORKLOAD.
const PeerHeader = "X-Tender-Peer"

// String renders p as PeerHeader's value.
func (p Peer) String() string { return p.Namespace + "/" + p.Workload }

// ParsePeer reads PeerHeader's value; ok is false when it is malformed.
// Both parts must be DNS names (lower-case letters, digits, '-' and '.'),
// which keeps what a client can put into metric labels bounded in form.
// The header is not authenticated.
func ParsePeer(v string) (p Peer, ok bool) {
	ns, wl, found := strings.Cut(v, "/")
	if !found || !dnsName(ns) || !dnsName(wl) {
		return Peer{}, false
	}
	return Peer{Workload: wl, Namespace: ns}, true
}

func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// Flags are Envoy-style response flags: what went wrong, in short.
type Flags uint16

// Response flags, named as in Envoy's access log.
const (
	FlagNoHealthyUpstream      Flags = 1 << iota // UH: no endpoint to send to
	FlagUpstreamConnectFailure                   // UF: the upstream refused or did not answer the connect
	FlagUpstreamReset                            // UC: the upstream connection ended before the response did
	FlagDownstreamReset                          // DC: the client went away first
	FlagUpstreamTimeout                          // UT: the upstream took longer than the route's timeout
	FlagOverflow                                 // UO: a circuit breaker refused the request
	FlagRetryLimit                               // URX: retries were exhausted
	FlagNoRoute                                  // NR: no route for the destination
	FlagFaultInjected                            // FI: the fault policy aborted the request
	FlagDelayInjected                            // DI: the fault policy delayed the request
	FlagRetryOverflow                            // UOX: the retry budget (or max retries) refused a retry
	FlagRBACDenied                               // RBAC: an authorization policy denied the request
	FlagNoMTLS                                   // NMTLS: refused plaintext (the service is STRICT); Envoy has no code of its own for it
)

var flagNames = [...]string{"UH", "UF", "UC", "DC", "UT", "UO", "URX", "NR", "FI", "DI", "UOX", "RBAC", "NMTLS"}

// String renders the flags as Envoy does: comma-separated, "-" for none.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// Exchange is one proxied request as the interceptors see it. The proxy
// fills the destination before the chain runs and the upstream while it
// forwards; Observe fills the rest.
type Exchange struct {
	Direction   Direction
	Start       time.Time
	Source      Peer
	Destination Peer
	// SourcePrincipal and DestinationPrincipal are the peers' SPIFFE IDs
	// where mutual TLS proved them; empty otherwise.
	SourcePrincipal, DestinationPrincipal string
	// MTLS is set when the hop between the two sidecars was mutual TLS.
	MTLS bool
	// Service is the destination service's host name; empty when the
	// destination is not in the registry.
	Service string
	// Upstream is the endpoint the request was sent to.
	Upstream netip.AddrPort
	// Downstream is the client's address.
	Downstream string
	GRPC       bool
	Status     int
	// GRPCStatus is the grpc-status of a gRPC response; empty otherwise.
	GRPCStatus string
	// ResponseBytes counts the response body; RequestBytes the request's.
	ResponseBytes int64
	requestBytes  atomic.Int64
	Duration      time.Duration
	Flags         Flags
	Retries       int
	// Policy is the destination's resilience policy; nil for none.
	Policy *Policy
	// Tried lists the endpoints tried so far, so retries go elsewhere.
	Tried []netip.AddrPort
	// Trace is the span the sidecar recorded for the exchange, if any.
	Trace trace.SpanContext
}

// SecurityPolicy is the connection_security_policy label: mutual_tls or
// none.
func (e *Exchange) SecurityPolicy() string {
	if e.MTLS {
		return "mutual_tls"
	}
	return "none"
}

// RequestBytes returns the request body bytes read so far. The transport
// may still be reading the body in its own goroutine, hence the atomic.
func (e *Exchange) RequestBytes() int64 { return e.requestBytes.Load() }

// AddRequestBytes counts request bytes (opaque TCP, where Observe does not
// run).
func (e *Exchange) AddRequestBytes(n int64) { e.requestBytes.Add(n) }

type exchangeKey struct{}

// WithExchange returns ctx carrying e.
func WithExchange(ctx context.Context, e *Exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, e)
}

// FromContext returns the exchange ctx carries, or nil.
func FromContext(ctx context.Context) *Exchange {
	e, _ := ctx.Value(exchangeKey{}).(*Exchange)
	return e
}

// IsGRPC reports whether r is a gRPC request.
func IsGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// Observe measures the exchange: status, gRPC status, bytes and duration.
// The proxy must have put an Exchange in the request's context; requests
// without one pass through unmeasured.
func Observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := FromContext(r.Context())
		if e == nil {
			next.ServeHTTP(w, r)
			return
		}
		e.GRPC = IsGRPC(r)
		rw := &responseWriter{ResponseWriter: w, e: e}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &countingBody{ReadCloser: r.Body, n: &e.requestBytes}
		}
		defer func() {
			// A response that breaks off mid-body ends in the proxy with
			// a panic(http.ErrAbortHandler); record it, then let it go on.
			v := recover()
			if v != nil {
				if r.Context().Err() != nil {
					e.Flags |= FlagDownstreamReset
				} else {
					e.Flags |= FlagUpstreamReset
				}
			}
			finish(e, rw, r)
			if v != nil {
				panic(v)
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// finish records what the response told once the proxy is done with it.
func finish(e *Exchange, rw *responseWriter, r *http.Request) {
	if e.Status == 0 && !rw.wroteHeader && r.Context().Err() == nil && e.Flags == 0 {
		e.Status = http.StatusOK // a handler that wrote nothing
	}
	if r.Context().Err() != nil && !rw.wroteHeader {
		e.Flags |= FlagDownstreamReset
	}
	if e.GRPC {
		// Trailers were copied into the header map after the body; a
		// trailers-only response has grpc-status among the headers.
		st := rw.Header().Get("Grpc-Status")
		if st == "" {
			st = rw.Header().Get(http.TrailerPrefix + "Grpc-Status")
		}
		e.GRPCStatus = grpcStatusLabel(st)
	}
	e.Duration = time.Since(e.Start)
}

// grpcStatusLabel keeps grpc-status values to the 17 codes gRPC defines:
// the header comes from the upstream, and labels must stay bounded.
func grpcStatusLabel(v string) string {
	if v == "" {
		return ""
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 16 {
		return strconv.Itoa(n)
	}
	return "invalid"
}

// responseWriter counts what is written. It unwraps for
// http.ResponseController (full duplex, hijacking for upgrades).
type responseWriter struct {
	http.ResponseWriter
	e           *Exchange
	wroteHeader bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		w.e.Status = code
	} else if code == http.StatusSwitchingProtocols {
		w.wroteHeader = true
		w.e.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.e.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.e.ResponseBytes += int64(n)
	return n, err
}

func (w *responseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over for an upgrade; the proxy then writes
// the 101 on the raw connection, so it is recorded here.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.wroteHeader = true
		w.e.Status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

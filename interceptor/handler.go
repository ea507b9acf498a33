package interceptor

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// Request is a request head as the interceptors read and edit it. The
// HTTP/1.1 engine implements it over the head's bytes in place, the
// HTTP/2 forwarder over its header map. Strings it returns stay valid
// until the exchange ends: an interceptor that keeps one longer (a span
// attribute exported later) copies it.
type Request interface {
	Method() string
	// Authority is the Host header (HTTP/1.1) or :authority (HTTP/2).
	Authority() string
	// Path is the request path as sent (percent-encoding kept), without
	// the query.
	Path() string
	// Proto is "HTTP/1.1", "HTTP/1.0" or "HTTP/2.0".
	Proto() string
	// Header returns the first value of the named field (any case), ""
	// when absent.
	Header(name string) string
	// SetHeader replaces every field of that name with one, or adds it.
	SetHeader(name, value string)
	// DelHeader removes every field of that name.
	DelHeader(name string)
	// SetPath rewrites the path (percent-encoded), keeping the query.
	SetPath(escaped string)
}

// Response is the head of an answer as the chain returns it: an
// upstream's, or the proxy's own ([LocalReply]).
type Response interface {
	StatusCode() int
	// Header returns the first value of the named response field, ""
	// when absent.
	Header(name string) string
	// Discard drops a response the chain will not send on (a try that
	// is retried): its body is not relayed and its connection is not
	// reused unless the engine can do so safely.
	Discard()
}

// Body is the request body as the chain controls it: forwarded by the
// engine, recorded up to [MaxReplayBytes] so a retry can send it again.
type Body interface {
	// Rewind starts the body over for another try; it reports false
	// when that is impossible (the body went beyond MaxReplayBytes).
	Rewind() bool
}

// Handler answers one exchange: the innermost one forwards a try to an
// endpoint and returns the response head, whose body the engine relays
// after the chain returns. An error means no response: the engine
// answers as Envoy does (see [ErrNoEndpoint], [ErrPerTryTimeout],
// [ErrTimeout], [ErrConnect]).
type Handler interface {
	Handle(x *Exchange) (Response, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(x *Exchange) (Response, error)

// Handle calls f.
func (f HandlerFunc) Handle(x *Exchange) (Response, error) { return f(x) }

// Middleware wraps a Handler, like a Go kit endpoint.Middleware.
type Middleware func(Handler) Handler

// Chain composes middlewares: the first is the outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Errors a try ends with when it got no response.
var (
	// ErrNoEndpoint: the destination has no endpoint to send to (UH).
	ErrNoEndpoint = errors.New("no healthy upstream")
	// ErrConnect wraps a failed connect or mTLS handshake (UF): nothing
	// reached the upstream.
	ErrConnect = errors.New("upstream connect error")
	// ErrReset wraps a connection that ended before the response head
	// (UC).
	ErrReset = errors.New("upstream reset before response")
	// ErrPerTryTimeout: a try got no response within its per-try
	// timeout.
	ErrPerTryTimeout = errors.New("per-try timeout")
	// ErrTimeout: the request ran out of its timeout (UT).
	ErrTimeout = errors.New("upstream request timeout")
	// ErrClientGone: the client went away first (DC).
	ErrClientGone = errors.New("downstream went away")
	// ErrBadResponse wraps an upstream response that does not parse
	// (UPE); its connection is closed.
	ErrBadResponse = errors.New("upstream protocol error")
)

// LocalReply is an answer the proxy makes itself: a refused, failed or
// faulted request. Engines render it the way the client understands:
// gRPC clients get a trailers-only response with the matching gRPC
// status, others the HTTP status, X-Tender-Error and a text body.
type LocalReply struct {
	Status  int
	Message string
	// Location is a redirect's target; "" for none.
	Location string
}

// StatusCode is the HTTP status.
func (l *LocalReply) StatusCode() int { return l.Status }

// Header answers what a rendered reply carries.
func (l *LocalReply) Header(name string) string {
	if strings.EqualFold(name, ErrorHeader) {
		return l.Message
	}
	if strings.EqualFold(name, "Location") {
		return l.Location
	}
	return ""
}

// Discard does nothing: a local reply holds no connection.
func (l *LocalReply) Discard() {}

// GRPCStatus is the gRPC status a gRPC client gets for the reply.
func (l *LocalReply) GRPCStatus() string { return strconv.Itoa(grpcStatusFor(l.Status)) }

// Reply makes a local reply.
func Reply(status int, msg string) *LocalReply { return &LocalReply{Status: status, Message: msg} }

// grpcStatusFor maps an HTTP status to a gRPC status as gRPC's HTTP
// mapping does.
func grpcStatusFor(code int) int {
	switch code {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	case http.StatusGatewayTimeout:
		return 4 // DEADLINE_EXCEEDED
	}
	return 2 // UNKNOWN
}

// ErrorHeader carries a local reply's message. An inbound sidecar
// removes it from its app's responses, so a peer sidecar can trust it:
// a 503 whose message starts with [ErrConnect]'s never reached the app
// ([Exchange.Unprocessed]).
const ErrorHeader = "X-Tender-Error"

// PeerUnprocessed reports whether an upstream's answer is its peer
// sidecar's own reply that the request never reached the app: over
// mutual TLS, a 503 (a gRPC UNAVAILABLE counts as one) without the
// PeerHeader a sidecar puts on what it relays from its app (every tender
// release does), whose ErrorHeader names a connect failure.
func PeerUnprocessed(mtls bool, status int, peerHeader, errorHeader string) bool {
	return mtls && status == http.StatusServiceUnavailable && peerHeader == "" && strings.HasPrefix(errorHeader, ErrConnect.Error())
}

// ReplyFor turns a try's error into the answer Envoy gives, setting the
// response flag: 503 UH, UF or UC, 504 UT, 502 UPE; nil when the client
// went away (DC), which gets no answer.
func ReplyFor(x *Exchange, err error, metrics *ResilienceMetrics) *LocalReply {
	switch {
	case errors.Is(err, ErrNoEndpoint):
		x.Flags |= FlagNoHealthyUpstream
		return Reply(http.StatusServiceUnavailable, "no healthy upstream for "+x.Service)
	case errors.Is(err, ErrTimeout), errors.Is(err, ErrPerTryTimeout):
		x.Flags |= FlagUpstreamTimeout
		metrics.Timeout(x.Service)
		return Reply(http.StatusGatewayTimeout, "upstream request timeout")
	case errors.Is(err, ErrClientGone):
		x.Flags |= FlagDownstreamReset
		return nil
	case errors.Is(err, ErrConnect):
		x.Flags |= FlagUpstreamConnectFailure
		return Reply(http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrBadResponse):
		x.Flags |= FlagUpstreamProtocolError
		return Reply(http.StatusBadGateway, err.Error())
	default:
		x.Flags |= FlagUpstreamReset
		return Reply(http.StatusServiceUnavailable, "upstream reset before response: "+err.Error())
	}
}

var _ Response = (*LocalReply)(nil)

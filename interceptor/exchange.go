package interceptor

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

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
// The header is not authenticated: the proxy ties it to the peer's
// certificate before it believes it.
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
	FlagNoHealthyUpstream       Flags = 1 << iota // UH: no endpoint to send to
	FlagUpstreamConnectFailure                    // UF: the upstream refused or did not answer the connect
	FlagUpstreamReset                             // UC: the upstream connection ended before the response did
	FlagDownstreamReset                           // DC: the client went away first
	FlagUpstreamTimeout                           // UT: the upstream took longer than the route's timeout
	FlagOverflow                                  // UO: a circuit breaker refused the request
	FlagRetryLimit                                // URX: retries were exhausted
	FlagNoRoute                                   // NR: no route for the destination
	FlagFaultInjected                             // FI: the fault policy aborted the request
	FlagDelayInjected                             // DI: the fault policy delayed the request
	FlagRetryOverflow                             // UOX: the retry budget (or max retries) refused a retry
	FlagRBACDenied                                // RBAC: an authorization policy denied the request
	FlagNoMTLS                                    // NMTLS: refused plaintext (the service is STRICT); Envoy has no code of its own for it
	FlagUpstreamProtocolError                     // UPE: the upstream's response did not parse
	FlagDownstreamProtocolError                   // DPE: the client's request did not parse
)

var flagNames = [...]string{"UH", "UF", "UC", "DC", "UT", "UO", "URX", "NR", "FI", "DI", "UOX", "RBAC", "NMTLS", "UPE", "DPE"}

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
// forwards; the engine fills the response's status, bytes and duration
// once the response is relayed, then calls Finish. The HTTP/1.1 engine
// keeps one Exchange per connection and resets it per request, so an
// Exchange must not be kept after Finish.
type Exchange struct {
	// Req is the request head; Body its body.
	Req  Request
	Body Body
	// Deadline ends the whole request (Timeout sets it), TryDeadline the
	// current try until its response head (the per-try timeout); zero:
	// none.
	Deadline, TryDeadline time.Time
	Direction             Direction
	Start                 time.Time
	Source                Peer
	Destination           Peer
	// SourcePrincipal and DestinationPrincipal are the peers' SPIFFE IDs
	// where mutual TLS proved them; empty otherwise.
	SourcePrincipal, DestinationPrincipal string
	// MTLS is set when the hop between the two sidecars was mutual TLS.
	MTLS bool
	// Service is the destination service's host name; empty when the
	// destination is not in the registry.
	Service string
	// Upstream is the endpoint the request was sent to; OriginalDst where
	// the client sent it (a VIP, or this pod's address inbound).
	Upstream, OriginalDst netip.AddrPort
	// Downstream is the client's address.
	Downstream string
	GRPC       bool
	Status     int
	// GRPCStatus is the grpc-status of a gRPC response; empty otherwise.
	GRPCStatus string
	// ResponseBytes counts the response body; RequestBytes the request's.
	ResponseBytes int64
	requestBytes  atomic.Int64 // the HTTP/2 forwarder's body may be read in another goroutine
	Duration      time.Duration
	Flags         Flags
	Retries       int
	// Policy is the destination's resilience policy; nil for none.
	Policy *Policy
	// Tried lists the endpoints tried so far, so retries go elsewhere.
	Tried []netip.AddrPort
	// Trace is the span the sidecar recorded for the exchange, if any;
	// Span the span itself while it is open.
	Trace trace.SpanContext
	Span  trace.Span
	// Attempt counts the tries sent so far.
	Attempt int
	// Unprocessed: the try's answer is the peer sidecar's own 503 for a
	// connect failure to its app (the pod is stopping), over mutual TLS:
	// nothing reached the app, so Retry takes it as a connect failure.
	Unprocessed bool

	onDone []func(*Exchange)
	// onDoneBuf holds the first deferred functions, so an exchange that
	// is not reused (an HTTP/2 stream's) allocates none for them. An
	// Exchange is not copied.
	onDoneBuf [4]func(*Exchange)
}

// Reset readies a reused Exchange for the next request, keeping the
// capacity of its lists.
func (e *Exchange) Reset() {
	tried, onDone := e.Tried[:0], e.onDone[:0]
	*e = Exchange{}
	e.Tried, e.onDone = tried, onDone
}

// Defer registers f to run when the exchange finishes (after the
// response is relayed, or refused), last registered first. Pass a
// function built once (a method value kept in the middleware), not a
// closure per request.
func (e *Exchange) Defer(f func(*Exchange)) {
	if e.onDone == nil {
		e.onDone = e.onDoneBuf[:0]
	}
	e.onDone = append(e.onDone, f)
}

// Finish records the duration and runs the deferred functions; the
// engine calls it once per exchange.
func (e *Exchange) Finish() {
	e.Duration = time.Since(e.Start)
	for i := len(e.onDone) - 1; i >= 0; i-- {
		e.onDone[i](e)
	}
	clear(e.onDone)
	e.onDone = e.onDone[:0]
}

// Expired reports whether the request's deadline passed.
func (e *Exchange) Expired() bool { return !e.Deadline.IsZero() && !time.Now().Before(e.Deadline) }

// SetGRPCStatus records a response's grpc-status, kept to the 17 codes
// gRPC defines: the value comes from the upstream, and labels must stay
// bounded.
func (e *Exchange) SetGRPCStatus(v string) { e.GRPCStatus = grpcStatusLabel(v) }

// IsGRPC reports whether r is a gRPC request.
func IsGRPC(r Request) bool {
	return r != nil && r.Proto() == "HTTP/2.0" && strings.HasPrefix(r.Header("Content-Type"), "application/grpc")
}

// grpcStatusLabel keeps grpc-status values to the codes gRPC defines.
func grpcStatusLabel(v string) string {
	switch {
	case v == "":
		return ""
	case len(v) == 1 && v[0] >= '0' && v[0] <= '9':
		return grpcCodes[v[0]-'0']
	case len(v) == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '6':
		return grpcCodes[10+v[1]-'0']
	}
	return "invalid"
}

var grpcCodes = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"}

// SecurityPolicy is the connection_security_policy label: mutual_tls or
// none.
func (e *Exchange) SecurityPolicy() string {
	if e.MTLS {
		return "mutual_tls"
	}
	return "none"
}

// RequestBytes returns the request body bytes read so far. A body may be
// read in another goroutine than the exchange's, hence the atomic.
func (e *Exchange) RequestBytes() int64 { return e.requestBytes.Load() }

// AddRequestBytes counts request body bytes.
func (e *Exchange) AddRequestBytes(n int64) { e.requestBytes.Add(n) }

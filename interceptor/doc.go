// Package interceptor holds the sidecar's per-request middleware, composed
// like Go kit endpoint middleware around the proxy's forwarding handler,
// in a shape that knows no protocol: a [Handler] takes the [Exchange] and
// returns the response head ([Response]); the engine (the proxy's
// HTTP/1.1 engine, or its HTTP/2 relay) relays the body after the chain
// returns, fills in status, bytes and duration, and calls
// [Exchange.Finish], which runs what the middlewares deferred.
//
// The proxy resolves a request's destination first and records it in the
// Exchange; the chain then runs, outermost first, in this order (the
// sidecar's main declares the first six, the proxy adds the last two):
//
//	Metrics → AccessLog → Tracing → Fault → Timeout → CircuitBreaker
//	  → authorization (inbound) → Retry → per try: pick endpoint, forward, record the outcome
//
// The stages that observe (Metrics, AccessLog, Tracing) record on the way
// out, in functions they defer, so they see the trace id Tracing set, the
// upstream and response flags the stages inside set, and what the engine
// measured: an injected fault, a timeout or an overflow is measured and
// traced like any other response. Fault comes before Timeout, as Envoy's
// fault filter comes before its router: an injected delay is not part of
// the route's timeout. Timeout sets the request's deadline, retries
// included; CircuitBreaker counts requests in flight until their response
// is relayed, which the retry budget reads. Retry sends each try through
// the innermost handler, which picks its own endpoint; the body is
// replayed from the engine's buffer ([Body]).
//
// Nothing here allocates per request on the fast path (metrics on, no
// trace sampled): deferred functions are built once, label values come
// from tables, and the HTTP/1.1 engine reuses one Exchange per
// connection.
package interceptor

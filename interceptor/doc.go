// Package interceptor holds the sidecar's per-request middleware, composed
// like Go kit endpoint middleware around the proxy's forwarding handler.
//
// The proxy resolves a request's destination first and records it in an
// [Exchange] carried by the request's context; the chain then runs, outermost
// first, in this order:
//
//	Metrics → AccessLog → Tracing → Observe → Fault → Timeout → CircuitBreaker
//	  → (proxy: Retry → per try: pick endpoint, forward, record outcome for outlier detection)
//
// Observe measures the response (status, gRPC status, bytes, duration)
// and is done with the Exchange when the proxy returns. The stages outside
// it record on the way out, so they see the trace id Tracing set, the
// upstream and response flags the stages inside set, and what Observe
// measured: an injected fault, a timeout or an overflow is measured and
// traced like any other response. Fault comes before Timeout, as Envoy's
// fault filter comes before its router: an injected delay is not part of
// the route's timeout. Timeout bounds the whole request, retries included;
// CircuitBreaker counts requests in flight, which the retry budget reads.
// Retry is a RoundTripper inside the proxy's reverse proxy, so each try
// gets its own endpoint and a replay of the request body.
package interceptor

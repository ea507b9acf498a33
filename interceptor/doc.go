// Package interceptor holds the sidecar's per-request middleware, composed
// like Go kit endpoint middleware around the proxy's forwarding handler.
//
// The proxy resolves a request's destination first and records it in an
// [Exchange] carried by the request's context; the chain then runs, outermost
// first, in this order:
//
//	Metrics → AccessLog → Tracing → Observe → (proxy: pick endpoint, forward)
//
// Observe, innermost, measures the response (status, gRPC status, bytes,
// duration) and is done with the Exchange when the proxy returns. The
// stages outside it record on the way out, so they see the trace id
// Tracing set, the upstream and response flags the proxy set, and what
// Observe measured.
package interceptor

// Package wire parses HTTP/1.x messages as they arrive on a connection: the
// request and response heads (RFC 9112 §2–§6, field syntax from RFC 9110 §5)
// and the framing of a chunked body (RFC 9112 §7.1). The sidecar's HTTP/1.1
// forwarding engine (proxy/http1) calls it on the bytes it has buffered; it
// reads nothing itself, keeps no goroutine, and never copies: a [Head] holds
// sub-slices of the caller's buffer, and a [Head] or [Chunked] kept per
// connection allocates nothing in steady state.
//
// The engine forwards what wire accepts without re-encoding it, so wire
// refuses, before a byte is forwarded, every message two HTTP/1.1 parsers
// could frame differently (request smuggling, RFC 9112 §11.2). It is at
// least as strict as Go's net/http server, whose rules are checked by a
// differential test and fuzz target, and deliberately stricter in these
// ways:
//
//   - a bare LF line ending is refused (net/http tolerates it in heads);
//   - obs-fold, a field line starting with SP or HTAB, is refused (RFC 9112
//     §5.2 allows a server to reject it; net/http unfolds it);
//   - Content-Length together with Transfer-Encoding is refused, in requests
//     and responses (net/http drops the Content-Length);
//   - Transfer-Encoding in an HTTP/1.0 message is refused (net/http ignores
//     it);
//   - only HTTP/1.0 and HTTP/1.1 are accepted (net/http takes any HTTP/1.x,
//     and PRI * HTTP/2.0);
//   - every HTTP/1.1 request needs exactly one Host, CONNECT included;
//   - the request-target must have the form its method calls for (RFC 9112
//     §3.2): authority-form host:port for CONNECT only, asterisk-form for
//     OPTIONS only, no userinfo, no fragment, no empty host, no bad
//     percent-encoding in a path;
//   - a chunk-size line may not end in whitespace, and the trailer section
//     is validated like a field section and limited to MaxTrailerBytes
//     (net/http's chunked reader does not look at trailers).
//
// Leading empty lines before a request line are skipped, as RFC 9112 §2.2
// allows (net/http skips at most four bytes of them, after a POST).
//
// wire bounds what it keeps (MaxHeaders fields, MaxChunkLine, MaxTrailerBytes),
// but not the size of a head: the caller's buffer does, and a head that does
// not fit in it is the caller's to refuse (431). It does not decide whether a
// response has a body (HEAD, 1xx, 204, 304): the engine does.
package wire

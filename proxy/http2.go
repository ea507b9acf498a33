package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// HTTP/2 (gRPC included) is served by net/http's HTTP/2 server, one
// handler call per stream, and forwarded over net/http's HTTP/2
// transports (h2c, or inside the mesh's mutual TLS). The stream runs the
// same chain as an HTTP/1.1 request; only its innermost handler differs.

// isH2 reports whether the connection starts with the HTTP/2 preface.
func isH2(sc *sniffedConn, timeout time.Duration) bool {
	sc.SetReadDeadline(time.Now().Add(timeout)) //nolint:errcheck // a failed set shows on the read
	b, _ := sc.br.Peek(3)                       //nolint:errcheck // fewer bytes: not HTTP/2
	sc.SetReadDeadline(time.Time{})             //nolint:errcheck // a failed reset shows on the next read
	return string(b) == "PRI"
}

// newH2Transports returns the HTTP/2 transports: h2c, and h2 inside the
// mesh's mutual TLS (the tunnel is the transport's "plain" connection,
// its ALPN value says what runs inside).
func (p *Proxy) newH2Transports() (plain, meshed http.RoundTripper) {
	dialer := &net.Dialer{Timeout: p.opts.DialTimeout, KeepAlive: 30 * time.Second}
	h2 := &http.Transport{
		DialContext:        dialer.DialContext,
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
		Protocols:          new(http.Protocols),
		HTTP2:              &http.HTTP2Config{MaxReceiveBufferPerStream: 4 << 20, MaxReceiveBufferPerConnection: 16 << 20},
	}
	h2.Protocols.SetUnencryptedHTTP2(true)
	h2m := h2
	if p.clientTLS != nil {
		h2m = h2.Clone()
		h2m.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
			tc, id, err := p.dialMTLS(ctx, dialer, addr, alpnHTTP2)
			if err != nil {
				p.opts.Security.HandshakeFailed(interceptor.Outbound)
				p.opts.Logger.Warn("mTLS to upstream failed", "upstream", addr, "err", err)
				return nil, err
			}
			p.peerIDs.Store(addr, id)
			return upstreamConn{tc}, nil
		}
	}
	return h2, h2m
}

// h2Stream is one HTTP/2 stream through the proxy.
type h2Stream struct {
	p      *Proxy
	w      http.ResponseWriter
	r      *http.Request
	ctx    context.Context // the stream's, with the request's deadline
	x      interceptor.Exchange
	view   h2Request
	body   *interceptor.Replay
	cl     *Cluster
	ep     *balancer.Endpoint
	peered bool
	resp   *http.Response
	cancel context.CancelFunc
}

// h2Handler routes each stream and runs the chain around forwarding it.
func (p *Proxy) h2Handler(d Direction) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Stats.Requests[d].Add(1)
		sc, _ := r.Context().Value(connKey{}).(*sniffedConn)
		if sc == nil {
			http.Error(w, "tender: no connection info", http.StatusInternalServerError)
			return
		}
		st := &h2Stream{p: p, w: w, r: r, ctx: r.Context()}
		st.view.r = r
		x := &st.x
		x.Start = time.Now()
		x.Downstream = r.RemoteAddr
		x.Req = &st.view
		if r.Body != nil && r.Body != http.NoBody {
			st.body = interceptor.NewReplay(r.Body)
			x.Body = st.body
		}
		st.cl, st.peered = p.route(x, d, sc)
		x.GRPC = interceptor.IsGRPC(&st.view)
		defer func() {
			if st.cancel != nil {
				st.cancel()
			}
		}()
		resp, err := p.chain(interceptor.HandlerFunc(st.try)).Handle(x)
		if err != nil {
			resp = nil
			if lr := interceptor.ReplyFor(x, err, p.opts.Resilience); lr != nil {
				resp = lr
			}
		}
		switch rs := resp.(type) {
		case *h2Response:
			st.relay()
		case *interceptor.LocalReply:
			x.Status = rs.Status
			writeLocalH2(w, x, rs)
		}
		if st.ep != nil {
			st.ep.Stats.Active.Add(-1)
		}
		x.Finish()
	})
}

// route finds a request's destination and records it in x: the cluster
// of the VIP it was sent to (outbound), or of this pod's address
// (inbound), and the peer sidecar's identity. HTTP/1.1 and HTTP/2 both
// route here.
func (p *Proxy) route(x *interceptor.Exchange, d Direction, sc *sniffedConn) (cl *Cluster, peered bool) {
	t := p.table.Load()
	x.OriginalDst = sc.dst
	if d == Outbound {
		x.Direction, x.Source, x.Destination = interceptor.Outbound, p.opts.Self, unknownPeer
		if cl = t.ByVIP[sc.dst]; cl != nil {
			x.Service = cl.Host
			x.Policy = cl.Resilience
			x.Req.SetHeader(interceptor.PeerHeader, p.self)
		} else {
			x.Req.DelHeader(interceptor.PeerHeader) // the app's own is not passed off as a sidecar's
		}
		return cl, false
	}
	x.Direction, x.Source, x.Destination = interceptor.Inbound, unknownPeer, p.opts.Self
	x.MTLS, x.SourcePrincipal = sc.mtls, sc.peer
	if v := x.Req.Header(interceptor.PeerHeader); v != "" {
		if peer, ok := interceptor.ParsePeer(v); ok {
			x.Source, peered = interceptor.Peer{Workload: strings.Clone(peer.Workload), Namespace: strings.Clone(peer.Namespace)}, true
		}
		x.Req.DelHeader(interceptor.PeerHeader)
	}
	if cl = t.Endpoint(sc.dst); cl != nil {
		x.Service = cl.Host
	}
	return cl, peered
}

// chain is the whole per-request chain, outermost first: the sidecar's
// interceptors (metrics, access log, tracing, fault, timeout, circuit
// breaker; see cmd/sidecar), then authorization (inbound), then Retry
// around try, which sends one try to an endpoint it picks.
func (p *Proxy) chain(try interceptor.Handler) interceptor.Handler {
	mws := make([]interceptor.Middleware, 0, len(p.opts.Interceptors)+2)
	mws = append(mws, p.opts.Interceptors...)
	mws = append(mws, p.authorize, interceptor.Retry(p.opts.Resilience))
	return interceptor.Chain(try, mws...)
}

// authorize applies the authorization policies of the destination's
// services to an inbound request, on the path the app gets: normalised,
// and forwarded so.
func (p *Proxy) authorize(next interceptor.Handler) interceptor.Handler {
	return interceptor.HandlerFunc(func(x *interceptor.Exchange) (interceptor.Response, error) {
		if x.Direction != interceptor.Inbound {
			return next.Handle(x)
		}
		clusters := p.table.Load().InboundClusters(x.OriginalDst)
		if !hasAuthz(clusters) {
			return next.Handle(x)
		}
		raw := x.Req.Path()
		path, clean, ok := normalizeEscapedPath(raw)
		if !ok {
			return interceptor.Reply(http.StatusBadRequest, "path with an encoded slash or backslash refused"), nil
		}
		if clean != raw {
			x.Req.SetPath(clean)
		}
		if dec := authorize(clusters, authzRequest(x, path)); !dec.Allowed {
			p.deny(x, dec, x.Req.Method(), path)
			return interceptor.Reply(http.StatusForbidden, "RBAC: access denied"), nil
		}
		return next.Handle(x)
	})
}

// try sends one try of the stream to an endpoint and returns its
// response head.
func (st *h2Stream) try(x *interceptor.Exchange) (interceptor.Response, error) {
	p, r := st.p, st.r
	var hashKey string
	if st.cl != nil && st.cl.Hashing {
		hashKey = r.Header.Get(st.cl.HashHeader)
		if st.cl.HashHeader == "" {
			hashKey, _, _ = net.SplitHostPort(r.RemoteAddr)
		}
	}
	key, ep, err := p.choose(x, st.cl, hashKey)
	if err != nil {
		return nil, err
	}
	if st.ep != nil {
		st.ep.Stats.Active.Add(-1)
	}
	st.ep = ep
	if ep != nil {
		ep.Stats.Active.Add(1)
		ep.Stats.Total.Add(1)
	}
	if st.cancel == nil && !x.Deadline.IsZero() {
		st.ctx, st.cancel = context.WithDeadline(r.Context(), x.Deadline)
	}
	ctx, cancel := context.WithCancelCause(st.ctx)
	var timer *time.Timer
	if !x.TryDeadline.IsZero() {
		timer = time.AfterFunc(time.Until(x.TryDeadline), func() { cancel(interceptor.ErrPerTryTimeout) })
	}
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "http", x.Upstream.String()
	out.Host = r.Host
	removeHopByHop(out.Header)
	if st.body != nil {
		out.Body = st.body.Reader()
	}
	if deadline, ok := ctx.Deadline(); ok && x.GRPC {
		// The upstream gets what is left of the deadline.
		out.Header.Set("Grpc-Timeout", interceptor.FormatGRPCTimeout(time.Until(deadline)))
	}
	rt := p.h2
	if key.meshed {
		rt = p.h2m
	}
	outbound := x.Direction == interceptor.Outbound
	if outbound { // inbound, MTLS is the downstream hop's
		x.MTLS = key.meshed
	}
	resp, err := rt.RoundTrip(out)
	perTry := timer != nil && !timer.Stop()
	if outbound && key.meshed {
		if id, ok := p.peerIDs.Load(out.URL.Host); ok {
			x.DestinationPrincipal = id.(string)
		}
	}
	if err != nil {
		cancel(nil)
		var op *net.OpError
		switch {
		case perTry && !x.Expired():
			p.outcome(st.cl, ep, http.StatusGatewayTimeout, false)
			return nil, interceptor.ErrPerTryTimeout
		case x.Expired():
			return nil, interceptor.ErrTimeout
		case r.Context().Err() != nil:
			return nil, interceptor.ErrClientGone
		case errors.As(err, &op) && op.Op == "dial":
			p.outcome(st.cl, ep, 0, true)
			return nil, fmt.Errorf("%w: %w", interceptor.ErrConnect, err)
		}
		p.outcome(st.cl, ep, http.StatusServiceUnavailable, false)
		return nil, fmt.Errorf("%w: %w", interceptor.ErrReset, err)
	}
	if perTry {
		resp.Body.Close()
		cancel(nil)
		p.outcome(st.cl, ep, http.StatusGatewayTimeout, false)
		return nil, interceptor.ErrPerTryTimeout
	}
	status := resp.StatusCode
	if resp.Header.Get("Grpc-Status") == "14" { // UNAVAILABLE, trailers-only
		status = http.StatusServiceUnavailable
	}
	if resp.StatusCode >= 500 {
		p.Stats.Upstream5xx.Add(1)
	}
	p.outcome(st.cl, ep, status, false)
	st.resp = resp
	prev := st.cancel
	st.cancel = func() {
		cancel(nil)
		if prev != nil {
			prev()
		}
	}
	return &h2Response{st: st, resp: resp}, nil
}

// choose picks where a try goes: an endpoint of the cluster (another
// than those tried, when it can), the app (inbound), or the original
// destination (not a registered service).
func (p *Proxy) choose(x *interceptor.Exchange, cl *Cluster, hashKey string) (poolKey, *balancer.Endpoint, error) {
	switch {
	case x.Direction == interceptor.Inbound:
		x.Upstream = netip.AddrPortFrom(p.opts.InboundAddr, x.OriginalDst.Port())
		return poolKey{addr: x.Upstream}, nil, nil
	case cl == nil:
		// Not (or no longer) a registered service, e.g. a kept-alive
		// connection whose service went away: send the request where it
		// was going.
		x.Upstream = x.OriginalDst
		return poolKey{addr: x.Upstream, meshed: p.meshedAddr(x.Upstream)}, nil, nil
	}
	var h uint64
	if cl.Hashing {
		h = balancer.HashString(hashKey)
	}
	ep := p.pick(cl, h, x.Tried)
	if ep == nil {
		p.Stats.NoEndpoint.Add(1)
		return poolKey{}, nil, interceptor.ErrNoEndpoint
	}
	x.Upstream = ep.Addr
	x.Tried = append(x.Tried, ep.Addr)
	return poolKey{addr: ep.Addr, meshed: p.meshed(ep)}, ep, nil
}

// hopHeaders are the HTTP/2 request fields not forwarded; "te: trailers"
// is, as gRPC needs it.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Http2-Settings"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	if te := h.Get("Te"); te != "" && !strings.EqualFold(te, "trailers") {
		h.Del("Te")
	}
}

// relay writes the upstream's response to the stream: headers, the body
// flushed as it comes (gRPC streams), trailers.
func (st *h2Stream) relay() {
	x, w, resp := &st.x, st.w, st.resp
	defer resp.Body.Close()
	removeHopByHop(resp.Header)
	if x.Direction == interceptor.Outbound {
		if v := resp.Header.Get(interceptor.PeerHeader); v != "" && st.cl != nil {
			if peer, ok := interceptor.ParsePeer(v); ok {
				x.Destination = peer
			}
		}
		resp.Header.Del(interceptor.PeerHeader)
	} else if st.peered {
		resp.Header.Set(interceptor.PeerHeader, st.p.self)
	}
	h := w.Header()
	for k, vv := range resp.Header {
		h[k] = vv
	}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	x.Status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if len(resp.Trailer) > 0 {
		// Announced trailers: send the head now. Otherwise it goes with
		// the first data, or alone with the end of the stream, so a
		// trailers-only gRPC answer stays trailers-only.
		rc.Flush() //nolint:errcheck // a failed flush shows on the next write
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				x.Flags |= interceptor.FlagDownstreamReset
				x.ResponseBytes += int64(n)
				return
			}
			x.ResponseBytes += int64(n)
			rc.Flush() //nolint:errcheck // a failed flush shows on the next write
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if st.r.Context().Err() != nil {
				x.Flags |= interceptor.FlagDownstreamReset
			} else {
				x.Flags |= interceptor.FlagUpstreamReset
			}
			// Reset the stream: the client must not take a cut body for
			// a whole one.
			x.Finish()
			st.finished()
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	if x.GRPC {
		v := resp.Trailer.Get("Grpc-Status")
		if v == "" {
			v = resp.Header.Get("Grpc-Status") // trailers-only
		}
		x.SetGRPCStatus(v)
	}
}

// finished releases what the stream holds when it ends by a reset.
func (st *h2Stream) finished() {
	if st.ep != nil {
		st.ep.Stats.Active.Add(-1)
		st.ep = nil
	}
	if st.cancel != nil {
		st.cancel()
		st.cancel = nil
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeLocalH2 answers a stream with the proxy's own reply: gRPC clients
// get a trailers-only response with the matching gRPC status.
func writeLocalH2(w http.ResponseWriter, x *interceptor.Exchange, r *interceptor.LocalReply) {
	if x.GRPC {
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", r.GRPCStatus())
		h.Set("Grpc-Message", r.Message)
		x.SetGRPCStatus(r.GRPCStatus())
		x.Status = http.StatusOK
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("X-Tender-Error", r.Message)
	http.Error(w, "tender: "+r.Message, r.Status)
}

// h2Request is a stream's request head as the chain sees it.
type h2Request struct{ r *http.Request }

// Method is the request method.
func (q *h2Request) Method() string { return q.r.Method }

// Authority is :authority.
func (q *h2Request) Authority() string { return q.r.Host }

// Path is the path as sent.
func (q *h2Request) Path() string { return q.r.URL.EscapedPath() }

// Proto is HTTP/2.0.
func (q *h2Request) Proto() string { return q.r.Proto }

// Header returns the first value of the named field.
func (q *h2Request) Header(name string) string { return q.r.Header.Get(name) }

// SetHeader replaces the named field.
func (q *h2Request) SetHeader(name, value string) { q.r.Header.Set(name, value) }

// DelHeader removes the named field.
func (q *h2Request) DelHeader(name string) { q.r.Header.Del(name) }

// SetPath rewrites the path.
func (q *h2Request) SetPath(escaped string) {
	if p, err := url.PathUnescape(escaped); err == nil {
		q.r.URL.Path, q.r.URL.RawPath = p, escaped
	}
}

// h2Response is an upstream's response head.
type h2Response struct {
	st   *h2Stream
	resp *http.Response
}

// StatusCode is the response status.
func (r *h2Response) StatusCode() int { return r.resp.StatusCode }

// Header returns the first value of the named response field.
func (r *h2Response) Header(name string) string { return r.resp.Header.Get(name) }

// Discard drops a response that is retried.
func (r *h2Response) Discard() {
	io.CopyN(io.Discard, r.resp.Body, 4<<10) //nolint:errcheck // best effort, so the stream can end cleanly
	r.resp.Body.Close()
	r.st.resp = nil
}

var (
	_ interceptor.Request  = (*h2Request)(nil)
	_ interceptor.Response = (*h2Response)(nil)
)

// meshed reports whether the sidecar reaches ep over mutual TLS: ep takes
// it and the sidecar has a certificate (before its first one it speaks
// plaintext, which PERMISSIVE endpoints take).
func (p *Proxy) meshed(ep *balancer.Endpoint) bool {
	return ep.Meshed && p.opts.MTLS != nil && p.opts.MTLS.Ready()
}

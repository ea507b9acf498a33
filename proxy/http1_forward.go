package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/proxy/http1/wire"
)

// try is the innermost handler of a connection's chain: it sends one try
// of the current request to an endpoint and reads the response head.
func (c *h1conn) try(x *interceptor.Exchange) (interceptor.Response, error) {
	p := c.p
	if c.reply != nil {
		return c.reply, nil
	}
	key, ep, err := c.upstream(x)
	if err != nil {
		return nil, err
	}
	if c.ep != nil { // a previous try's endpoint
		c.ep.Stats.Active.Add(-1)
	}
	c.ep = ep
	if ep != nil {
		ep.Stats.Active.Add(1)
		ep.Stats.Total.Add(1)
	}
	if c.upBuf == nil {
		c.upBuf = bufPool.get()
		c.up.b = *c.upBuf
	}
	for fresh := false; ; fresh = true {
		uc, err := p.pool.get(context.Background(), key)
		if err != nil {
			p.connectFailed(c.cl, ep, err)
			return nil, fmt.Errorf("%w: %w", interceptor.ErrConnect, err)
		}
		c.uc = uc
		c.upNow.Store(uc)
		if x.Direction == interceptor.Outbound { // inbound, MTLS is the downstream hop's
			x.MTLS, x.DestinationPrincipal = key.mesh.on, uc.peerID
		}
		started := c.pump != nil
		err = c.send(uc)
		if err == nil {
			err = c.readResponseHead(x)
		}
		if err == nil {
			break
		}
		got := c.up.w > 0
		uc.Close()
		c.uc = nil
		// A kept-alive connection the server closed while idle: send
		// again on a fresh one, when the body can be and the method is
		// safe to repeat (as net/http does).
		if uc.used && !fresh && !got && !started && c.pump == nil && isReset(err) && interceptor.IdempotentMethod(b2s(c.req.Method)) {
			continue
		}
		switch {
		case errors.Is(err, interceptor.ErrBadResponse):
			p.outcome(c.cl, ep, http.StatusBadGateway, false)
			c.close = true
		case errors.Is(err, interceptor.ErrTimeout):
		case errors.Is(err, interceptor.ErrPerTryTimeout):
			p.outcome(c.cl, ep, http.StatusGatewayTimeout, false)
		default:
			p.outcome(c.cl, ep, http.StatusServiceUnavailable, false)
			err = fmt.Errorf("%w: %w", interceptor.ErrReset, err)
		}
		return nil, err
	}
	if x.Direction == interceptor.Outbound && c.cl != nil { // only a mesh service's sidecar answers with one
		if v := c.resp.Get(interceptor.PeerHeader); v != nil {
			if peer, ok := c.p.peerClaim(string(v), x.DestinationPrincipal, x.MTLS); ok {
				x.Destination = peer
			}
		}
		if c.resp.Status == http.StatusServiceUnavailable {
			if x.Unprocessed = interceptor.PeerUnprocessed(x.MTLS, c.resp.Status, string(c.resp.Get(interceptor.PeerHeader)),
				string(c.resp.Get(interceptor.ErrorHeader))); x.Unprocessed {
				hold(ep)
			}
		}
	}
	status := c.resp.Status
	if status >= 500 {
		p.Stats.Upstream5xx.Add(1)
	}
	p.outcome(c.cl, ep, status, false)
	return &c.rv, nil
}

func isReset(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, errConnReset)
}

var errConnReset = errors.New("connection reset")

// upstream chooses where this try goes.
func (c *h1conn) upstream(x *interceptor.Exchange) (poolKey, *balancer.Endpoint, error) {
	var hashKey string
	if c.cl != nil && c.cl.Hashing {
		hashKey = c.view.Header(c.cl.HashHeader)
		if c.cl.HashHeader == "" {
			hashKey, _, _ = net.SplitHostPort(c.raddr)
		}
	}
	return c.p.choose(x, c.cl, hashKey)
}

// meshedAddr: a pod address of a meshed endpoint outside its VIP
// (headless services) gets mutual TLS too, checked against the
// identities of every service that lists it.
func (p *Proxy) meshedAddr(a netip.AddrPort) meshPeer {
	ids, ok := p.table.Load().MeshedAddrs[a]
	return meshPeer{on: ok && p.opts.MTLS != nil && p.opts.MTLS.Ready(), ids: ids}
}

// send writes the request head and, when it is whole, its body; else it
// starts copying the body.
func (c *h1conn) send(uc *upConn) error {
	rq := &c.req
	b := append(c.out[:0], rq.Method...)
	b = append(b, ' ')
	if c.view.target != "" {
		b = append(b, c.view.target...)
	} else {
		b = append(b, rq.Target...)
	}
	if rq.Minor == 0 {
		b = append(b, " HTTP/1.0\r\n"...)
	} else {
		b = append(b, " HTTP/1.1\r\n"...)
	}
	for i, f := range rq.Fields {
		if c.view.deleted(i) || rq.IsHopByHop(f) {
			continue
		}
		b = appendField(b, f.Name, f.Value)
	}
	for _, f := range c.view.added {
		b = appendFieldString(b, f.name, f.value)
	}
	if rq.Upgrade {
		b = append(b, "Connection: Upgrade\r\n"...)
		b = appendField(b, []byte("Upgrade"), rq.Get("Upgrade"))
	}
	if rq.Chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	b = append(b, "\r\n"...)
	c.out = b
	if c.whole {
		body := c.in.b[c.headLen:c.bodyEnd]
		if len(body) <= inlineBody {
			c.out = append(c.out, body...)
			_, err := uc.Write(c.out)
			return err
		}
		if _, err := uc.Write(c.out); err != nil {
			return err
		}
		_, err := uc.Write(body)
		return err
	}
	if _, err := uc.Write(c.out); err != nil {
		return err
	}
	c.startPump(uc)
	return nil
}

func appendField(b, name, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

func appendFieldString(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = appendSafe(b, value)
	return append(b, "\r\n"...)
}

// readResponseHead reads the response head into c.up, relaying 1xx
// informational heads (100 Continue) to the client as they come.
func (c *h1conn) readResponseHead(x *interceptor.Exchange) error {
	uc := c.uc
	dl := x.Deadline
	if !x.TryDeadline.IsZero() && (dl.IsZero() || x.TryDeadline.Before(dl)) {
		dl = x.TryDeadline
	}
	if dl.IsZero() {
		// No timeout on the route: an upstream silent for the idle
		// timeout is given up on all the same (Envoy's stream idle
		// timeout), not waited for until drain.
		dl = time.Now().Add(c.p.opts.IdleTimeout)
	}
	uc.SetReadDeadline(dl) //nolint:errcheck // a failed set shows on the read
	c.up.r, c.up.w = 0, 0
	for {
		n, err := c.resp.ParseResponse(c.up.b[c.up.r:c.up.w])
		if err == nil && c.resp.Status == http.StatusSwitchingProtocols && !c.req.Upgrade {
			// Nothing asked to switch: a 101 here would turn a kept-alive
			// connection into a tunnel past every later check.
			return fmt.Errorf("%w: 101 Switching Protocols to a request that asked for no upgrade", interceptor.ErrBadResponse)
		}
		if err == nil {
			if c.resp.Status >= 100 && c.resp.Status < 200 && c.resp.Status != http.StatusSwitchingProtocols {
				if err := c.writeResponseHead(); err != nil {
					return interceptor.ErrClientGone
				}
				c.up.r += n
				continue
			}
			c.up.r += n
			break
		}
		if !errors.Is(err, wire.ErrIncomplete) {
			return fmt.Errorf("%w: %w", interceptor.ErrBadResponse, err)
		}
		if c.up.r > 0 {
			c.up.compact()
		}
		if _, err := c.up.fill(uc, maxResponseHead); err != nil {
			if errors.Is(err, errHeadTooLarge) {
				return fmt.Errorf("%w: response head over %d bytes", interceptor.ErrBadResponse, maxResponseHead)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !x.TryDeadline.IsZero() && !x.Expired() && !time.Now().Before(x.TryDeadline) {
					return interceptor.ErrPerTryTimeout
				}
				return interceptor.ErrTimeout // the route's timeout, or the idle timeout
			}
			if c.up.w == 0 && c.up.r == 0 {
				if errors.Is(err, io.EOF) {
					return io.EOF
				}
				var oe *net.OpError
				if errors.As(err, &oe) {
					return fmt.Errorf("%w: %w", errConnReset, err)
				}
			}
			return err
		}
	}
	if x.Deadline.IsZero() {
		uc.SetReadDeadline(time.Time{}) //nolint:errcheck // a failed reset shows on the next read
	} else if !dl.Equal(x.Deadline) {
		uc.SetReadDeadline(x.Deadline) //nolint:errcheck // a failed set shows on the read
	}
	// The response head is at c.up.b[:c.up.r]; body bytes follow.
	return nil
}

// writeResponseHead writes the current response head to the client,
// edited: hop-by-hop fields dropped, the peer header handled, framing
// restated.
func (c *h1conn) writeResponseHead() error {
	rs := &c.resp
	b := append(c.out[:0], "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(rs.Status), 10)
	b = append(b, ' ')
	b = append(b, rs.Reason...)
	b = append(b, "\r\n"...)
	edits := rs.Status >= 200 && c.rt.editsResponse()
	for _, f := range rs.Fields {
		if rs.IsHopByHop(f) || strings.EqualFold(b2s(f.Name), interceptor.PeerHeader) || edits && c.rt.dropsResponse(b2s(f.Name)) ||
			c.x.Direction == interceptor.Inbound && strings.EqualFold(b2s(f.Name), interceptor.ErrorHeader) { // only a sidecar's own replies carry it
			continue
		}
		b = appendField(b, f.Name, f.Value)
	}
	if edits {
		for _, f := range c.rt.respSet {
			b = appendFieldString(b, f.name, f.value)
		}
		for _, f := range c.rt.respAdd {
			b = appendFieldString(b, f.name, f.value)
		}
	}
	if rs.Status >= 200 || rs.Status == http.StatusSwitchingProtocols {
		if c.peered {
			b = appendFieldString(b, interceptor.PeerHeader, c.p.self)
		}
		switch {
		case rs.Status == http.StatusSwitchingProtocols:
			b = append(b, "Connection: Upgrade\r\n"...)
			b = appendField(b, []byte("Upgrade"), rs.Get("Upgrade"))
		case c.noResponseBody():
		case rs.Chunked:
			b = append(b, "Transfer-Encoding: chunked\r\n"...)
		case rs.ContentLength < 0:
			c.close = true // close-delimited: the end of the body is the close
		}
		if c.close || c.p.draining() {
			b = append(b, "Connection: close\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	c.out = b
	if rs.Status < 200 && rs.Status != http.StatusSwitchingProtocols {
		_, err := c.c.Write(b)
		return err
	}
	return nil // written with the first body bytes, by relay or tunnel
}

// noResponseBody: responses to HEAD, 1xx, 204 and 304 have no body (RFC
// 9112 §6.3).
func (c *h1conn) noResponseBody() bool {
	s := c.resp.Status
	return s < 200 || s == http.StatusNoContent || s == http.StatusNotModified || string(c.req.Method) == http.MethodHead
}

// relay writes the response to the client and returns the upstream
// connection to the pool when it ended cleanly; it reports whether the
// downstream connection stays usable.
func (c *h1conn) relay() bool {
	x, rs, uc := &c.x, &c.resp, c.uc
	c.uc = nil
	x.Status = rs.Status
	if v := rs.Get("Grpc-Status"); v != nil {
		x.SetGRPCStatus(b2s(v))
	}
	if err := c.writeResponseHead(); err != nil {
		uc.Close()
		return false
	}
	if rs.Status == http.StatusSwitchingProtocols {
		c.tunnel(uc)
		return false
	}
	buffered := c.up.b[c.up.r:c.up.w]
	var n int64
	var err error
	reuse := !rs.Close
	switch {
	case c.noResponseBody():
		_, err = c.c.Write(c.out)
		reuse = reuse && len(buffered) == 0
	case rs.Chunked:
		n, err = c.relayChunked(uc, buffered)
	case rs.ContentLength >= 0:
		n, err = c.relayLength(uc, buffered, rs.ContentLength)
	default:
		n, err = c.relayUntilClose(uc, buffered)
		reuse = false
	}
	x.ResponseBytes = n
	if err != nil {
		uc.Close()
		if errors.Is(err, errDownstream) {
			x.Flags |= interceptor.FlagDownstreamReset
		} else {
			x.Flags |= interceptor.FlagUpstreamReset
		}
		return false
	}
	if reuse && c.pump == nil && c.req.Minor == 1 {
		c.p.pool.put(uc)
	} else if reuse && c.pump != nil {
		c.reuse = uc // pooled once the request body is through, in finishBody
	} else {
		uc.Close()
	}
	return true
}

var errDownstream = errors.New("downstream write failed")

// relayLength relays a body of n bytes, the first of them in buffered.
func (c *h1conn) relayLength(uc *upConn, buffered []byte, n int64) (int64, error) {
	if int64(len(buffered)) >= n {
		if int64(len(buffered)) > n {
			return 0, fmt.Errorf("%w: bytes after the response body", interceptor.ErrBadResponse)
		}
		if len(buffered) <= inlineBody {
			c.out = append(c.out, buffered...)
			if _, err := c.c.Write(c.out); err != nil {
				return 0, errDownstream
			}
			return n, nil
		}
	}
	c.out = append(c.out, buffered...)
	if _, err := c.c.Write(c.out); err != nil {
		return 0, errDownstream
	}
	sent := int64(len(buffered))
	left := n - sent
	if left > spliceAbove {
		if dst, ok := c.c.(*net.TCPConn); ok {
			if src, ok := uc.Conn.(*net.TCPConn); ok {
				m, err := dst.ReadFrom(io.LimitReader(src, left))
				sent += m
				if err == nil && m < left {
					err = io.ErrUnexpectedEOF
				}
				return sent, err
			}
		}
	}
	for left > 0 {
		c.idleRead(uc)
		m, err := uc.Read(c.up.b[:min(int64(len(c.up.b)), left)])
		if m > 0 {
			if _, werr := c.c.Write(c.up.b[:m]); werr != nil {
				return sent, errDownstream
			}
			sent += int64(m)
			left -= int64(m)
		}
		if err != nil && left > 0 {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return sent, err
		}
	}
	return sent, nil
}

// idleRead bounds the next read of a streamed response body by the idle
// timeout, when the request has no deadline of its own (which bounds it
// already): a body that stalls is cut, not waited for.
func (c *h1conn) idleRead(uc *upConn) {
	if c.x.Deadline.IsZero() {
		uc.SetReadDeadline(time.Now().Add(c.p.opts.IdleTimeout)) //nolint:errcheck // a failed set shows on the read
	}
}

// relayChunked relays a chunked body as it came, framing, extensions and
// trailers included, and stops where its framing ends.
func (c *h1conn) relayChunked(uc *upConn, buffered []byte) (int64, error) {
	var ch wire.Chunked
	var sent int64
	chunk := buffered
	first := true
	for {
		n, done, err := ch.Scan(chunk)
		if err != nil {
			return sent, fmt.Errorf("%w: %w", interceptor.ErrBadResponse, err)
		}
		if first {
			c.out = append(c.out, chunk[:n]...)
			if _, err := c.c.Write(c.out); err != nil {
				return sent, errDownstream
			}
			first = false
		} else if n > 0 {
			if _, err := c.c.Write(chunk[:n]); err != nil {
				return sent, errDownstream
			}
		}
		sent += int64(n)
		if done {
			if n < len(chunk) {
				return sent, fmt.Errorf("%w: bytes after the response body", interceptor.ErrBadResponse)
			}
			return sent, nil
		}
		c.idleRead(uc)
		m, err := uc.Read(c.up.b)
		if m == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return sent, err
		}
		chunk = c.up.b[:m]
	}
}

// relayUntilClose relays a body that ends when the upstream closes.
func (c *h1conn) relayUntilClose(uc *upConn, buffered []byte) (int64, error) {
	c.out = append(c.out, buffered...)
	if _, err := c.c.Write(c.out); err != nil {
		return 0, errDownstream
	}
	sent := int64(len(buffered))
	for {
		c.idleRead(uc)
		m, err := uc.Read(c.up.b)
		if m > 0 {
			if _, werr := c.c.Write(c.up.b[:m]); werr != nil {
				return sent, errDownstream
			}
			sent += int64(m)
		}
		if errors.Is(err, io.EOF) {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
	}
}

// tunnel turns the connection into a two-way byte stream after a 101
// (WebSocket): bytes already read on either side go first.
func (c *h1conn) tunnel(uc *upConn) {
	defer uc.Close()
	c.out = append(c.out, c.up.b[c.up.r:c.up.w]...)
	if _, err := c.c.Write(c.out); err != nil {
		return
	}
	if rest := c.in.b[c.bodyEnd:c.in.w]; len(rest) > 0 {
		if _, err := uc.Write(rest); err != nil {
			return
		}
	}
	c.in.r, c.in.w = 0, 0
	done := make(chan struct{})
	go func() {
		io.Copy(uc.Conn, c.src) //nolint:errcheck // either side closing ends the tunnel
		closeWrite(uc.Conn)
		close(done)
	}()
	n, _ := io.Copy(c.c, uc.Conn) //nolint:errcheck // either side closing ends the tunnel
	c.x.ResponseBytes += n
	closeWrite(c.c)
	<-done
}

// pick chooses an endpoint for a try: not ejected and not tried before,
// when the picker offers one; otherwise the first it offers (Envoy's
// "panic mode": better a doubtful endpoint than none).
func (p *Proxy) pick(cl *Cluster, h uint64, tried []netip.AddrPort) *balancer.Endpoint {
	now := time.Now().UnixNano()
	var first *balancer.Endpoint
	for i := range len(cl.Endpoints) + 1 {
		// Hashing pickers move off an excluded endpoint with the key.
		ep := cl.Picker.Pick(h + uint64(i)*0x9e3779b97f4a7c15)
		if ep == nil {
			return nil
		}
		if first == nil {
			first = ep
		}
		if !ep.Stats.Ejected(now) && ep.Stats.HeldUntil.Load() <= now && !slices.Contains(tried, ep.Addr) {
			return ep
		}
	}
	return first
}

// refusedHold is how long an endpoint that refused a connection stays
// out of the picks: nothing listens at its address, so its pod is
// stopping (or not started), and the control plane's word of it is on
// its way. Without it, every request until then would try it first.
const refusedHold = 2 * time.Second

// connectFailed records a failed connect at an endpoint; a refused one
// is also held out of the picks (hold).
func (p *Proxy) connectFailed(cl *Cluster, ep *balancer.Endpoint, err error) {
	p.outcome(cl, ep, 0, true)
	if errors.Is(err, syscall.ECONNREFUSED) {
		hold(ep)
	}
}

// hold takes an endpoint out of the picks for refusedHold: it refused a
// connection, or its sidecar said its app did. pick falls back to it when
// nothing else is left.
func hold(ep *balancer.Endpoint) {
	if ep == nil {
		return
	}
	until := time.Now().Add(refusedHold).UnixNano()
	for {
		old := ep.Stats.HeldUntil.Load()
		if old >= until || ep.Stats.HeldUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// outcome records one try's result at an endpoint: the failure count,
// and outlier detection. status 0 with connectFailed: the connect failed;
// status 0 without: the try ended for the client's sake, not the
// endpoint's, and counts nothing. HTTP/1.1, HTTP/2 and TCP all report
// here.
func (p *Proxy) outcome(cl *Cluster, ep *balancer.Endpoint, status int, connectFailed bool) {
	if ep == nil || cl == nil {
		return
	}
	if status >= 500 || connectFailed {
		ep.Stats.Failed.Add(1)
	}
	if cl.Outlier != nil && (status != 0 || connectFailed) {
		cl.Outlier.RecordOutcome(cl.OutlierClock, ep.Stats, cl.Endpoints, status, connectFailed, time.Now(), func(e *balancer.Endpoint) {
			p.opts.Resilience.Ejection(cl.Host)
			p.opts.Logger.Info("outlier ejected", "cluster", cl.Name, "endpoint", e.Addr,
				"ejections", e.Stats.Ejections.Load(), "until", time.Unix(0, e.Stats.EjectedUntil.Load()))
		})
	}
}

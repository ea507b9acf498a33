package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/proxy/http1/wire"
)

// The HTTP/1.1 engine: one goroutine per downstream connection runs a
// synchronous loop (read a request head into the connection's buffer,
// index its fields in place, route, run the interceptor chain, whose
// innermost handler forwards one try over a pooled upstream connection and
// reads the response head, then relay the response body). Heads are
// edited as they are written out, never rebuilt as maps; small bodies
// leave with their head in one write. No goroutine, timer or context is
// made per request on this path; a request body that is large, chunked or
// waits for 100-continue is copied by a goroutine of its own, so the
// upstream may answer while it still reads.

// Engine limits.
const (
	h1BufSize = 16 << 10
	// inlineBody: a body up to this size is written with its head.
	inlineBody = 16 << 10
	// wholeBody: a request body up to this size (with a length, no
	// 100-continue) is read whole before it is forwarded, so it can be
	// sent again by a retry.
	wholeBody = interceptor.MaxReplayBytes
	// maxResponseHead bounds an upstream's response head.
	maxResponseHead = 64 << 10
	// pumpGrace is how long a request body may go on after its response
	// ended before the connection is given up.
	pumpGrace = 100 * time.Millisecond
	// spliceAbove: bodies larger than this are copied by the kernel
	// (splice) when both sides are plain TCP.
	spliceAbove = 64 << 10
)

// Connection states, for draining.
const (
	connIdle int32 = iota
	connActive
	connClosed
)

// h1conn is one downstream HTTP/1.x connection and what its current
// request needs.
type h1conn struct {
	p     *Proxy
	sc    *sniffedConn
	c     net.Conn
	src   io.Reader // c, after the bytes sniffing buffered
	dir   Direction
	state atomic.Int32
	raddr string
	// upNow is the upstream connection in use, for a forced close.
	upNow atomic.Pointer[upConn]

	in, up buffer  // downstream and upstream bytes
	upBuf  *[]byte // up's buffer, from bufPool while a request is forwarded
	req    wire.Head
	resp   wire.Head
	view   h1Request
	rv     h1Response
	body   h1Body
	x      interceptor.Exchange
	chain  interceptor.Handler
	out    []byte // the head (and small body) being written

	// The current request.
	cl      *Cluster
	rt      *routeEntry             // the route it matched, if its service has routes
	reply   *interceptor.LocalReply // routing answers it itself
	headLen int                     // the request head is in.b[:headLen]
	bodyEnd int                     // with a whole body: it ends at in.b[bodyEnd]
	whole   bool
	pump    *bodyPump
	reuse   *upConn // to pool once the pump is done
	uc      *upConn
	ep      *balancer.Endpoint
	peered  bool
	close   bool // close the downstream connection after this response
}

// buffer is a read buffer: bytes b[r:w] are unread.
type buffer struct {
	b    []byte
	r, w int
}

// fill reads more into b[w:], growing b up to limit when it is full.
func (b *buffer) fill(src io.Reader, limit int) (int, error) {
	if b.w == len(b.b) {
		if len(b.b) >= limit {
			return 0, errHeadTooLarge
		}
		nb := make([]byte, min(2*len(b.b), limit))
		copy(nb, b.b[:b.w])
		b.b = nb
	}
	n, err := src.Read(b.b[b.w:])
	b.w += n
	return n, err
}

// compact moves the unread bytes to the front.
func (b *buffer) compact() {
	if b.r > 0 {
		b.w = copy(b.b, b.b[b.r:b.w])
		b.r = 0
	}
}

var errHeadTooLarge = errors.New("head too large")

// serveHTTP1 runs the engine on one downstream connection until it closes.
func (p *Proxy) serveHTTP1(sc *sniffedConn) {
	c := &h1conn{p: p, sc: sc, c: sc.Conn, src: sc.br, dir: sc.dir, raddr: sc.Conn.RemoteAddr().String()}
	c.in.b = getBuf()
	// Take over what sniffing buffered and read the connection directly
	// from now on: no second copy, and the sniffing buffer goes.
	if n := sc.br.Buffered(); n > 0 {
		b, _ := sc.br.Peek(n) //nolint:errcheck // n bytes are buffered
		c.in.w = copy(c.in.b, b)
	}
	c.src, sc.br = sc.Conn, nil
	c.out = make([]byte, 0, 1024)
	c.view.c, c.rv.c, c.body.c = c, c, c
	c.chain = p.chain(interceptor.HandlerFunc(c.try))
	if !p.track(c) {
		c.c.Close()
		return
	}
	defer func() {
		p.untrack(c)
		c.c.Close()
		if c.uc != nil {
			c.uc.Close()
		}
		putBuf(c.in.b)
		c.releaseUp()
	}()
	for c.serveOne() {
	}
}

// serveOne reads and answers one request; it reports whether the
// connection stays open for another.
func (c *h1conn) serveOne() bool {
	p := c.p
	if p.draining() {
		return false // Shutdown may have passed while this one was busy
	}
	c.in.compact()
	if len(c.in.b) > h1BufSize && c.in.w <= h1BufSize {
		// A large head or body grew the buffer: back to a pooled one.
		b := getBuf()
		c.in.w = copy(b, c.in.b[:c.in.w])
		c.in.b = b
	}
	// Idle until the first byte, then the head must come within the
	// header timeout.
	if c.in.w == 0 {
		c.c.SetReadDeadline(time.Now().Add(p.opts.IdleTimeout)) //nolint:errcheck // a failed set shows on the read
		if _, err := c.in.fill(c.src, p.opts.MaxHeaderBytes); err != nil && c.in.w == 0 {
			return false // closed or idle: nothing to answer
		}
	}
	if !c.state.CompareAndSwap(connIdle, connActive) {
		return false // drained
	}
	defer c.state.CompareAndSwap(connActive, connIdle)
	c.c.SetReadDeadline(time.Now().Add(p.opts.HeaderTimeout)) //nolint:errcheck // a failed set shows on the read
	for {
		n, err := c.req.ParseRequest(c.in.b[:c.in.w])
		if err == nil {
			c.headLen = n
			break
		}
		if !errors.Is(err, wire.ErrIncomplete) {
			return c.refuse(err)
		}
		if c.in.w >= p.opts.MaxHeaderBytes {
			return c.refuse(wire.ErrTooManyHeaders)
		}
		if _, err := c.in.fill(c.src, p.opts.MaxHeaderBytes); err != nil {
			if errors.Is(err, errHeadTooLarge) {
				return c.refuse(wire.ErrTooManyHeaders)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.writeRaw(http.StatusRequestTimeout, "request head not received in time")
			}
			return false
		}
	}
	c.c.SetReadDeadline(time.Time{}) //nolint:errcheck // a failed reset shows on the next read
	p.Stats.Requests[c.dir].Add(1)
	return c.serveRequest()
}

// refuse answers a request head that does not parse, and closes.
func (c *h1conn) refuse(err error) bool {
	c.p.Stats.BadRequests.Add(1)
	switch {
	case errors.Is(err, wire.ErrTooManyHeaders):
		c.writeRaw(http.StatusRequestHeaderFieldsTooLarge, "request header fields too large")
	case errors.Is(err, wire.ErrTransferEncoding):
		c.writeRaw(http.StatusNotImplemented, "unsupported transfer encoding")
	default:
		c.p.opts.Logger.Debug("bad request refused", "remote", c.raddr, "err", err)
		c.writeRaw(http.StatusBadRequest, "bad request")
	}
	return false
}

// writeRaw answers without an exchange (a head that did not parse).
func (c *h1conn) writeRaw(code int, msg string) {
	c.out = appendLocal(c.out[:0], &interceptor.LocalReply{Status: code, Message: msg}, true)
	c.c.Write(c.out) //nolint:errcheck // closing anyway
}

// serveRequest routes the parsed request, runs the chain and relays the
// answer.
func (c *h1conn) serveRequest() bool {
	p, x, rq := c.p, &c.x, &c.req
	x.Reset()
	x.Start = time.Now()
	x.Downstream = c.raddr
	x.Req, x.Body = &c.view, &c.body
	c.view.reset()
	c.cl, c.rt, c.reply, c.pump, c.ep, c.peered, c.whole = nil, nil, nil, nil, nil, false, false
	c.close = rq.Close || rq.Minor == 0
	c.bodyEnd = c.headLen
	r := p.route(x, c.dir, c.sc)
	c.cl, c.peered, c.rt, c.reply = r.cl, r.peered, r.entry, r.reply
	// No h2c upgrade through the sidecar: the upgraded stream would
	// escape the per-request checks (as Envoy refuses it). Nor an upgrade
	// of a request whose body is still coming (the tunnel would race the
	// body's copy).
	if rq.Upgrade && (rq.HasToken("Upgrade", "h2c") || rq.Chunked || rq.ContentLength > 0 || rq.Expect100) {
		rq.Upgrade = false
		c.view.DelHeader("Upgrade")
		c.view.DelHeader("Http2-Settings")
	}
	if string(rq.Method) == http.MethodConnect {
		// A tunnel to anywhere: not through a sidecar (Envoy refuses it
		// unless configured).
		c.close = true
		c.x.Status = http.StatusMethodNotAllowed
		c.writeLocal(interceptor.Reply(http.StatusMethodNotAllowed, "CONNECT is not proxied"))
		x.Finish()
		return false
	}
	// A chunked body is checked as far as it came before anything is
	// forwarded: a malformed chunk in the first read never reaches the
	// upstream (one later ends both connections mid-body).
	if rq.Chunked {
		var ch wire.Chunked
		n, done, err := ch.Scan(c.in.b[c.headLen:c.in.w])
		if err != nil {
			return c.refuse(err)
		}
		// A chunked body that came whole with its head (a small one, as
		// most clients write it) is kept whole too: it leaves with its
		// head, as it came, and a retry can send it again.
		if done && !rq.Expect100 {
			c.whole, c.bodyEnd = true, c.headLen+n
			c.x.AddRequestBytes(int64(n))
		}
	}
	// A small body with a length is read whole: it leaves with its head
	// and a retry can send it again.
	if cl := rq.ContentLength; !rq.Chunked && cl > 0 && cl <= wholeBody && !rq.Expect100 {
		if !c.readWholeBody(int(cl)) {
			return false
		}
	} else if !rq.Chunked && cl <= 0 {
		c.whole = true
	}

	if c.rt != nil && c.rt.mirrors != nil && c.reply == nil {
		c.mirror()
	}
	resp, err := c.chain.Handle(x)
	if err != nil {
		if lr := interceptor.ReplyFor(x, err, p.opts.Resilience); lr != nil {
			resp = lr
		} else {
			c.close = true
		}
	}
	keep := false
	switch r := resp.(type) {
	case *h1Response:
		keep = c.relay()
	case *interceptor.LocalReply:
		keep = c.writeLocal(r)
	}
	if c.ep != nil {
		c.ep.Stats.Active.Add(-1)
		c.ep = nil
	}
	keep = c.finishBody() && keep
	c.releaseUp()
	x.Finish()
	if !keep || c.close || p.draining() {
		return false
	}
	c.in.r = c.bodyEnd
	return true
}

// readWholeBody reads a body of n bytes into the buffer after the head.
func (c *h1conn) readWholeBody(n int) bool {
	need := c.headLen + n
	if need > len(c.in.b) {
		nb := make([]byte, need)
		copy(nb, c.in.b[:c.in.w])
		// The old buffer is dropped, not pooled: strings the chain took
		// from the head point into it until the exchange ends.
		c.in.b = nb
		// The head's fields point into the old buffer: parse it again.
		if _, err := c.req.ParseRequest(c.in.b[:c.in.w]); err != nil {
			return false
		}
	}
	c.c.SetReadDeadline(time.Now().Add(c.p.opts.HeaderTimeout)) //nolint:errcheck // a failed set shows on the read
	for c.in.w < need {
		if _, err := c.in.fill(c.src, len(c.in.b)); err != nil {
			return false
		}
	}
	c.c.SetReadDeadline(time.Time{}) //nolint:errcheck // a failed reset shows on the next read
	c.whole = true
	c.bodyEnd = need
	c.x.AddRequestBytes(int64(n))
	return true
}

// finishBody waits for a streamed request body to end; it reports
// whether the connection can carry another request (the body was read to
// its end).
func (c *h1conn) finishBody() bool {
	if c.pump == nil {
		return true
	}
	pm, reuse := c.pump, c.reuse
	c.pump, c.reuse = nil, nil
	t := time.NewTimer(pumpGrace)
	select {
	case <-pm.done:
		t.Stop()
	case <-t.C:
		// The response ended and the request body did not: unblock the
		// copy and give up on both connections.
		c.c.SetReadDeadline(time.Unix(1, 0)) //nolint:errcheck // best effort
		pm.uc.Close()
		<-pm.done
		c.x.AddRequestBytes(pm.n)
		return false
	}
	c.x.AddRequestBytes(pm.n)
	if pm.err != nil {
		if reuse != nil {
			reuse.Close()
		}
		return false
	}
	if reuse != nil {
		c.p.pool.put(reuse)
	}
	c.bodyEnd = pm.end
	return true
}

// releaseUp returns the upstream read buffer between requests: a
// connection only holds one while it forwards (refused requests and idle
// keep-alive connections do not).
func (c *h1conn) releaseUp() {
	if c.upBuf != nil {
		bufPool.put(c.upBuf) // its own slice, even if up grew past it
		c.upBuf, c.up.b, c.up.r, c.up.w = nil, nil, 0, 0
	}
}

// closeBoth closes the downstream connection and the upstream one in
// use (drain deadline).
func (c *h1conn) closeBoth() {
	c.c.Close()
	if u := c.upNow.Load(); u != nil {
		u.Close()
	}
}

// track registers a connection for draining; false when draining began.
func (p *Proxy) track(c *h1conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.h1conns[c] = struct{}{}
	p.h1WG.Add(1)
	return true
}

func (p *Proxy) untrack(c *h1conn) {
	p.mu.Lock()
	delete(p.h1conns, c)
	p.mu.Unlock()
	p.h1WG.Done()
}

func (p *Proxy) draining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// b2s views b as a string without copying; the string is valid while b
// is unchanged (Request's contract: until the exchange ends).
func b2s(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// appendLocal renders a local reply: the status, X-Tender-Error, a
// redirect's Location and a text body.
func appendLocal(b []byte, r *interceptor.LocalReply, closing bool) []byte {
	code, msg := r.Status, r.Message
	body := "tender: " + msg + "\n"
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Tender-Error: "...)
	b = appendSafe(b, msg)
	if r.Location != "" {
		b = append(b, "\r\nLocation: "...)
		b = appendSafe(b, r.Location)
	}
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if closing {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// appendSafe appends s without the bytes a field value cannot hold.
func appendSafe(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c >= 0x20 && c != 0x7f || c == '\t' {
			b = append(b, c)
		}
	}
	return b
}

// writeLocal answers with the proxy's own reply.
func (c *h1conn) writeLocal(r *interceptor.LocalReply) bool {
	c.x.Status = r.Status
	// A request body not read yet makes the connection unusable.
	closing := c.close || !c.whole
	c.out = appendLocal(c.out[:0], r, closing)
	if _, err := c.c.Write(c.out); err != nil {
		c.x.Flags |= interceptor.FlagDownstreamReset
		return false
	}
	return !closing
}

// bufPool holds the engine's connection buffers.
var bufPool = newBufPool()

func getBuf() []byte { return *bufPool.get() }

// putBuf returns a 16 KiB buffer to the pool; others are dropped.
func putBuf(b []byte) {
	if cap(b) == h1BufSize {
		bufPool.put(&b)
	}
}

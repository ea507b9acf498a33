package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// h2half is one direction of a stream: what its source sent that its
// destination has not taken yet, and the windows on both sides.
type h2half struct {
	buf      []byte // from off: bytes waiting for the destination
	off      int
	end      bool // the source ended its side
	trailers []hpack.HeaderField
	endSent  bool
	reset    bool  // the direction ended by RST_STREAM
	win      int64 // the destination's window for this stream
	recv     int64 // what the source may still send
	credit   int64 // stream credit not yet handed back to the source
	sent     int64 // body bytes passed on (this try)
}

func (h *h2half) pending() int { return len(h.buf) - h.off }

// push queues data behind what waits. When the buffer is full, the bytes
// already passed on make room first: what waits is bounded by the window
// the source got, and so is the buffer (a reader that never quite
// catches up must not make it grow with everything that went through).
func (h *h2half) push(data []byte) {
	if h.off > 0 && len(h.buf)+len(data) > cap(h.buf) {
		n := copy(h.buf, h.buf[h.off:])
		h.buf, h.off = h.buf[:n], 0
	}
	h.buf = append(h.buf, data...)
}

// h2stream is one HTTP/2 stream through the proxy: a downstream stream
// and, per try, one on an upstream connection. Its goroutine runs the
// interceptor chain and waits for the stream's end; the connections'
// readers pass its frames on.
type h2stream struct {
	p     *Proxy
	down  *h2conn
	d     Direction
	sc    *sniffedConn
	id    uint32 // the downstream stream
	chain interceptor.Handler

	method, scheme, authority, path string // path with the query
	fields                          []hpack.HeaderField
	contentLength                   int64 // -1: none declared
	tooLarge                        bool  // the head went beyond the limit: 431
	x                               interceptor.Exchange
	view                            h2req
	rv                              h2resp
	cl                              *Cluster
	rt                              *routeEntry             // the route it matched, if its service has routes
	reply                           *interceptor.LocalReply // routing answers it itself
	ep                              *balancer.Endpoint
	peered                          bool
	timer                           *time.Timer

	wakeCh chan struct{}

	mu       sync.Mutex
	req      h2half // downstream → upstream
	resp     h2half // upstream → downstream
	up       *h2conn
	upID     uint32
	received int64 // request body bytes received
	credited int64 // request bytes handed back to the downstream
	replay   []byte
	replayOK bool
	// The current try's answer.
	head      []hpack.HeaderField
	status    int
	statusRaw string
	headEnd   bool
	gotHead   bool
	upErr     error
	refused   bool // the upstream did not process the stream: safe to send again
	committed bool // the response head went downstream
	// reqCut: the upstream reset its stream after a complete answer,
	// which asks for no more of the request (RFC 9113 §8.1); what the
	// client still sends is dropped.
	reqCut bool
	// finished: the stream is being forgotten (cleanup).
	finished  bool
	downGone  bool // the client reset the stream, or its connection closed
	respBytes int64
	upCode    http2.ErrCode // how the upstream reset the stream
}

// errRefusedStream: the upstream did not process the stream (GOAWAY, or
// REFUSED_STREAM).
var errRefusedStream = errors.New("stream refused by upstream")

func (s *h2stream) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// run is the stream's goroutine: route, run the chain, send the answer,
// wait for the stream's end.
func (s *h2stream) run() {
	p, x := s.p, &s.x
	defer s.cleanup()
	p.Stats.Requests[s.d].Add(1)
	x.Start = time.Now()
	x.Downstream = s.down.remote
	x.Req = &s.view
	r := p.route(x, s.d, s.sc)
	s.cl, s.peered, s.rt, s.reply = r.cl, r.peered, r.entry, r.reply
	if s.rt != nil && s.rt.mirrors != nil && s.reply == nil {
		p.Stats.MirrorsSkipped.Add(1) // HTTP/2 requests are not mirrored yet
	}
	x.GRPC = interceptor.IsGRPC(&s.view)
	s.mu.Lock()
	if !s.req.end {
		x.Body = s
	}
	s.mu.Unlock()
	var resp interceptor.Response
	var err error
	switch {
	case s.tooLarge:
		p.Stats.BadRequests.Add(1)
		resp = interceptor.Reply(http.StatusRequestHeaderFieldsTooLarge, "request header fields too large")
	case s.method == http.MethodConnect:
		resp = interceptor.Reply(http.StatusMethodNotAllowed, "CONNECT is not proxied")
	default:
		resp, err = s.chain.Handle(x)
	}
	if err != nil {
		resp = nil
		if lr := interceptor.ReplyFor(x, err, p.opts.Resilience); lr != nil {
			resp = lr
		}
	}
	switch r := resp.(type) {
	case *h2resp:
		s.commit()
		s.waitEnd()
	case *interceptor.LocalReply:
		x.Status = r.Status
		s.writeLocal(r)
	default: // the client went away
		s.resetDown(http2.ErrCodeCancel)
	}
	if s.ep != nil {
		s.ep.Stats.Active.Add(-1)
		s.ep = nil
	}
	s.mu.Lock()
	x.ResponseBytes = s.respBytes
	s.mu.Unlock()
	x.Finish()
}

// cleanup forgets the stream on both connections.
func (s *h2stream) cleanup() {
	s.detach(http2.ErrCodeCancel)
	s.mu.Lock()
	if !s.req.end && !s.req.reset && !s.downGone && !s.resp.reset {
		// The answer is complete; the client need not send the rest.
		s.down.mu.Lock()
		s.down.reset(s.id, http2.ErrCodeNo)
		s.down.mu.Unlock()
	}
	s.finished = true // DATA that still comes is dropped
	s.req.buf, s.resp.buf, s.replay = nil, nil, nil
	s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.down.endStream(s)
}

// try sends one try of the stream to an endpoint and waits for its
// response head.
func (s *h2stream) try(x *interceptor.Exchange) (interceptor.Response, error) {
	p := s.p
	if s.reply != nil {
		return s.reply, nil
	}
	var hashKey string
	if s.cl != nil && s.cl.Hashing {
		hashKey = s.view.Header(s.cl.HashHeader)
		if s.cl.HashHeader == "" {
			hashKey, _, _ = net.SplitHostPort(s.down.remote)
		}
	}
	key, ep, err := p.choose(x, s.cl, hashKey)
	if err != nil {
		return nil, err
	}
	if s.ep != nil {
		s.ep.Stats.Active.Add(-1)
	}
	s.ep = ep
	if ep != nil {
		ep.Stats.Active.Add(1)
		ep.Stats.Total.Add(1)
	}
	if x.GRPC && !x.Deadline.IsZero() {
		// The upstream gets what is left of the deadline.
		s.view.SetHeader("grpc-timeout", interceptor.FormatGRPCTimeout(time.Until(x.Deadline)))
	}
	var deadline time.Time
	switch {
	case x.TryDeadline.IsZero():
		deadline = x.Deadline
	case x.Deadline.IsZero() || x.TryDeadline.Before(x.Deadline):
		deadline = x.TryDeadline
	default:
		deadline = x.Deadline
	}
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		if s.timer == nil {
			s.timer = time.NewTimer(time.Until(deadline))
		} else {
			s.timer.Reset(time.Until(deadline))
		}
		timeout = s.timer.C
		defer s.timer.Stop()
	}
	outbound := x.Direction == interceptor.Outbound
	// A stream the upstream refused unprocessed (GOAWAY, REFUSED_STREAM,
	// a connection lost before it was written) goes again on another
	// connection, retry policy or not: it never reached the app.
	for again := 0; ; again++ {
		up, err := p.h2pool.get(p, key)
		if err != nil {
			p.connectFailed(s.cl, ep, err)
			return nil, fmt.Errorf("%w: %w", interceptor.ErrConnect, err)
		}
		if outbound { // inbound, MTLS is the downstream hop's
			x.MTLS, x.DestinationPrincipal = key.mesh.on, up.peerID
		}
		if err := s.open(up); err != nil {
			if errors.Is(err, errRefusedStream) && again < 3 {
				continue
			}
			p.outcome(s.cl, ep, http.StatusServiceUnavailable, false)
			return nil, fmt.Errorf("%w: %w", interceptor.ErrReset, err)
		}
		err = s.awaitHead(timeout)
		if err == nil {
			break
		}
		s.detach(http2.ErrCodeCancel)
		switch {
		case errors.Is(err, errRefusedStream) && again < 3 && s.canResend():
			continue
		case errors.Is(err, interceptor.ErrClientGone):
			p.outcome(s.cl, ep, 0, false)
			return nil, err
		case errors.Is(err, interceptor.ErrTimeout):
			if !x.Expired() {
				p.outcome(s.cl, ep, http.StatusGatewayTimeout, false)
				return nil, interceptor.ErrPerTryTimeout
			}
			return nil, interceptor.ErrTimeout
		case errors.Is(err, interceptor.ErrBadResponse):
			p.outcome(s.cl, ep, http.StatusBadGateway, false)
			return nil, err
		}
		p.outcome(s.cl, ep, http.StatusServiceUnavailable, false)
		return nil, fmt.Errorf("%w: %w", interceptor.ErrReset, err)
	}
	if outbound && s.cl != nil { // only a mesh service's sidecar answers with one
		if v := s.rv.Header(interceptor.PeerHeader); v != "" {
			if peer, ok := p.peerClaim(v, x.DestinationPrincipal, x.MTLS); ok {
				x.Destination = interceptor.Peer{Workload: strings.Clone(peer.Workload), Namespace: strings.Clone(peer.Namespace)}
			}
		}
	}
	status := s.status
	if s.headEnd && s.rv.Header("grpc-status") == "14" { // UNAVAILABLE, trailers-only
		status = http.StatusServiceUnavailable
	}
	if outbound && s.cl != nil && status == http.StatusServiceUnavailable {
		if x.Unprocessed = interceptor.PeerUnprocessed(x.MTLS, status, s.rv.Header(peerHeaderLower), s.rv.Header(errorHeaderLower)); x.Unprocessed {
			hold(ep)
		}
	}
	if s.status >= 500 {
		p.Stats.Upstream5xx.Add(1)
	}
	p.outcome(s.cl, ep, status, false)
	return &s.rv, nil
}

// awaitHead waits for the try's response head.
func (s *h2stream) awaitHead(timeout <-chan time.Time) error {
	for {
		s.mu.Lock()
		got, upErr, gone, refused := s.gotHead, s.upErr, s.downGone, s.refused
		s.mu.Unlock()
		switch {
		case gone:
			return interceptor.ErrClientGone
		case got:
			return nil
		case upErr != nil && refused:
			return errRefusedStream
		case upErr != nil:
			return upErr
		}
		select {
		case <-s.wakeCh:
		case <-timeout:
			return interceptor.ErrTimeout
		}
	}
}

// canResend reports whether the request can go again from its start.
func (s *h2stream) canResend() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.req.sent == 0 || s.replayOK
}

// open starts a try on up: the request head, and what there is of the
// body.
func (s *h2stream) open(up *h2conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.downGone {
		return interceptor.ErrClientGone
	}
	if s.req.sent > 0 { // an earlier try took some: all of it again
		if !s.replayOK {
			return errors.New("request body cannot be sent again")
		}
		s.req.buf, s.req.off = append(s.req.buf[:0], s.replay...), 0
	}
	s.req.sent, s.req.endSent, s.reqCut = 0, false, false
	s.resp = h2half{recv: h2StreamWindow, win: s.resp.win} // the window is the client's stream's
	s.head, s.status, s.statusRaw, s.headEnd, s.gotHead, s.upErr, s.refused, s.upCode = nil, 0, "", false, false, nil, false, 0
	up.mu.Lock()
	if up.closed || up.goaway || up.active >= int(up.peerStreams) || up.nextID >= 1<<31 {
		up.goaway = up.goaway || up.nextID >= 1<<31
		up.mu.Unlock()
		return errRefusedStream
	}
	id := up.nextID
	up.nextID += 2
	up.streams[id] = s
	up.activate()
	s.up, s.upID = up, id
	s.req.win = int64(up.peerInitWin)
	end := s.req.end && s.req.pending() == 0 && s.req.trailers == nil
	pseudo := [4]hpack.HeaderField{
		{Name: ":method", Value: s.method},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: s.authority},
		{Name: ":path", Value: s.path},
	}
	up.writeHeaders(id, end, pseudo[:], s.fields)
	up.mu.Unlock()
	if end {
		s.req.endSent = true
	}
	s.flushReqLocked()
	return nil
}

// detach ends the current try's upstream stream (reset when it is
// still open) and forgets it; mu is not held.
func (s *h2stream) detach(code http2.ErrCode) {
	s.mu.Lock()
	up, id := s.up, s.upID
	open := up != nil && (!s.resp.end || !s.req.endSent) && !s.resp.reset && !s.reqCut
	s.up, s.upID = nil, 0
	s.resp.buf, s.resp.off = s.resp.buf[:0], 0
	s.mu.Unlock()
	if up == nil {
		return
	}
	up.mu.Lock()
	if open {
		up.reset(id, code)
	}
	if up.streams[id] == s {
		delete(up.streams, id)
		up.deactivate()
	}
	done := up.goaway && up.active == 0
	up.mu.Unlock()
	if done {
		up.fail(io.EOF)
	}
}

// Rewind readies the body for another try: it can when all of it so far
// fits in the replay record.
func (s *h2stream) Rewind() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replayOK
}

// flushReqLocked sends the request's waiting bytes upstream and hands
// back window for what left; mu is held.
func (s *h2stream) flushReqLocked() {
	if s.up == nil || s.reqCut {
		return
	}
	s.pumpLocked(&s.req, s.up, s.upID)
	if over := s.req.sent - s.credited; over > 0 {
		s.credited += over
		s.req.recv += over
		id := s.id
		if s.req.end {
			id = 0
		}
		s.down.creditStream(id, over, &s.req.credit)
	}
}

// flushRespLocked sends the response's waiting bytes downstream; mu is
// held.
func (s *h2stream) flushRespLocked() {
	if !s.committed {
		return
	}
	before := s.resp.sent
	s.pumpLocked(&s.resp, s.down, s.id)
	if n := s.resp.sent - before; n > 0 && s.up != nil {
		s.resp.recv += n
		id := s.upID
		if s.resp.end {
			id = 0
		}
		s.up.creditStream(id, n, &s.resp.credit)
	}
	if s.resp.endSent || s.resp.reset {
		s.wake()
	}
}

// pumpLocked sends what h holds to dst's stream dstID as the windows and
// dst's writer allow, then the end of the direction; mu is held.
func (s *h2stream) pumpLocked(h *h2half, dst *h2conn, dstID uint32) {
	if h.endSent || h.reset {
		return
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.closed {
		return
	}
	wrote := false
	for h.pending() > 0 {
		k := min(int64(h.pending()), h.win, dst.sendConn, int64(dst.peerMaxFrame), int64(h2OutHigh-len(dst.out)))
		if k <= 0 {
			dst.block(s)
			break
		}
		p := h.buf[h.off : h.off+int(k)]
		end := h.end && h.trailers == nil && int(k) == h.pending()
		dst.wfr.WriteData(dstID, end, p) //nolint:errcheck // into memory
		h.off += int(k)
		h.win -= k
		h.sent += k
		dst.sendConn -= k
		wrote = true
		if end {
			h.endSent = true
		}
	}
	if h.pending() == 0 {
		h.buf, h.off = h.buf[:0], 0
		if !h.endSent && h.end {
			if h.trailers != nil {
				dst.writeHeaders(dstID, true, nil, h.trailers)
			} else {
				dst.wfr.WriteData(dstID, true, nil) //nolint:errcheck // into memory
			}
			h.endSent, wrote = true, true
		}
	}
	if wrote {
		dst.signal()
	}
}

// take queues a DATA frame's bytes on h and sends what the windows let
// through; mu is held. Bytes that can go at once are not copied.
func (s *h2stream) take(h *h2half, data []byte, flush func()) {
	if h.pending() > 0 || flush == nil {
		h.push(data)
		if flush != nil {
			flush()
		}
		return
	}
	own := h.buf
	h.buf, h.off = data, 0
	flush()
	rest := h.buf[h.off:]
	h.buf, h.off = append(own[:0], rest...), 0
}

// pumpTo resumes a direction that waited for hc's window or writer.
func (s *h2stream) pumpTo(hc *h2conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch hc {
	case s.up:
		s.flushReqLocked()
	case s.down:
		s.flushRespLocked()
	}
}

// block records that s waits for hc's window; hc.mu is held.
func (hc *h2conn) block(s *h2stream) {
	if hc.blocked == nil {
		hc.blocked = map[*h2stream]struct{}{}
	}
	hc.blocked[s] = struct{}{}
}

// onReqData takes a DATA frame of the request from the downstream.
func (s *h2stream) onReqData(f *http2.DataFrame) error {
	data := f.Data()
	s.mu.Lock()
	defer s.mu.Unlock()
	pad := int64(f.Length) - int64(len(data))
	if s.finished {
		return nil // the stream is being forgotten
	}
	if s.req.end || s.req.reset {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	s.req.recv -= int64(f.Length)
	if s.req.recv < 0 {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl}
	}
	if s.reqCut { // the upstream wants no more of it: dropped, so no retry
		s.req.recv += int64(f.Length)
		s.down.creditStream(s.id, int64(f.Length), &s.req.credit)
		s.replayOK, s.replay = false, nil
		if f.StreamEnded() {
			s.req.end = true
		}
		return nil
	}
	s.received += int64(len(data))
	s.x.AddRequestBytes(int64(len(data)))
	if s.contentLength >= 0 && (s.received > s.contentLength || f.StreamEnded() && s.received != s.contentLength) {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if s.replayOK && !s.committed {
		if len(s.replay)+len(data) <= interceptor.MaxReplayBytes {
			s.replay = append(s.replay, data...)
		} else {
			s.replayOK, s.replay = false, nil
		}
	}
	if f.StreamEnded() {
		s.req.end = true
	}
	var flush func()
	if s.up != nil {
		flush = s.flushReqLocked
	}
	s.take(&s.req, data, flush)
	if pad > 0 {
		s.req.recv += pad
		s.down.creditStream(s.id, pad, &s.req.credit)
	}
	return nil
}

// onReqTrailers takes the request's trailers.
func (s *h2stream) onReqTrailers(f *http2.MetaHeadersFrame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.req.end || s.req.reset {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if s.contentLength >= 0 && s.received != s.contentLength {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	s.req.trailers, s.req.end = f.RegularFields(), true
	s.flushReqLocked()
	return nil
}

// onWindow takes a stream's WINDOW_UPDATE from hc. Past 2^31-1 it is
// the stream's flow-control error (the upstream side's caller resets its
// own stream on any error).
func (s *h2stream) onWindow(hc *h2conn, inc uint32) error {
	if !s.growWindow(hc, int64(inc)) {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl}
	}
	return nil
}

// adjustWindow applies a change of the peer's initial window to this
// stream; past 2^31-1 it is a connection error (RFC 9113 §6.9.2).
func (s *h2stream) adjustWindow(hc *h2conn, delta int32) error {
	if !s.growWindow(hc, int64(delta)) {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	return nil
}

// growWindow adds delta to the window of the direction that sends to hc
// and sends what it lets through. It reports false when the window went
// past 2^31-1; a connection the stream no longer uses (an earlier try's)
// changes nothing.
func (s *h2stream) growWindow(hc *h2conn, delta int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, flush := &s.resp, s.flushRespLocked
	if hc != s.down {
		if hc != s.up {
			return true
		}
		h, flush = &s.req, s.flushReqLocked
	}
	h.win += delta
	if h.win > 1<<31-1 {
		return false
	}
	flush()
	return true
}

// onRespHeaders takes a response head or the trailers from up.
func (s *h2stream) onRespHeaders(up *h2conn, f *http2.MetaHeadersFrame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if up != s.up {
		return
	}
	if !s.gotHead {
		raw := f.PseudoValue("status")
		status, err := strconv.Atoi(raw)
		switch {
		case err != nil || status < 100 || status > 999 || len(f.PseudoFields()) != 1:
			s.upErr = fmt.Errorf("%w: bad :status %q", interceptor.ErrBadResponse, raw)
		case status < 200:
			if f.StreamEnded() {
				s.upErr = fmt.Errorf("%w: informational answer ends the stream", interceptor.ErrBadResponse)
			} else {
				return // 100 Continue and the like are not passed on
			}
		default:
			s.gotHead, s.status, s.statusRaw, s.head = true, status, raw, f.RegularFields()
			if f.StreamEnded() {
				s.headEnd, s.resp.end, s.resp.endSent = true, true, true
			}
		}
		s.wake()
		return
	}
	if s.resp.end || !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		s.upResetLocked(http2.ErrCodeProtocol, true)
		return
	}
	s.resp.trailers, s.resp.end = f.RegularFields(), true
	s.flushRespLocked()
}

// onRespData takes a DATA frame of the response from up.
func (s *h2stream) onRespData(up *h2conn, f *http2.DataFrame) {
	data := f.Data()
	s.mu.Lock()
	defer s.mu.Unlock()
	if up != s.up || s.resp.end || s.resp.reset {
		return
	}
	if !s.gotHead {
		s.upErr = fmt.Errorf("%w: DATA before the response head", interceptor.ErrBadResponse)
		s.wake()
		return
	}
	s.resp.recv -= int64(f.Length)
	if s.resp.recv < 0 {
		s.upResetLocked(http2.ErrCodeFlowControl, true)
		return
	}
	s.respBytes += int64(len(data))
	if f.StreamEnded() {
		s.resp.end = true
	}
	var flush func()
	if s.committed {
		flush = s.flushRespLocked
	}
	s.take(&s.resp, data, flush)
	if pad := int64(f.Length) - int64(len(data)); pad > 0 {
		s.resp.recv += pad
		up.creditStream(s.upID, pad, &s.resp.credit)
	}
}

// upReset takes the upstream's RST_STREAM, or the loss of its
// connection.
func (s *h2stream) upReset(up *h2conn, code http2.ErrCode, refused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if up != s.up {
		return
	}
	if refused && !s.gotHead {
		s.refused = true
	}
	s.upResetLocked(code, false)
}

// upResetLocked ends the upstream side: before the head the try fails;
// after it, the client's stream is reset too (a cut answer must not pass
// for a whole one). mu is held.
func (s *h2stream) upResetLocked(code http2.ErrCode, tell bool) {
	if tell && s.up != nil {
		s.up.mu.Lock()
		s.up.reset(s.upID, code)
		s.up.mu.Unlock()
	}
	if s.gotHead && s.resp.end {
		// The answer came whole first: the reset only refuses the rest
		// of the request (RFC 9113 §8.1), which is dropped; the client
		// is told so once it has the answer (cleanup).
		if !s.reqCut {
			s.reqCut = true
			unsent := int64(s.req.pending())
			s.req.buf, s.req.off = s.req.buf[:0], 0
			s.req.recv += unsent
			s.down.creditStream(s.id, unsent, &s.req.credit)
			if !s.req.end {
				// What comes after is dropped: the body cannot be sent
				// again whole. One that ended is in the record whole (a
				// peer sidecar answered before reading it: its app was
				// gone), and a retry may send it again.
				s.replayOK, s.replay = false, nil
			}
		}
		return
	}
	if !s.gotHead {
		if s.upErr == nil {
			s.upErr = fmt.Errorf("upstream reset the stream (%v)", code)
			if code == http2.ErrCodeRefusedStream {
				s.refused = true
			}
		}
		s.wake()
		return
	}
	if s.resp.endSent {
		return
	}
	s.resp.reset, s.upCode = true, code
	if s.committed {
		s.down.mu.Lock()
		s.down.reset(s.id, resetCode(code))
		s.down.mu.Unlock()
	}
	s.wake()
}

// resetCode is what the client is told of an upstream reset.
func resetCode(c http2.ErrCode) http2.ErrCode {
	if c == http2.ErrCodeNo {
		return http2.ErrCodeInternal
	}
	return c
}

// clientReset takes the client's RST_STREAM, or the loss of its
// connection.
func (s *h2stream) clientReset() {
	s.mu.Lock()
	s.downGone, s.req.reset = true, true
	s.mu.Unlock()
	s.wake()
}

// resetDown resets the client's stream.
func (s *h2stream) resetDown(code http2.ErrCode) {
	s.mu.Lock()
	gone := s.downGone
	s.downGone = true
	s.mu.Unlock()
	if !gone {
		s.down.mu.Lock()
		s.down.reset(s.id, code)
		s.down.mu.Unlock()
	}
}

// connLost is told that hc closed.
func (s *h2stream) connLost(hc *h2conn) {
	if hc == s.down {
		s.clientReset()
		return
	}
	s.mu.Lock()
	if hc == s.up {
		// Streams the upstream never saw were not processed.
		s.upResetLocked(http2.ErrCodeCancel, false)
		if !s.gotHead && hc.neverRead.Load() {
			s.refused = true
		}
	}
	s.mu.Unlock()
}

// commit sends the response head downstream and starts the body.
func (s *h2stream) commit() {
	x := &s.x
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = true
	s.replay, s.replayOK = nil, false
	x.Status = s.status
	head := s.head[:0:0]
	edits := s.rt.editsResponse()
	for _, f := range s.head {
		if hopByHopH2(f) || f.Name == peerHeaderLower || edits && s.rt.dropsResponse(f.Name) ||
			x.Direction == interceptor.Inbound && f.Name == errorHeaderLower { // only a sidecar's own replies carry it
			continue
		}
		head = append(head, f)
	}
	if edits {
		for _, f := range s.rt.respSet {
			head = append(head, hpack.HeaderField{Name: lowerName(f.name), Value: f.value})
		}
		for _, f := range s.rt.respAdd {
			head = append(head, hpack.HeaderField{Name: lowerName(f.name), Value: f.value})
		}
	}
	if x.Direction == interceptor.Inbound && s.peered {
		head = append(head, hpack.HeaderField{Name: peerHeaderLower, Value: s.p.self})
	}
	if s.resp.reset {
		s.down.mu.Lock()
		s.down.reset(s.id, resetCode(s.upCode))
		s.down.mu.Unlock()
		return
	}
	end := s.headEnd || s.resp.end && s.resp.pending() == 0 && s.resp.trailers == nil
	pseudo := [1]hpack.HeaderField{{Name: ":status", Value: s.statusRaw}}
	s.down.mu.Lock()
	if !s.down.closed {
		s.down.writeHeaders(s.id, end, pseudo[:], head)
	}
	s.down.mu.Unlock()
	if end {
		s.resp.endSent = true
		s.wake()
		return
	}
	s.flushRespLocked()
}

// waitEnd waits until the response went downstream whole, or the
// stream was reset, or the request's deadline passed.
func (s *h2stream) waitEnd() {
	x := &s.x
	var timeout <-chan time.Time
	if !x.Deadline.IsZero() {
		if s.timer == nil {
			s.timer = time.NewTimer(time.Until(x.Deadline))
		} else {
			s.timer.Reset(time.Until(x.Deadline))
		}
		timeout = s.timer.C
	}
	for {
		s.mu.Lock()
		ended, upReset, gone := s.resp.endSent, s.resp.reset, s.downGone
		trailers := s.resp.trailers
		s.mu.Unlock()
		switch {
		case ended:
			if x.GRPC {
				v := fieldValue(trailers, "grpc-status")
				if v == "" {
					v = fieldValue(s.head, "grpc-status") // trailers-only
				}
				x.SetGRPCStatus(v)
			}
			return
		case upReset:
			x.Flags |= interceptor.FlagUpstreamReset
			return
		case gone:
			x.Flags |= interceptor.FlagDownstreamReset
			return
		}
		select {
		case <-s.wakeCh:
		case <-timeout:
			x.Flags |= interceptor.FlagUpstreamTimeout
			s.resetDown(http2.ErrCodeCancel)
			return
		}
	}
}

// writeLocal answers the stream with the proxy's own reply: gRPC
// clients get a trailers-only response with the matching gRPC status.
func (s *h2stream) writeLocal(r *interceptor.LocalReply) {
	x := &s.x
	hc := s.down
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.closed {
		return
	}
	if x.GRPC {
		x.SetGRPCStatus(r.GRPCStatus())
		x.Status = http.StatusOK
		fields := [5]hpack.HeaderField{
			{Name: ":status", Value: "200"},
			{Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: r.GRPCStatus()},
			{Name: "grpc-message", Value: r.Message},
			{Name: "x-tender-error", Value: r.Message},
		}
		hc.writeHeaders(s.id, true, fields[:1], fields[1:])
		return
	}
	body := "tender: " + r.Message + "\n"
	fields := [6]hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(r.Status)},
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "x-content-type-options", Value: "nosniff"},
		{Name: "x-tender-error", Value: r.Message},
		{Name: "content-length", Value: strconv.Itoa(len(body))},
	}
	n := 5
	if r.Location != "" {
		fields[n], n = hpack.HeaderField{Name: "location", Value: r.Location}, n+1
	}
	if s.method == http.MethodHead {
		hc.writeHeaders(s.id, true, fields[:1], fields[1:n])
		return
	}
	hc.writeHeaders(s.id, false, fields[:1], fields[1:n])
	hc.wfr.WriteData(s.id, true, []byte(body)) //nolint:errcheck // into memory; a local reply is small
	s.respBytes += int64(len(body))
}

var (
	peerHeaderLower  = strings.ToLower(interceptor.PeerHeader)
	errorHeaderLower = strings.ToLower(interceptor.ErrorHeader)
)

// hopByHopH2 reports whether a field is not forwarded: connection-
// specific fields HTTP/2 forbids, and te other than "trailers".
func hopByHopH2(f hpack.HeaderField) bool {
	switch f.Name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "http2-settings":
		return true
	case "te":
		return f.Value != "trailers"
	}
	return false
}

func fieldValue(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// lowerName returns name in lower case, without allocating when it is.
func lowerName(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// h2req is a stream's request head as the chain sees it.
type h2req struct{ s *h2stream }

// Method is :method.
func (q *h2req) Method() string { return q.s.method }

// Authority is :authority.
func (q *h2req) Authority() string { return q.s.authority }

// Path is :path without the query.
func (q *h2req) Path() string {
	p := q.s.path
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// Proto is HTTP/2.0.
func (q *h2req) Proto() string { return "HTTP/2.0" }

// Query is :path's query, without the '?'.
func (q *h2req) Query() string {
	if i := strings.IndexByte(q.s.path, '?'); i >= 0 {
		return q.s.path[i+1:]
	}
	return ""
}

// SetAuthority rewrites :authority.
func (q *h2req) SetAuthority(v string) { q.s.authority = v }

// HasHeader reports whether the named field is present.
func (q *h2req) HasHeader(name string) bool {
	for _, f := range q.s.fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// AddHeader adds a field, keeping those of the same name.
func (q *h2req) AddHeader(name, value string) {
	q.s.fields = append(q.s.fields, hpack.HeaderField{Name: lowerName(name), Value: value})
}

// Header returns the first value of the named field.
func (q *h2req) Header(name string) string {
	for _, f := range q.s.fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	if strings.EqualFold(name, "host") {
		return q.s.authority
	}
	return ""
}

// SetHeader replaces the named field.
func (q *h2req) SetHeader(name, value string) {
	name = lowerName(name)
	fs := q.s.fields
	for i := range fs {
		if fs[i].Name == name {
			fs[i].Value = value
			q.s.fields = append(fs[:i+1], deleteField(fs[i+1:], name)...)
			return
		}
	}
	q.s.fields = append(fs, hpack.HeaderField{Name: name, Value: value})
}

// DelHeader removes the named field.
func (q *h2req) DelHeader(name string) {
	q.s.fields = deleteField(q.s.fields, lowerName(name))
}

func deleteField(fs []hpack.HeaderField, name string) []hpack.HeaderField {
	out := fs[:0]
	for _, f := range fs {
		if f.Name != name {
			out = append(out, f)
		}
	}
	return out
}

// SetPath rewrites the path, keeping the query.
func (q *h2req) SetPath(escaped string) {
	if i := strings.IndexByte(q.s.path, '?'); i >= 0 {
		escaped += q.s.path[i:]
	}
	q.s.path = escaped
}

// h2resp is an upstream's response head.
type h2resp struct{ s *h2stream }

// StatusCode is the response status.
func (r *h2resp) StatusCode() int { return r.s.status }

// Header returns the first value of the named response field.
func (r *h2resp) Header(name string) string {
	name = lowerName(name)
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return fieldValue(r.s.head, name)
}

// Discard drops a response that is retried.
func (r *h2resp) Discard() { r.s.detach(http2.ErrCodeCancel) }

var (
	_ routable             = (*h2req)(nil)
	_ interceptor.Response = (*h2resp)(nil)
	_ interceptor.Body     = (*h2stream)(nil)
)

// meshed says how the sidecar reaches ep: over mutual TLS when ep takes
// it and the sidecar has a certificate (before its first one it speaks
// plaintext, which PERMISSIVE endpoints take), accepting ep's identity.
func (p *Proxy) meshed(ep *balancer.Endpoint) meshPeer {
	return meshPeer{on: ep.Meshed && p.opts.MTLS != nil && p.opts.MTLS.Ready(), ids: ep.Identity}
}

package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/tender-mesh/tender/interceptor"
)

// The downstream side of the HTTP/2 relay: tender as the server of an
// app's (outbound) or a peer sidecar's (inbound) connection.

// maxResetsPerSecond bounds how many streams a client may open and
// reset in a second (CVE-2023-44487, "rapid reset"); beyond, its
// connection is closed with ENHANCE_YOUR_CALM.
const maxResetsPerSecond = 200

// isH2 reports whether the connection starts with the HTTP/2 preface.
func isH2(sc *sniffedConn, timeout time.Duration) bool {
	sc.SetReadDeadline(time.Now().Add(timeout)) //nolint:errcheck // a failed set shows on the read
	b, _ := sc.br.Peek(3)                       //nolint:errcheck // fewer bytes: not HTTP/2
	sc.SetReadDeadline(time.Time{})             //nolint:errcheck // a failed reset shows on the next read
	return string(b) == "PRI"
}

// serveH2 serves an HTTP/2 connection until it ends.
func (p *Proxy) serveH2(sc *sniffedConn, d Direction, registered func()) {
	hc := newH2Conn(sc, sc.br, true, p.opts.MaxHeaderBytes)
	// One chain for the connection's streams, as for an HTTP/1.1
	// connection's requests: its innermost handler finds the stream
	// through the request view.
	hc.chain = p.chain(interceptor.HandlerFunc(func(x *interceptor.Exchange) (interceptor.Response, error) {
		return x.Req.(*h2req).s.try(x)
	}))
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		registered()
		sc.Close()
		return
	}
	p.h2conns[hc] = struct{}{}
	p.h2WG.Add(1)
	p.mu.Unlock()
	registered()
	defer func() {
		p.mu.Lock()
		delete(p.h2conns, hc)
		p.mu.Unlock()
		p.h2WG.Done()
	}()
	var preface [len(http2.ClientPreface)]byte
	sc.SetReadDeadline(time.Now().Add(p.opts.HeaderTimeout)) //nolint:errcheck // a failed set shows on the read
	if _, err := io.ReadFull(sc.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		sc.Close()
		return
	}
	hc.start()
	hc.mu.Lock()
	hc.armIdle(p.opts.IdleTimeout)
	hc.mu.Unlock()
	err := p.readDown(hc, sc, d)
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		hc.goAway(hc.lastID(), http2.ErrCode(ce), "")
	case isTimeout(err):
		hc.goAway(hc.lastID(), http2.ErrCodeNo, "idle")
	default:
		hc.fail(err)
	}
	<-hc.writerDone
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (hc *h2conn) lastID() uint32 {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.maxID
}

// armIdle sets the connection's read deadline for its state: the idle
// timeout without streams, none with; mu is held.
func (hc *h2conn) armIdle(idle time.Duration) {
	if hc.active == 0 {
		hc.c.SetReadDeadline(time.Now().Add(idle)) //nolint:errcheck // a failed set shows on the read
	} else {
		hc.c.SetReadDeadline(time.Time{}) //nolint:errcheck // a failed reset shows on the read
	}
}

// readDown reads the client's frames until the connection ends.
func (p *Proxy) readDown(hc *h2conn, sc *sniffedConn, d Direction) error {
	for {
		f, err := hc.rfr.ReadFrame()
		if errors.Is(err, http2.ErrFrameTooLarge) {
			return http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		if err == nil {
			err = p.downFrame(hc, sc, d, f)
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			// The client's error ends the stream: as costly to tender as
			// the client's own reset, and counted alike.
			hc.mu.Lock()
			if se.StreamID%2 == 1 {
				hc.maxID = max(hc.maxID, se.StreamID)
			}
			hc.reset(se.StreamID, se.Code)
			hc.mu.Unlock()
			if s := hc.stream(se.StreamID); s != nil {
				s.clientReset()
			}
			if hc.noteReset() {
				p.opts.Logger.Warn("HTTP/2 client makes too many streams end in errors; closing", "remote", hc.remote)
				return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
			}
		} else if err != nil {
			return err
		}
		if hc.flooded() {
			p.opts.Logger.Warn("HTTP/2 client does not read what it asks for; closing", "remote", hc.remote)
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
	}
}

// goAwayLinger is how long a connection the client said goodbye to
// (GOAWAY) stays open without streams: frames already on their way, a
// PING among them, still get their answer before it closes.
const goAwayLinger = time.Second

// downFrame handles one frame from the client.
func (p *Proxy) downFrame(hc *h2conn, sc *sniffedConn, d Direction, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return p.downHeaders(hc, sc, d, f)
	case *http2.DataFrame:
		if err := hc.takeData(f.Length); err != nil {
			return err
		}
		s := hc.stream(f.StreamID)
		if s == nil {
			if f.StreamID > hc.lastID() {
				return http2.ConnectionError(http2.ErrCodeProtocol) // DATA on an idle stream
			}
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed}
		}
		return s.onReqData(f)
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			return hc.windowUpdate(f.Increment)
		}
		if s := hc.stream(f.StreamID); s != nil {
			return s.onWindow(hc, f.Increment)
		}
		if f.StreamID > hc.lastID() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	case *http2.SettingsFrame:
		return hc.applySettings(f)
	case *http2.PingFrame:
		return hc.ping(f)
	case *http2.RSTStreamFrame:
		if f.StreamID > hc.lastID() {
			return http2.ConnectionError(http2.ErrCodeProtocol) // RST_STREAM on an idle stream
		}
		s := hc.stream(f.StreamID)
		if s == nil {
			return nil
		}
		s.clientReset()
		if hc.noteReset() {
			p.opts.Logger.Warn("HTTP/2 client resets too many streams; closing", "remote", hc.remote)
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
	case *http2.GoAwayFrame:
		// The client opens no more streams: tender says the same and
		// closes once the streams in flight are done (endStream), or
		// after a linger without any.
		hc.mu.Lock()
		if !hc.sentGoAway && !hc.closed {
			hc.wfr.WriteGoAway(hc.maxID, http2.ErrCodeNo, nil) //nolint:errcheck // into memory
			hc.sentGoAway = true
			hc.signal()
		}
		hc.goaway = true
		if hc.active == 0 {
			hc.c.SetReadDeadline(time.Now().Add(goAwayLinger)) //nolint:errcheck // a failed set shows on the read
		}
		hc.mu.Unlock()
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // clients do not push
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
	}
	return nil
}

// downHeaders takes a client's HEADERS: a new stream, or the trailers of
// one.
func (p *Proxy) downHeaders(hc *h2conn, sc *sniffedConn, d Direction, f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	hc.mu.Lock()
	s := hc.streams[id]
	if s == nil && id <= hc.maxID {
		hc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeStreamClosed)
	}
	if s != nil {
		hc.mu.Unlock()
		return s.onReqTrailers(f)
	}
	hc.maxID = id
	switch {
	case hc.goaway:
		hc.reset(id, http2.ErrCodeRefusedStream)
		hc.mu.Unlock()
		return nil
	case hc.active >= h2MaxStreams:
		hc.reset(id, http2.ErrCodeRefusedStream)
		hc.mu.Unlock()
		return nil
	}
	hc.mu.Unlock()
	s, err := p.newStream(hc, sc, d, f)
	if err != nil {
		return err
	}
	hc.mu.Lock()
	hc.streams[id] = s
	hc.activate()
	hc.armIdle(p.opts.IdleTimeout)
	hc.mu.Unlock()
	go s.run()
	return nil
}

// newStream checks a request head and makes its stream.
func (p *Proxy) newStream(hc *h2conn, sc *sniffedConn, d Direction, f *http2.MetaHeadersFrame) (*h2stream, error) {
	bad := http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	s := &h2stream{p: p, down: hc, d: d, sc: sc, id: f.StreamID, contentLength: -1, wakeCh: make(chan struct{}, 1), replayOK: true}
	s.view.s, s.rv.s = s, s
	s.req.recv = h2StreamWindow
	s.resp.win = int64(hc.peerWindow())
	if f.Truncated {
		s.tooLarge = true
	}
	for _, hf := range f.PseudoFields() {
		var dst *string
		switch hf.Name {
		case ":method":
			dst = &s.method
		case ":scheme":
			dst = &s.scheme
		case ":authority":
			dst = &s.authority
		case ":path":
			dst = &s.path
		default:
			return nil, bad
		}
		if *dst != "" || hf.Value == "" {
			return nil, bad
		}
		*dst = hf.Value
	}
	if s.method == "" || s.method != "CONNECT" && (s.scheme == "" || s.path == "") {
		return nil, bad
	}
	s.fields = f.RegularFields()
	for _, hf := range s.fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, bad
		case "te":
			if hf.Value != "trailers" {
				return nil, bad
			}
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || s.contentLength >= 0 && s.contentLength != n {
				return nil, bad
			}
			s.contentLength = n
		case "host":
			if s.authority == "" {
				s.authority = hf.Value
			}
		}
	}
	if f.StreamEnded() {
		s.req.end = true
		if s.contentLength > 0 {
			return nil, bad
		}
	}
	s.chain = hc.chain
	return s, nil
}

func (hc *h2conn) peerWindow() int32 {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.peerInitWin
}

// activate counts a new stream; mu is held.
func (hc *h2conn) activate() {
	hc.active++
	if hc.idle != nil && hc.active == 1 {
		hc.idle.Stop()
	}
}

// deactivate counts a stream's end; mu is held.
func (hc *h2conn) deactivate() {
	hc.active--
	if hc.active == 0 && hc.idle != nil {
		hc.idle.Reset(upstreamIdle)
	}
}

// endStream forgets a downstream stream that ended.
func (hc *h2conn) endStream(s *h2stream) {
	hc.mu.Lock()
	if hc.streams[s.id] == s {
		delete(hc.streams, s.id)
		hc.deactivate()
		if !hc.closed {
			hc.armIdle(s.p.opts.IdleTimeout)
		}
	}
	drained := hc.goaway && hc.active == 0
	hc.mu.Unlock()
	if drained {
		hc.c.SetReadDeadline(time.Now()) //nolint:errcheck // wakes the reader, which closes
	}
}

// drain tells the client no new streams will be taken (GOAWAY with the
// last stream, as a graceful shutdown does); the connection closes when
// its streams are done.
func (hc *h2conn) drain() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.closed || hc.goaway {
		return
	}
	hc.goaway, hc.sentGoAway = true, true
	hc.wfr.WriteGoAway(hc.maxID, http2.ErrCodeNo, nil) //nolint:errcheck // into memory
	hc.signal()
	if hc.active == 0 {
		hc.c.SetReadDeadline(time.Now()) //nolint:errcheck // wakes the reader, which closes
	}
}

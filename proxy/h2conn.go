package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tender-mesh/tender/interceptor"
)

// HTTP/2 (gRPC included) is relayed frame by frame: tender reads frames
// with x/net/http2's Framer on both sides, routes each new stream, and
// passes HEADERS, DATA and trailers between a downstream connection and
// a pooled, multiplexed upstream one. Flow control passes through: a
// peer gets window back for bytes only once they went on to the other
// side, so a slow reader slows its sender and the sidecar holds at most
// a window's worth of a stream.
//
// h2conn is one HTTP/2 connection, downstream (tender is the server) or
// upstream (tender is the client). Its reader goroutine reads frames;
// anyone may write one under mu, into a buffer that the connection's
// writer goroutine sends, so no one blocks on a peer's socket but the
// writer.

const (
	// h2StreamWindow is the receive window tender gives each stream of
	// each peer: what it holds at most of one stream in one direction.
	h2StreamWindow = 256 << 10
	// h2ConnWindow is the receive window of a whole connection; it comes
	// back as bytes arrive (takeData), so it bounds bytes in flight, not
	// what is held.
	h2ConnWindow = 8 << 20
	// h2MaxStreams is how many concurrent streams a downstream may open
	// (as Go's HTTP/2 server): with h2StreamWindow, what one client
	// connection can make the relay hold per direction (62.5 MiB).
	h2MaxStreams = 250
	// h2OutHigh: with this much unsent on a connection, DATA for it waits
	// (its window is not handed back upstream) until the writer catches up.
	// Small enough that the writer's two buffers are kept and reused
	// (h2KeepBuf) instead of growing and being dropped on every burst,
	// large enough for one write to carry many frames.
	h2OutHigh = 64 << 10
	// h2KeepBuf: a write buffer up to this size is kept for the next.
	h2KeepBuf = 2 * h2OutHigh
	// h2OutMax: a peer that lets this much pile up (it sends frames that
	// need answers, SETTINGS, PINGs, frames answered with RST_STREAM, and
	// does not read them) is cut off with ENHANCE_YOUR_CALM.
	h2OutMax = 1 << 20
	// h2WriteTimeout bounds one write to a peer's socket.
	h2WriteTimeout = 30 * time.Second
	// initialWindow is HTTP/2's default window and frame size.
	initialWindow = 65535
	defaultFrame  = 16384
)

var errH2Closed = errors.New("http2 connection closed")

type h2conn struct {
	c      net.Conn
	br     *bufio.Reader
	chain  interceptor.Handler // downstream: what each stream runs
	rfr    *http2.Framer       // read by the reader goroutine only
	remote string
	server bool // downstream: tender is the server

	mu     sync.Mutex
	wake   *sync.Cond // the writer waits on it
	out    []byte     // frames not yet sent
	spare  []byte
	wfr    *http2.Framer // writes into out, under mu
	henc   *hpack.Encoder
	hbuf   bytes.Buffer
	closed bool
	err    error // why it closed
	// Send side: what the peer lets tender send.
	sendConn     int64
	peerInitWin  int32
	peerMaxFrame uint32
	peerStreams  uint32 // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	// Receive side: what tender lets the peer send on the connection;
	// h2ConnWindow less it is what arrived and was not handed back yet.
	recvConn   int64
	streams    map[uint32]*h2stream
	blocked    map[*h2stream]struct{} // streams with DATA waiting for window or the writer
	wakeBuf    []*h2stream            // the writer goroutine's own, reused: blocked streams to pump
	writerDone chan struct{}

	// Streams: active counts those open; a downstream's maxID is the
	// highest it opened, an upstream's nextID the next tender opens.
	active     int
	maxID      uint32
	nextID     uint32
	goaway     bool // no new streams: GOAWAY sent (downstream) or received (upstream)
	sentGoAway bool
	idle       *time.Timer
	key        poolKey // upstream: its pool entry
	peerID     string  // upstream over mutual TLS: the server's SPIFFE ID
	neverRead  atomic.Bool
	overrun    atomic.Bool // set by signal, read by the reader without mu
	resets     int         // downstream: streams the client reset lately
	resetsAt   time.Time
}

// h2out appends the framer's writes to the connection's buffer.
type h2out struct{ c *h2conn }

func (w h2out) Write(b []byte) (int, error) {
	w.c.out = append(w.c.out, b...)
	return len(b), nil
}

func newH2Conn(c net.Conn, br *bufio.Reader, server bool, maxHeaderBytes int) *h2conn {
	hc := &h2conn{c: c, br: br, server: server, remote: c.RemoteAddr().String(),
		sendConn: initialWindow, peerInitWin: initialWindow, peerMaxFrame: defaultFrame, peerStreams: 100,
		recvConn: h2ConnWindow, streams: map[uint32]*h2stream{}, writerDone: make(chan struct{})}
	hc.wake = sync.NewCond(&hc.mu)
	hc.rfr = http2.NewFramer(io.Discard, br)
	hc.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	hc.rfr.MaxHeaderListSize = uint32(maxHeaderBytes)
	hc.rfr.SetReuseFrames()
	hc.rfr.SetMaxReadFrameSize(defaultFrame) // what tender's SETTINGS leave in force
	hc.wfr = http2.NewFramer(h2out{hc}, nil)
	hc.henc = hpack.NewEncoder(&hc.hbuf)
	return hc
}

// start sends tender's SETTINGS and opens the connection window, then
// starts the writer.
func (hc *h2conn) start() {
	hc.mu.Lock()
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: hc.rfr.MaxHeaderListSize},
	}
	if hc.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams})
	} else {
		hc.out = append(hc.out, http2.ClientPreface...)
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	hc.wfr.WriteSettings(settings...)                       //nolint:errcheck // into memory
	hc.wfr.WriteWindowUpdate(0, h2ConnWindow-initialWindow) //nolint:errcheck // into memory
	hc.mu.Unlock()
	go hc.writeLoop()
}

// writeLoop sends what was written, in batches, until the connection
// closes.
func (hc *h2conn) writeLoop() {
	defer close(hc.writerDone)
	for {
		hc.mu.Lock()
		for len(hc.out) == 0 && !hc.closed {
			hc.wake.Wait()
		}
		if hc.closed && (hc.err != nil || len(hc.out) == 0) {
			hc.mu.Unlock()
			return
		}
		buf := hc.out
		hc.out = hc.spare[:0]
		hc.mu.Unlock()
		hc.c.SetWriteDeadline(time.Now().Add(h2WriteTimeout)) //nolint:errcheck // a failed set shows on the write
		_, err := hc.c.Write(buf)
		hc.mu.Lock()
		if cap(buf) <= h2KeepBuf {
			hc.spare = buf[:0]
		} else {
			hc.spare = nil // a burst's big buffer is not kept
		}
		wake := hc.wakeBuf[:0]
		if len(hc.blocked) > 0 && len(hc.out) < h2OutHigh {
			for s := range hc.blocked {
				wake = append(wake, s)
			}
			clear(hc.blocked)
		}
		hc.mu.Unlock()
		if err != nil {
			hc.fail(err)
			return
		}
		for _, s := range wake {
			s.pumpTo(hc)
		}
		clear(wake)
		hc.wakeBuf = wake[:0]
	}
}

// signal wakes the writer after a write; mu is held. Every write comes
// through here, so it also notes a peer that lets more than h2OutMax pile
// up unread (DATA alone stops at h2OutHigh: only answers the peer asks
// for, SETTINGS acks, PINGs, RST_STREAMs, get that far), for the reader
// to cut it off (flooded).
func (hc *h2conn) signal() {
	if hc.overfull() {
		hc.overrun.Store(true)
	}
	hc.wake.Signal()
}

// overfull reports whether more than h2OutMax waits unsent; mu is held.
func (hc *h2conn) overfull() bool { return len(hc.out) > h2OutMax }

// writeHeaders writes a header block (HEADERS and CONTINUATIONs) for
// stream id; mu is held. fields are written in order, pseudo-fields
// first as the caller gives them.
func (hc *h2conn) writeHeaders(id uint32, end bool, pseudo, fields []hpack.HeaderField) {
	hc.hbuf.Reset()
	for _, f := range pseudo {
		hc.henc.WriteField(f) //nolint:errcheck // into memory
	}
	for _, f := range fields {
		hc.henc.WriteField(f) //nolint:errcheck // into memory
	}
	block := hc.hbuf.Bytes()
	max := int(hc.peerMaxFrame)
	first := block
	if len(first) > max {
		first = block[:max]
	}
	block = block[len(first):]
	hc.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}) //nolint:errcheck // into memory
	for len(block) > 0 {
		n := min(len(block), max)
		hc.wfr.WriteContinuation(id, n == len(block), block[:n]) //nolint:errcheck // into memory
		block = block[n:]
	}
	hc.signal()
}

// reset sends RST_STREAM; mu is held.
func (hc *h2conn) reset(id uint32, code http2.ErrCode) {
	if hc.closed {
		return
	}
	hc.wfr.WriteRSTStream(id, code) //nolint:errcheck // into memory
	hc.signal()
}

// takeData accounts for a DATA frame of n bytes against the connection's
// receive window and hands the bytes back to the connection at once (in
// batches of a quarter window): what a stream holds is bounded by its
// own window, which comes back only as its bytes go on (creditStream).
// Were the connection's window handed back only then too, one stream
// whose reader stops would, with a few more, stall every other stream
// of a shared connection.
func (hc *h2conn) takeData(n uint32) error {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.recvConn -= int64(n)
	if hc.recvConn < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	if back := h2ConnWindow - hc.recvConn; back >= h2ConnWindow/4 && !hc.closed {
		hc.wfr.WriteWindowUpdate(0, uint32(back)) //nolint:errcheck // into memory
		hc.recvConn += back
		hc.signal()
	}
	return nil
}

// creditStream hands n bytes of stream id's window back to the peer, in
// batches of a quarter window; pending holds what is not yet handed
// back. id 0 (the stream ended its side) hands back nothing.
func (hc *h2conn) creditStream(id uint32, n int64, pending *int64) {
	if n <= 0 || id == 0 || pending == nil {
		return
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.closed {
		return
	}
	*pending += n
	if *pending >= h2StreamWindow/4 {
		hc.wfr.WriteWindowUpdate(id, uint32(*pending)) //nolint:errcheck // into memory
		*pending = 0
		hc.signal()
	}
}

// fail closes the connection for err and ends every stream on it.
func (hc *h2conn) fail(err error) {
	hc.mu.Lock()
	if hc.closed && hc.err != nil {
		hc.mu.Unlock()
		return
	}
	hc.closed = true
	if hc.err == nil {
		hc.err = err
	}
	streams := make([]*h2stream, 0, len(hc.streams))
	for _, s := range hc.streams {
		streams = append(streams, s)
	}
	clear(hc.streams)
	hc.blocked = nil
	hc.wake.Broadcast()
	hc.mu.Unlock()
	hc.c.Close()
	for _, s := range streams {
		s.connLost(hc)
	}
}

// goAway sends GOAWAY and closes the connection once it is written.
func (hc *h2conn) goAway(last uint32, code http2.ErrCode, debug string) {
	hc.mu.Lock()
	if !hc.closed {
		if !hc.sentGoAway || code != http2.ErrCodeNo {
			hc.wfr.WriteGoAway(last, code, []byte(debug)) //nolint:errcheck // into memory
		}
		hc.goaway, hc.sentGoAway, hc.closed = true, true, true
		hc.wake.Broadcast()
	}
	hc.mu.Unlock()
	select {
	case <-hc.writerDone:
	case <-time.After(time.Second):
	}
	hc.fail(errH2Closed)
}

// applySettings takes a peer's SETTINGS and acknowledges them.
func (hc *h2conn) applySettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		return err
	}
	var adjust []*h2stream
	var delta int32
	hc.mu.Lock()
	f.ForeachSetting(func(s http2.Setting) error { //nolint:errcheck // the function returns none
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta += int32(s.Val) - hc.peerInitWin
			hc.peerInitWin = int32(s.Val)
		case http2.SettingMaxFrameSize:
			hc.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			hc.henc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingMaxConcurrentStreams:
			hc.peerStreams = s.Val
		}
		return nil
	})
	if delta != 0 {
		for _, s := range hc.streams {
			adjust = append(adjust, s)
		}
	}
	hc.wfr.WriteSettingsAck() //nolint:errcheck // into memory
	hc.signal()
	hc.mu.Unlock()
	for _, s := range adjust {
		if err := s.adjustWindow(hc, delta); err != nil {
			return err
		}
	}
	return nil
}

// windowUpdate takes a connection-level WINDOW_UPDATE.
func (hc *h2conn) windowUpdate(inc uint32) error {
	hc.mu.Lock()
	hc.sendConn += int64(inc)
	if hc.sendConn > 1<<31-1 {
		hc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	wake := hc.blocked
	hc.blocked = nil
	hc.mu.Unlock()
	for s := range wake {
		s.pumpTo(hc)
	}
	return nil
}

// flooded reports whether the peer made tender write more than h2OutMax
// it has not read.
func (hc *h2conn) flooded() bool { return hc.overrun.Load() }

// noteReset counts a stream of the client's that ended in a reset, sent
// by the client or by tender for the client's error, and reports
// whether the client went over maxResetsPerSecond (rapid reset).
func (hc *h2conn) noteReset() bool {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	now := time.Now()
	if now.Sub(hc.resetsAt) > time.Second {
		hc.resets, hc.resetsAt = 0, now
	}
	hc.resets++
	return hc.resets > maxResetsPerSecond
}

// ping answers a PING.
func (hc *h2conn) ping(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.overfull() {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	hc.wfr.WritePing(true, f.Data) //nolint:errcheck // into memory
	hc.signal()
	return nil
}

// stream returns the stream of id, nil when there is none (any more).
func (hc *h2conn) stream(id uint32) *h2stream {
	hc.mu.Lock()
	s := hc.streams[id]
	hc.mu.Unlock()
	return s
}

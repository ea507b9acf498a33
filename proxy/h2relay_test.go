package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tender-mesh/tender/interceptor"
)

// h2peer is a raw HTTP/2 client of the relay: frames in and out, nothing
// done for it.
type h2peer struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2peer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) //nolint:errcheck // a failed set shows on the read
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	pc := &h2peer{t: t, c: c, fr: http2.NewFramer(c, c)}
	pc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	pc.enc = hpack.NewEncoder(&pc.hb)
	if err := pc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return pc
}

// headers sends a POST head on stream id.
func (pc *h2peer) headers(id uint32, end bool) {
	pc.t.Helper()
	if err := pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h2Request(pc.enc, &pc.hb),
		EndHeaders: true, EndStream: end}); err != nil {
		pc.t.Fatal(err)
	}
}

// next returns the next frame that is not SETTINGS, WINDOW_UPDATE or a
// PING ack, or the read's error.
func (pc *h2peer) next() (http2.Frame, error) {
	for {
		f, err := pc.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame, *http2.WindowUpdateFrame:
			continue
		case *http2.PingFrame:
			if f.IsAck() {
				return f, nil
			}
			continue
		}
		return f, nil
	}
}

// TestH2AnswerBeforeRequestEnds: an upstream that answers before the
// request body has ended resets the stream with NO_ERROR after its
// complete answer (RFC 9113 §8.1; net/http's server does so for a body
// its handler did not read). The client gets the whole answer, every
// time, and only then is told to stop sending.
func TestH2AnswerBeforeRequestEnds(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "early") //nolint:errcheck // the test's upstream
	}))
	tp := startProxy(t, cl)
	pc := dialH2(t, tp.addr)
	for id := uint32(1); id < 60; id += 2 {
		pc.headers(id, false)
		if err := pc.fr.WriteData(id, false, []byte("part of a body")); err != nil {
			t.Fatal(err)
		}
		var status, body string
		for done := false; !done; {
			f, err := pc.next()
			if err != nil {
				t.Fatalf("stream %d: %v", id, err)
			}
			if f.Header().StreamID != id {
				continue // the earlier stream's RST_STREAM
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				status = f.PseudoValue("status")
				done = f.StreamEnded()
			case *http2.DataFrame:
				body += string(f.Data())
				done = f.StreamEnded()
			case *http2.RSTStreamFrame:
				t.Fatalf("stream %d: got RST_STREAM %v before the answer ended (status %q, body %q), want the whole answer", id, f.ErrCode, status, body)
			default:
				t.Fatalf("stream %d: got %v", id, f)
			}
		}
		if status != "200" || body != "early" {
			t.Fatalf("stream %d: got %s %q, want 200 \"early\"", id, status, body)
		}
		// The rest of the body is not wanted; sending it is no error.
		if err := pc.fr.WriteData(id, true, []byte("the rest")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestH2ClientGoAway: a client's GOAWAY is answered with the relay's
// own, frames already sent still get their answer (a PING), and then the
// connection closes cleanly.
func TestH2ClientGoAway(t *testing.T) {
	tp := startProxy(t, upstreams(t, nil, http.NotFoundHandler()))
	pc := dialH2(t, tp.addr)
	if err := pc.fr.WriteGoAway(0, http2.ErrCodeNo, nil); err != nil {
		t.Fatal(err)
	}
	if err := pc.fr.WritePing(false, [8]byte{'t', 'e', 'n', 'd', 'e', 'r'}); err != nil {
		t.Fatal(err)
	}
	var gotAway, gotPing bool
	for {
		f, err := pc.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("got %v (GOAWAY %v, PING ack %v), want the connection closed cleanly", err, gotAway, gotPing)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			gotAway = f.ErrCode == http2.ErrCodeNo
		case *http2.PingFrame:
			gotPing = true
		}
	}
	if !gotAway || !gotPing {
		t.Errorf("got GOAWAY(NO_ERROR) %v, PING ack %v; want both before the close", gotAway, gotPing)
	}
}

// TestH2Floods: a client that opens and resets streams without end
// (CVE-2023-44487), or sends a header block without end, loses its
// connection; the relay serves the next client.
func TestH2Floods(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body) //nolint:errcheck // the test's upstream
	}))
	tp := startProxy(t, cl)
	// closed reads until the relay closes the connection and returns the
	// GOAWAY it sent, if any.
	closed := func(t *testing.T, pc *h2peer) *http2.GoAwayFrame {
		t.Helper()
		var away *http2.GoAwayFrame
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				if isTimeout(err) {
					t.Fatal("got the connection kept open, want it closed")
				}
				return away
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				away = g
			}
		}
	}
	t.Run("rapid reset", func(t *testing.T) {
		pc := dialH2(t, tp.addr)
		go func() {
			for id := uint32(1); id < 20000; id += 2 {
				if pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h2Request(pc.enc, &pc.hb), EndHeaders: true}) != nil ||
					pc.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return // closed by the relay
				}
			}
		}()
		if g := closed(t, pc); g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("got GOAWAY %v, want ENHANCE_YOUR_CALM", g)
		}
	})
	t.Run("continuation flood", func(t *testing.T) {
		pc := dialH2(t, tp.addr)
		go func() {
			if pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h2Request(pc.enc, &pc.hb)}) != nil {
				return
			}
			block := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 1000)
			for range 100000 {
				if pc.fr.WriteContinuation(1, false, block) != nil {
					return // closed by the relay
				}
			}
		}()
		closed(t, pc)
	})
	// The relay still serves.
	resp, err := tp.h2client().Post("http://greeter/", "text/plain", bytes.NewReader([]byte("after")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "after" {
		t.Errorf("after the floods: got %q, want the echo", b)
	}
}

// TestH2HalfBounded: a direction whose reader always leaves a little
// behind (never drains fully) keeps a buffer the size of what waits, not
// of everything that went through.
func TestH2HalfBounded(t *testing.T) {
	var h h2half
	frame := make([]byte, 16<<10)
	for range 10000 { // 160 MiB through
		h.push(frame)
		h.off += len(frame) - 1 // passed on, but one byte
		if h.pending() > len(frame) {
			h.off += h.pending() - len(frame)
		}
	}
	if c := cap(h.buf); c > 4*len(frame) {
		t.Errorf("got a buffer of %d KiB with %d bytes waiting, want a few frames' worth", c>>10, h.pending())
	}
}

// TestH2ControlFlood: a client that sends frames the relay must answer
// (here empty SETTINGS, each acknowledged) and never reads the answers
// is cut off once h2OutMax of them wait; the relay does not hold more.
func TestH2ControlFlood(t *testing.T) {
	tp := startProxy(t, upstreams(t, nil, http.NotFoundHandler()))
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Small socket buffers on both ends, so what the relay writes backs up
	// into its own buffer soon, not after megabytes of the kernel's.
	c.(*net.TCPConn).SetReadBuffer(64 << 10) //nolint:errcheck // a bigger buffer only slows the flood's effect
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	for shrunk := false; !shrunk; time.Sleep(time.Millisecond) {
		tp.p.mu.Lock()
		for hc := range tp.p.h2conns {
			hc.c.(*sniffedConn).Conn.(*net.TCPConn).SetWriteBuffer(64 << 10) //nolint:errcheck // a bigger buffer only slows the flood's effect
			shrunk = true
		}
		tp.p.mu.Unlock()
	}
	chunk := bytes.Repeat([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}, 1<<16) // empty SETTINGS frames
	wrote := make(chan error, 1)
	go func() {
		var err error
		for i := 0; err == nil && i < 200; i++ { // up to 118 MB, never reading
			_, err = c.Write(chunk)
		}
		wrote <- err
	}()
	maxOut := 0
	deadline := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case err := <-wrote:
			if err == nil {
				t.Fatal("got 118 MB of SETTINGS taken from a client that reads nothing, want it cut off")
			}
			done = true
		case <-deadline:
			t.Fatal("the flood neither ended nor was cut off within 60 s")
		case <-time.After(10 * time.Millisecond):
		}
		tp.p.mu.Lock()
		for hc := range tp.p.h2conns {
			hc.mu.Lock()
			maxOut = max(maxOut, len(hc.out))
			hc.mu.Unlock()
		}
		tp.p.mu.Unlock()
	}
	if maxOut > h2OutMax+1024 {
		t.Errorf("got %d bytes waiting for the client at most, want at most h2OutMax (%d)", maxOut, h2OutMax)
	}
}

// TestH2ErrorResetsCount: streams the relay resets for the client's
// errors (here PRIORITY on itself) count towards the rapid-reset bound
// like the client's own RST_STREAM, which they cost as much.
func TestH2ErrorResetsCount(t *testing.T) {
	cl := upstreams(t, nil, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	tp := startProxy(t, cl)
	pc := dialH2(t, tp.addr)
	calm := make(chan bool, 1)
	go func() {
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				calm <- false
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok && g.ErrCode == http2.ErrCodeEnhanceYourCalm {
				calm <- true
				return
			}
		}
	}()
	go func() {
		for id := uint32(1); id < 4000; id += 2 {
			if pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h2Request(pc.enc, &pc.hb), EndHeaders: true}) != nil ||
				pc.fr.WritePriority(id, http2.PriorityParam{StreamDep: id}) != nil {
				return // closed by the relay
			}
		}
	}()
	if !<-calm {
		t.Error("got the connection closed without ENHANCE_YOUR_CALM, want the error resets counted as rapid reset")
	}
}

// TestH2SharedUpstreamNotStarved: a client whose streams never open
// their windows holds what their stream windows allow, and no more of
// the upstream connection it shares with others: another client's
// answer on the same upstream connection still comes.
func TestH2SharedUpstreamNotStarved(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 64<<10)
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			io.WriteString(w, "ok") //nolint:errcheck // the test's upstream
			return
		}
		for range 64 { // 4 MiB
			if _, err := w.Write(big); err != nil {
				return
			}
		}
	}))
	tp := startProxy(t, cl)
	pc := dialH2(t, tp.addr)
	if err := pc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	heads := make(chan struct{}, 100)
	go func() { // it reads, but never opens a stream's window
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.MetaHeadersFrame); ok {
				heads <- struct{}{}
			}
		}
	}()
	const streams = 40 // 40 × h2StreamWindow is more than a connection's window
	for id := uint32(1); id < 2*streams; id += 2 {
		pc.headers(id, true)
	}
	for range streams {
		<-heads
	}
	// Wait until the relay holds a connection window's worth (less a
	// little) of the stuck answers.
	held := func() int {
		n := 0
		tp.p.h2pool.mu.Lock()
		var ss []*h2stream
		for _, list := range tp.p.h2pool.conns {
			for _, hc := range list {
				hc.mu.Lock()
				for _, s := range hc.streams {
					ss = append(ss, s)
				}
				hc.mu.Unlock()
			}
		}
		tp.p.h2pool.mu.Unlock()
		for _, s := range ss {
			s.mu.Lock()
			n += s.resp.pending()
			s.mu.Unlock()
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for held() < h2ConnWindow-(1<<20) {
		if time.Now().After(deadline) {
			t.Fatalf("the stuck streams hold %d bytes after 10 s, want about %d", held(), h2ConnWindow)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := tp.h2client()
	c.Timeout = 5 * time.Second
	resp, err := c.Get("http://greeter/small")
	if err != nil {
		t.Fatalf("another client, with the stuck streams holding %d bytes: %v", held(), err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Errorf("got %q, want ok", b)
	}
}

// TestH2NoRetryOfACutBody: an upstream that answers early (503) and
// resets with NO_ERROR makes the relay drop the rest of the body; a
// retry of it would send a truncated body as if whole, so there is none:
// the client gets the 503, never another upstream's answer to part of
// its body.
func TestH2NoRetryOfACutBody(t *testing.T) {
	var calls atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // early, the body unread
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, strconv.Itoa(len(b))) //nolint:errcheck // the test's upstream
	})
	pol := &interceptor.Policy{Retry: &interceptor.RetryPolicy{Attempts: 2, On: interceptor.ParseRetryOn("5xx"),
		BackoffBase: 300 * time.Millisecond, BackoffMax: 300 * time.Millisecond}}
	tp := startProxy(t, upstreams(t, pol, h, h))
	pc := dialH2(t, tp.addr)
	pc.headers(1, false)
	answer := make(chan string, 1)
	go func() {
		var got string
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				answer <- got + " " + err.Error()
				return
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				got += f.PseudoValue("status")
				if f.StreamEnded() {
					answer <- got
					return
				}
			case *http2.DataFrame:
				got += " " + string(f.Data())
				if f.StreamEnded() {
					answer <- got
					return
				}
			}
		}
	}()
	const chunks, size = 100, 100
	for i := range chunks { // the body trickles in over 500 ms
		if err := pc.fr.WriteData(1, i == chunks-1, bytes.Repeat([]byte("y"), size)); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case got := <-answer:
		if got != "503" && got != "200 "+strconv.Itoa(chunks*size) {
			t.Errorf("got %q, want the early 503 (or a retry that had the whole body)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10 s")
	}
}

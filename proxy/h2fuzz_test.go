package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Frames builds a client's bytes: the preface, SETTINGS, then frames.
func h2Frames(build func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) []byte {
	var out, hb bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	fr.WriteSettings() //nolint:errcheck // into memory
	build(fr, hpack.NewEncoder(&hb), &hb)
	return out.Bytes()
}

func h2Request(enc *hpack.Encoder, hb *bytes.Buffer, extra ...hpack.HeaderField) []byte {
	hb.Reset()
	for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "greeter"}, {Name: ":path", Value: "/echo"}}, extra...) {
		enc.WriteField(f) //nolint:errcheck // into memory
	}
	return bytes.Clone(hb.Bytes())
}

// FuzzH2Relay sends the relay's downstream side whatever a client might:
// it never panics, and a connection the client closes ends promptly,
// whatever came before.
func FuzzH2Relay(f *testing.F) {
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h2Request(enc, hb), EndHeaders: true}) //nolint:errcheck // into memory
		fr.WriteData(1, true, []byte("hello"))                                                                     //nolint:errcheck // into memory
	}))
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) { // CONTINUATION flood
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h2Request(enc, hb)}) //nolint:errcheck // into memory
		for range 200 {
			fr.WriteContinuation(1, false, bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 100)) //nolint:errcheck // into memory
		}
	}))
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) { // rapid reset
		for id := uint32(1); id < 600; id += 2 {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h2Request(enc, hb), EndHeaders: true}) //nolint:errcheck // into memory
			fr.WriteRSTStream(id, http2.ErrCodeCancel)                                                                  //nolint:errcheck // into memory
		}
	}))
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) { // windows: zero, then overflow
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})                                //nolint:errcheck // into memory
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h2Request(enc, hb), EndHeaders: true}) //nolint:errcheck // into memory
		fr.WriteData(1, true, bytes.Repeat([]byte("a"), 1000))                                                     //nolint:errcheck // into memory
		fr.WriteWindowUpdate(1, 1<<31-1)                                                                           //nolint:errcheck // into memory
		fr.WriteWindowUpdate(0, 1<<31-1)                                                                           //nolint:errcheck // into memory
	}))
	cl := upstreams(f, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body) //nolint:errcheck // the test's upstream
	}))
	tp := startProxy(f, cl)
	f.Fuzz(func(t *testing.T, data []byte) {
		if !bytes.HasPrefix(data, []byte(http2.ClientPreface)) {
			data = append([]byte(http2.ClientPreface), data...)
		}
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			c.Write(data)                 //nolint:errcheck // the proxy may close first
			c.(*net.TCPConn).CloseWrite() //nolint:errcheck // the proxy may close first
		}()
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a failed set shows on the read
		if _, err := io.Copy(io.Discard, c); err != nil {
			if isTimeout(err) {
				t.Fatalf("the relay kept a connection the client closed for 10 s")
			}
		}
	})
}

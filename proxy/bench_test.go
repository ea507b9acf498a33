package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// serveConns serves loopback connections with handle, each in a
// goroutine, until the benchmark ends, and returns the address.
func serveConns(b *testing.B, handle func(c net.Conn)) netip.AddrPort {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(lis.Addr().String())
}

// rawUpstream answers every request on its connections with a fixed
// response, reading heads and Content-Length bodies with no allocation,
// so a benchmark's allocations are the proxy's.
func rawUpstream(b *testing.B, resp []byte) netip.AddrPort {
	b.Helper()
	return serveConns(b, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			for {
				end := bytes.Index(buf[:n], []byte("\r\n\r\n"))
				if end < 0 {
					break
				}
				total := end + 4 + contentLength(buf[:end])
				if n < total {
					break
				}
				if _, err := c.Write(resp); err != nil {
					return
				}
				n = copy(buf, buf[total:n])
			}
		}
	})
}

func contentLength(head []byte) int {
	i := bytes.Index(head, []byte("Content-Length: "))
	if i < 0 {
		return 0
	}
	j := i + len("Content-Length: ")
	n := 0
	for j < len(head) && head[j] >= '0' && head[j] <= '9' {
		n = n*10 + int(head[j]-'0')
		j++
	}
	return n
}

// benchProxy starts a proxy whose one cluster is the endpoint up, with
// the request metrics and the resilience interceptors on and no tracing,
// and returns its address; every connection to it "was going" to testVIP.
func benchProxy(b *testing.B, up netip.AddrPort) string {
	b.Helper()
	m, err := interceptor.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	eps := []*balancer.Endpoint{{Addr: up, Stats: &balancer.Stats{}, Healthy: true, Weight: 1}}
	picker, _ := balancer.New("ROUND_ROBIN", eps, balancer.Locality{})
	cl := &Cluster{Name: "bench", Host: "greeter.default.svc.cluster.local", Endpoints: eps, Picker: picker,
		Resilience: &interceptor.Policy{State: &interceptor.PolicyState{}, MaxRequests: 1024}}
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return testVIP, nil }
	b.Cleanup(func() { originalDst = orig })
	p := New(Options{Interceptors: []interceptor.Middleware{m.Middleware(), interceptor.Fault, interceptor.Timeout,
		interceptor.CircuitBreaker(nil)}})
	tb := NewTable()
	tb.ByVIP[testVIP], tb.Clusters[cl.Name] = cl, cl
	p.SetTable(tb)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Serve(lis, Outbound); close(done) }()
	b.Cleanup(func() {
		p.Shutdown(context.Background()) //nolint:errcheck // the benchmark is over
		<-done
	})
	return lis.Addr().String()
}

// BenchmarkProxyHTTP1 is one proxied keep-alive request: a 1 KiB POST
// and its 1 KiB answer through the HTTP/1.1 engine, with the request
// metrics on and no tracing. The client and upstream allocate nothing, so
// allocs/op is the proxy's.
func BenchmarkProxyHTTP1(b *testing.B) {
	payload := strings.Repeat("x", 1024)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + payload)
	c, err := net.Dial("tcp", benchProxy(b, rawUpstream(b, resp)))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("POST /greet HTTP/1.1\r\nHost: greeter\r\nUser-Agent: bench\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(payload)) + "\r\n\r\n" + payload)
	buf := make([]byte, 8<<10)
	one := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil && !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			n += m
			if end := bytes.Index(buf[:n], []byte("\r\n\r\n")); end >= 0 && n >= end+4+contentLength(buf[:end]) {
				return
			}
			if errors.Is(err, io.EOF) {
				b.Fatal("proxy closed the connection")
			}
		}
	}
	for range 100 { // warm up: pools, buffers, metric series
		one()
	}
	b.ReportAllocs()
	b.SetBytes(int64(2 * len(payload)))
	for b.Loop() {
		one()
	}
}

// h2Upstream answers every stream on its connections with a fixed
// gRPC-like answer (HEADERS, one DATA, trailers), from frames it keeps.
func h2Upstream(b *testing.B, body []byte) netip.AddrPort {
	b.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})                   //nolint:errcheck // into memory
	enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"}) //nolint:errcheck // into memory
	head := bytes.Clone(hb.Bytes())
	hb.Reset()
	enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"}) //nolint:errcheck // into memory
	trailers := bytes.Clone(hb.Bytes())
	return serveConns(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := io.ReadFull(br, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		bw := bufio.NewWriter(c)
		fr := http2.NewFramer(bw, br)
		fr.SetReuseFrames()
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30}) //nolint:errcheck // the peer sees
		fr.WriteWindowUpdate(0, 1<<30-65535)                                              //nolint:errcheck // the peer sees
		bw.Flush()                                                                        //nolint:errcheck // the peer sees
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck() //nolint:errcheck // the peer sees
				}
			case *http2.DataFrame:
				if f.StreamEnded() { // the windows are a GiB: no updates
					id := f.StreamID
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: head, EndHeaders: true})                      //nolint:errcheck // the peer sees
					fr.WriteData(id, false, body)                                                                                      //nolint:errcheck // the peer sees
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: trailers, EndHeaders: true, EndStream: true}) //nolint:errcheck // the peer sees
				}
			}
			if br.Buffered() == 0 {
				if bw.Flush() != nil {
					return
				}
			}
		}
	})
}

// BenchmarkProxyH2 is one gRPC-like unary call (a 1 KiB message each
// way, trailers) relayed by the HTTP/2 relay on a kept connection, with
// the request metrics on. The client and the upstream are raw framers;
// their header decoding allocates a little, so allocs/op is an upper
// bound of the relay's.
func BenchmarkProxyH2(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	c, err := net.Dial("tcp", benchProxy(b, h2Upstream(b, body)))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		b.Fatal(err)
	}
	fr := http2.NewFramer(c, bufio.NewReader(c))
	fr.SetReuseFrames()
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30}) //nolint:errcheck // checked by the reads
	fr.WriteWindowUpdate(0, 1<<30-65535)                                              //nolint:errcheck // checked by the reads
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "greeter:9090"}, {Name: ":path", Value: "/greeter.Greeter/Echo"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}} {
		enc.WriteField(f) //nolint:errcheck // into memory
	}
	head := bytes.Clone(hb.Bytes())
	id := uint32(1)
	one := func() {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: head, EndHeaders: true}); err != nil {
			b.Fatal(err)
		}
		if err := fr.WriteData(id, true, body); err != nil {
			b.Fatal(err)
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			switch f := f.(type) {
			case *http2.HeadersFrame:
				if f.StreamID == id && f.StreamEnded() {
					id += 2
					return
				}
			case *http2.RSTStreamFrame:
				b.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
			case *http2.GoAwayFrame:
				b.Fatalf("GOAWAY %v", f.ErrCode)
			}
		}
	}
	for range 100 { // warm up: pools, buffers, metric series
		one()
	}
	b.ReportAllocs()
	b.SetBytes(int64(2 * len(body)))
	for b.Loop() {
		one()
	}
}

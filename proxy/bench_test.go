package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// rawUpstream answers every request on its connections with a fixed
// response, reading heads and Content-Length bodies with no allocation,
// so a benchmark's allocations are the proxy's.
func rawUpstream(b *testing.B, resp []byte) netip.AddrPort {
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
			}()
		}
	}()
	return netip.MustParseAddrPort(lis.Addr().String())
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

// BenchmarkProxyHTTP1 is one proxied keep-alive request: a 1 KiB POST
// and its 1 KiB answer through the HTTP/1.1 engine, with the request
// metrics on and no tracing. The client and upstream allocate nothing, so
// allocs/op is the proxy's.
func BenchmarkProxyHTTP1(b *testing.B) {
	payload := strings.Repeat("x", 1024)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + payload)
	up := rawUpstream(b, resp)
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
	defer func() { originalDst = orig }()
	p := New(Options{Interceptors: []interceptor.Middleware{m.Middleware(), interceptor.Fault, interceptor.Timeout,
		interceptor.CircuitBreaker(nil)}})
	tb := NewTable()
	tb.ByVIP[testVIP], tb.Clusters[cl.Name] = cl, cl
	p.SetTable(tb)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.Serve(lis, Outbound)
	defer p.Shutdown(b.Context())
	c, err := net.Dial("tcp", lis.Addr().String())
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

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// TestOwnPortsRefused: a connection to the sidecar's own port on its own
// address is closed at once, not forwarded to the sidecar again (one
// connection grew to thousands before).
func TestOwnPortsRefused(t *testing.T) {
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort("127.0.0.1:15006"), nil }
	defer func() { originalDst = orig }()
	p := New(Options{OwnPorts: []uint16{15001, 15006}})
	defer p.Shutdown(t.Context())
	for _, d := range []Direction{Outbound, Inbound} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go p.Serve(lis, d)
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%v: read %v, want the connection closed", d, err)
		}
		c.Close()
	}
	if n := p.Stats.SelfRefused.Load(); n != 2 {
		t.Errorf("%d connections refused as the sidecar's own, want 2", n)
	}
}

// flakyListener fails its first accepts as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptKeepsGoing: EMFILE does not end the accept loop; it backs off
// and serves the next connection.
func TestAcceptKeepsGoing(t *testing.T) {
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort("127.0.0.1:15006"), nil }
	defer func() { originalDst = orig }()
	p := New(Options{OwnPorts: []uint16{15006}})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(&flakyListener{Listener: inner, fails: 5}, Outbound) }()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Read(make([]byte, 1)) // closed by the proxy once accepted
	c.Close()
	if n := p.Stats.AcceptErrors.Load(); n != 5 {
		t.Errorf("%d accept errors counted, want 5", n)
	}
	if n := p.Stats.SelfRefused.Load(); n != 1 {
		t.Errorf("the connection after the errors was not served (refused %d, want 1)", n)
	}
	p.Shutdown(t.Context())
	if err := <-done; err != nil {
		t.Errorf("Serve returned %v after Shutdown, want nil", err)
	}
}

// TestShutdownDeadlineClosesUpstream: a TCP upstream that ignores the
// half close (never answers, never closes) does not hold a drain past
// its deadline: both sides are closed then.
func TestShutdownDeadlineClosesUpstream(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := up.Accept()
		if err == nil {
			accepted <- c // held open, never read, never closed
		}
	}()
	ep := &balancer.Endpoint{Addr: netip.MustParseAddrPort(up.Addr().String()), Stats: &balancer.Stats{}, Healthy: true, Weight: 1}
	picker, err := balancer.New("ROUND_ROBIN", []*balancer.Endpoint{ep}, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	cl := &Cluster{Name: "tcp", Host: "db.default.svc.cluster.local", Protocol: "TCP", Endpoints: []*balancer.Endpoint{ep}, Picker: picker,
		Resilience: &interceptor.Policy{State: &interceptor.PolicyState{}}}
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return testVIP, nil }
	defer func() { originalDst = orig }()
	p := New(Options{DialTimeout: time.Second})
	table := NewTable()
	table.ByVIP[testVIP], table.Clusters[cl.Name] = cl, cl
	p.SetTable(table)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(lis, Outbound)
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("SELECT 1\n")); err != nil {
		t.Fatal(err)
	}
	var held net.Conn
	select {
	case held = <-accepted:
		defer held.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream got no connection")
	}
	c.(*net.TCPConn).CloseWrite() // the client is done; the upstream ignores it
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown still waits 5 s after its 200 ms deadline: the silent upstream holds it")
	}
	t.Logf("drained in %v", time.Since(start))
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(held); err != nil {
		t.Errorf("the upstream's side: %v, want EOF (closed by the drain)", err)
	}
}

// TestStrictReachesOpenConnections: a switch to STRICT applies to
// connections already open in plaintext: the next request on a kept-alive
// HTTP connection is refused (403, NMTLS), and an open TCP connection is
// closed.
func TestStrictReachesOpenConnections(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "secret") }))
	defer app.Close()
	tcpApp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpApp.Close()
	go func() {
		for {
			c, err := tcpApp.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c) //nolint:errcheck // an echo
		}
	}()
	httpDst, tcpDst := netip.MustParseAddrPort(strings.TrimPrefix(app.URL, "http://")), netip.MustParseAddrPort(tcpApp.Addr().String())
	var dst atomic.Value
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return dst.Load().(netip.AddrPort), nil }
	defer func() { originalDst = orig }()
	table := func(mode string) *Table {
		tb := NewTable()
		web := &Cluster{Name: "web", Host: "web.default.svc.cluster.local", MTLSMode: mode}
		db := &Cluster{Name: "db", Host: "db.default.svc.cluster.local", Protocol: "TCP", MTLSMode: mode}
		tb.Clusters["web"], tb.Clusters["db"] = web, db
		tb.ByAddrPort[httpDst], tb.ByAddrPort[tcpDst] = []*Cluster{web}, []*Cluster{db}
		tb.ByAddr[httpDst.Addr()] = []*Cluster{web, db}
		return tb
	}
	p := New(Options{InboundAddr: netip.MustParseAddr("127.0.0.1")}) // the app listens on loopback here
	defer p.Shutdown(t.Context())
	p.SetTable(table(xdsclient.MTLSPermissive))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(lis, Inbound)

	dst.Store(httpDst)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", lis.Addr().String())
	}, MaxConnsPerHost: 1}}
	get := func() int {
		resp, err := hc.Get("http://web/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("PERMISSIVE plaintext: %d", code)
	}
	dst.Store(tcpDst)
	tc, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := tc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tc, buf); err != nil {
		t.Fatalf("TCP echo under PERMISSIVE: %v", err)
	}

	p.SetTable(table(xdsclient.MTLSStrict))
	if code := get(); code != http.StatusForbidden {
		t.Errorf("the kept-alive plaintext connection after STRICT: %d, want 403", code)
	}
	if _, err := io.ReadFull(tc, buf); err == nil {
		t.Error("the open plaintext TCP connection still works after STRICT")
	}
}

// TestInboundTarget: inbound traffic goes to the pod address it was sent
// to; a destination that is none of the pod's addresses (a packet sent to
// another host, which REDIRECT takes in all the same) is refused rather
// than dialled, so the sidecar relays nowhere but its own pod; the
// loopback opt-out delivers to 127.0.0.1.
func TestInboundTarget(t *testing.T) {
	p := New(Options{})
	defer p.Shutdown(t.Context())
	local := LocalAddrs()
	if len(local) == 0 {
		local = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	own := netip.AddrPortFrom(local[0], 8080)
	if got, ok := p.inboundTarget(own); !ok || got != own {
		t.Errorf("inboundTarget(%s) = %s, %v; want itself", own, got, ok)
	}
	for _, foreign := range []string{"192.0.2.1:80", "[2001:db8::1]:80", "0.0.0.0:80", "127.0.0.1:6060", "127.9.9.9:80", "[::ffff:127.0.0.1]:80", "[::1]:80"} {
		if got, ok := p.inboundTarget(netip.MustParseAddrPort(foreign)); ok {
			t.Errorf("inboundTarget(%s) = %s; want refused: not this pod's address", foreign, got)
		}
	}
	lo := New(Options{InboundAddr: netip.MustParseAddr("127.0.0.1")})
	defer lo.Shutdown(t.Context())
	if got, ok := lo.inboundTarget(own); !ok || got != netip.MustParseAddrPort("127.0.0.1:8080") {
		t.Errorf("with InboundAddr 127.0.0.1: %s, %v", got, ok)
	}
}

// TestMaxConnections: past MaxConnections a new connection is closed at
// accept and counted; once one closes, the next is served again.
func TestMaxConnections(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c) //nolint:errcheck // an echo, closed when its client is
				c.Close()
			}()
		}
	}()
	orig := originalDst
	originalDst = func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort(echo.Addr().String()), nil }
	defer func() { originalDst = orig }()
	p := New(Options{MaxConnections: 2, DetectTimeout: 10 * time.Millisecond})
	defer p.Shutdown(t.Context())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(lis, Outbound)
	works := func(c net.Conn) bool {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return false
		}
		b := make([]byte, 4)
		_, err := io.ReadFull(c, b)
		return err == nil && string(b) == "ping"
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(), dial()
	defer b.Close()
	if !works(a) || !works(b) {
		t.Fatal("the first two connections do not echo")
	}
	third := dial()
	if works(third) {
		t.Error("a third connection was served past MaxConnections 2")
	}
	third.Close()
	if n := p.Stats.Overflow.Load(); n != 1 {
		t.Errorf("overflow counted %d, want 1", n)
	}
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial()
		ok := works(c)
		c.Close()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection served after one of the two closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

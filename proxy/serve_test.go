package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
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

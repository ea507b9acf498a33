package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestPoolReap: Trim closes the connections idle past the pool's timeout
// on every endpoint, also one nothing is sent to any more (put only
// drops them from the list it puts to), and keeps the fresh ones.
func TestPoolReap(t *testing.T) {
	var p pool
	pipe := func(key poolKey, idle time.Duration) net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		uc := newUpConn(a, key, "")
		p.put(uc)
		uc.idleSince = time.Now().Add(-idle)
		return b
	}
	gone := poolKey{addr: netip.MustParseAddrPort("10.0.0.1:80")}
	live := poolKey{addr: netip.MustParseAddrPort("10.0.0.2:80")}
	old := pipe(gone, 2*poolIdleTimeout)
	pipe(live, time.Second)
	if n := p.reap(time.Now()); n != 1 {
		t.Fatalf("reaped %d connections, want the 1 idle past %v", n, poolIdleTimeout)
	}
	if p.idle(gone) != 0 || p.idle(live) != 1 {
		t.Errorf("idle after reaping: %d to the forgotten endpoint, %d to the live one; want 0 and 1", p.idle(gone), p.idle(live))
	}
	old.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := old.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the reaped connection is still open: %v", err)
	}
}

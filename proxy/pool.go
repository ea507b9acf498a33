package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Pool limits.
const (
	// maxIdlePerEndpoint bounds the idle connections kept per endpoint.
	maxIdlePerEndpoint = 256
	// poolIdleTimeout closes connections idle longer; below the keep-alive
	// timeouts servers commonly use (nginx 75 s, Node 5 s is the odd one:
	// a stale connection is retried once on a fresh one, see tryHTTP1).
	poolIdleTimeout = 60 * time.Second
)

// upConn is one upstream HTTP/1.1 connection: plaintext, or the mesh's
// mutual TLS with the SPIFFE ID the server presented.
type upConn struct {
	net.Conn
	key       poolKey
	peerID    string
	idleSince time.Time
	// used is set once a request went over it: a failure on a used
	// connection may just be the server having closed it while idle.
	used bool
	// raw and peek look at a plaintext connection without reading it
	// (built once per connection: no allocation per check).
	raw     syscall.RawConn
	peek    func(fd uintptr) bool
	peekN   int
	peekErr error
}

// stale reports whether an idle connection can no longer carry a
// request: the server closed it, or sent bytes nobody asked for (a body
// after a 204, a late error). One non-blocking peek; the mesh's TLS
// connections are not peeked (a TLS 1.3 session ticket may be waiting
// there), a failure on them is retried once when it is safe.
func (uc *upConn) stale() bool {
	if uc.raw == nil {
		return false
	}
	if err := uc.raw.Read(uc.peek); err != nil {
		return true
	}
	if uc.peekN > 0 || uc.peekErr == nil { // bytes, or EOF
		return true
	}
	return !errors.Is(uc.peekErr, unix.EAGAIN)
}

// newUpConn wraps a fresh connection.
func newUpConn(c net.Conn, key poolKey, peerID string) *upConn {
	uc := &upConn{Conn: c, key: key, peerID: peerID}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			var b [1]byte
			uc.raw = raw
			uc.peek = func(fd uintptr) bool {
				// recvfrom without an address to fill (unix.Recvfrom
				// allocates one).
				n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
					unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
				uc.peekN, uc.peekErr = int(n), nil
				if errno != 0 {
					uc.peekN, uc.peekErr = 0, errno
				}
				return true
			}
		}
	}
	return uc
}

type poolKey struct {
	addr netip.AddrPort
	// mesh: a connection checked for one server identity is never used
	// where another is wanted.
	mesh meshPeer
}

// pool keeps idle upstream HTTP/1.1 connections per endpoint, most
// recently used first (LIFO: the warm ones stay warm, the cold ones time
// out). Each endpoint's list has its own lock; the map is a sync.Map, so
// the request path takes no lock shared by all endpoints.
type pool struct {
	lists sync.Map // poolKey → *idleList
	dial  func(ctx context.Context, key poolKey) (*upConn, error)
}

type idleList struct {
	mu    sync.Mutex // guards conns
	conns []*upConn
}

func (p *pool) list(key poolKey) *idleList {
	if l, ok := p.lists.Load(key); ok {
		return l.(*idleList)
	}
	l, _ := p.lists.LoadOrStore(key, &idleList{})
	return l.(*idleList)
}

// get lends an idle connection to key, or dials one.
func (p *pool) get(ctx context.Context, key poolKey) (*upConn, error) {
	l := p.list(key)
	now := time.Now()
	l.mu.Lock()
	for len(l.conns) > 0 {
		uc := l.conns[len(l.conns)-1]
		l.conns[len(l.conns)-1] = nil
		l.conns = l.conns[:len(l.conns)-1]
		if now.Sub(uc.idleSince) < poolIdleTimeout && !uc.stale() {
			l.mu.Unlock()
			return uc, nil
		}
		uc.Close()
	}
	l.mu.Unlock()
	return p.dial(ctx, key)
}

// put returns a connection whose last response ended cleanly.
func (p *pool) put(uc *upConn) {
	uc.used = true
	uc.idleSince = time.Now()
	l := p.list(uc.key)
	l.mu.Lock()
	l.dropExpiredLocked(uc.idleSince)
	if len(l.conns) >= maxIdlePerEndpoint {
		l.mu.Unlock()
		uc.Close()
		return
	}
	l.conns = append(l.conns, uc)
	l.mu.Unlock()
}

// reap closes the connections idle longer than poolIdleTimeout at now
// and returns how many. put drops them too, but only from the list it
// puts to: an endpoint called once would keep its connections (and
// their buffers, a TLS connection's among them) for ever.
func (p *pool) reap(now time.Time) int {
	n := 0
	p.lists.Range(func(_, v any) bool {
		l := v.(*idleList)
		l.mu.Lock()
		n += l.dropExpiredLocked(now)
		if len(l.conns) == 0 {
			l.conns = nil // the list's array goes too
		}
		l.mu.Unlock()
		return true
	})
	return n
}

// dropExpiredLocked closes the connections idle longer than
// poolIdleTimeout at now (the oldest are at the bottom) and returns how
// many; l.mu is held.
func (l *idleList) dropExpiredLocked(now time.Time) int {
	drop := 0
	for drop < len(l.conns) && now.Sub(l.conns[drop].idleSince) >= poolIdleTimeout {
		l.conns[drop].Close()
		drop++
	}
	if drop > 0 {
		k := copy(l.conns, l.conns[drop:])
		clear(l.conns[k:])
		l.conns = l.conns[:k]
	}
	return drop
}

// closeIdle closes every idle connection (drain, tests).
func (p *pool) closeIdle() {
	p.lists.Range(func(_, v any) bool {
		l := v.(*idleList)
		l.mu.Lock()
		for _, uc := range l.conns {
			uc.Close()
		}
		clear(l.conns)
		l.conns = l.conns[:0]
		l.mu.Unlock()
		return true
	})
}

// idle counts the idle connections to key.
func (p *pool) idle(key poolKey) int {
	l := p.list(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

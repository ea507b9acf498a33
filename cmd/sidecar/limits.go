package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Bounds of the sidecar's own HTTP servers (admin :15000, metrics
// :15090): a probe, a scrape or an operator's curl needs little, and a
// pod that sends unfinished heads must not grow the sidecar's heap.
const (
	adminMaxHeaderBytes  = 16 << 10
	adminHeaderTimeout   = 5 * time.Second
	adminReadTimeout     = 10 * time.Second
	adminWriteTimeout    = 30 * time.Second
	adminIdleTimeout     = 60 * time.Second
	defaultAdminMaxConns = 64
)

// adminServer is an http.Server for h with the bounds above.
func adminServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    adminMaxHeaderBytes,
		ReadHeaderTimeout: adminHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
	}
}

// limitListener accepts at most n connections open at once: Accept waits
// for one to close.
func limitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &capped{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type capped struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *capped) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &cappedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *capped) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

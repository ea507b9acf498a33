package main

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
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

// limitListener accepts at most n connections open at once (x/net's
// netutil.LimitListener: Accept waits for one to close); n 0 or less: no
// cap.
func limitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return netutil.LimitListener(l, n)
}

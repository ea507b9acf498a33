package main

import (
	"net/http"
	"time"
)

// Bounds of the control plane's HTTP servers that take no flag.
const (
	webhookHeaderTimeout = 5 * time.Second
	webhookIdleTimeout   = 90 * time.Second
	webhookMaxHeader     = 64 << 10
)

// limitConcurrency lets at most n requests into h at once; the others
// wait for a slot until their context ends, then get 503.
func limitConcurrency(h http.Handler, n int) http.Handler {
	if n <= 0 {
		return h
	}
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
		case <-r.Context().Done():
			http.Error(w, "busy: too many requests in flight", http.StatusServiceUnavailable)
			return
		}
		defer func() { <-slots }()
		h.ServeHTTP(w, r)
	})
}

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestWait(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" || !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := runWait(context.Background(), []string{"--admin-addr", addr, "--timeout", "500ms"}); err == nil ||
		!strings.Contains(err.Error(), "503") {
		t.Errorf("not ready: got %v, want a timeout naming the last answer", err)
	}
	ready.Store(true)
	if err := runWait(context.Background(), []string{"--admin-addr", addr, "--timeout", "5s"}); err != nil {
		t.Errorf("ready: %v", err)
	}
	if err := runWait(context.Background(), []string{"extra"}); err == nil {
		t.Error("an unexpected argument was accepted")
	}
}

package main

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestAdminServerBounds: the admin and metrics servers refuse big heads
// and keep at most their cap of connections open (issue 22, item 9).
func TestAdminServerBounds(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := adminServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })) //nolint:errcheck // test
	done := make(chan error, 1)
	go func() { done <- srv.Serve(limitListener(lis, 1)) }()
	defer func() {
		srv.Close()
		<-done
	}()
	addr := lis.Addr().String()
	get := func(c net.Conn, head string) (string, error) {
		c.SetDeadline(time.Now().Add(time.Second)) //nolint:errcheck // test
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n" + head + "\r\n")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}

	big, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	line, err := get(big, "X-Big: "+strings.Repeat("a", 64<<10)+"\r\n")
	if err != nil || !strings.Contains(line, "431") {
		t.Errorf("a 64 KiB head: got %q %v, want 431", line, err)
	}
	big.Close()

	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := get(first, ""); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("first connection: got %q %v, want 200", line, err)
	}
	second, err := net.Dial("tcp", addr) // the kernel accepts; the server does not
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if line, err := get(second, ""); err == nil {
		t.Errorf("a second connection over the cap of 1: got %q, want no answer while the first is open", line)
	}
	first.Close()
	// The second connection, queued, is served now.
	second.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck // test
	if line, err := bufio.NewReader(second).ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Errorf("the queued connection after the first closed: got %q %v, want 200", line, err)
	}
}

// TestMetricsNotGzipped: a scrape that asks for gzip (Prometheus does)
// gets plain text, so the sidecar keeps no pooled gzip writers (about
// 0.9 MiB each) for it.
func TestMetricsNotGzipped(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tender_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	metricsHandler(reg).ServeHTTP(rec, req)
	if enc := rec.Header().Get("Content-Encoding"); enc != "" || !strings.Contains(rec.Body.String(), "tender_test_total 0") {
		t.Errorf("Content-Encoding %q, body %q: want plain text", enc, rec.Body.String())
	}
}

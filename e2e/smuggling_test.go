package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSidecarSmuggling sends what request smuggling and bad input are
// made of over raw connections from the client pod to the greeter's VIP,
// through the client's sidecar: each is refused with its status, nothing
// reaches the greeter's sidecar, and a good request on a fresh connection
// works after it. A connection to the sidecar's own inbound port on the
// pod's address is refused instead of looping back into the sidecar.
func TestSidecarSmuggling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 1)
	g := m.greeters[0]
	c := m.client.httpClient(false)
	defer c.CloseIdleConnections()
	if _, err := greetHTTP(c); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"Content-Length with Transfer-Encoding", "POST /greet HTTP/1.1\r\nHost: greeter\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: greeter\r\n\r\n", 400},
		{"two Content-Lengths", "POST /greet HTTP/1.1\r\nHost: greeter\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd", 400},
		{"Transfer-Encoding not chunked last", "POST /greet HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501},
		{"chunk size overflow", "POST /greet HTTP/1.1\r\nHost: greeter\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n", 400},
		{"obs-fold", "GET /greet HTTP/1.1\r\nHost: greeter\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400},
		{"space before colon", "GET /greet HTTP/1.1\r\nHost: greeter\r\nContent-Length : 5\r\n\r\n", 400},
		{"NUL in a value", "GET /greet HTTP/1.1\r\nHost: greeter\r\nX-A: a\x00b\r\n\r\n", 400},
		{"bare CR", "GET /greet HTTP/1.1\r\nHost: greeter\r\nX-A: a\rb\r\n\r\n", 400},
		{"head over 60 KiB", "GET /greet HTTP/1.1\r\nHost: greeter\r\nX-Big: " + strings.Repeat("a", 61<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := inboundRequests(ctx, t, g)
			conn, err := m.client.dial(ctx, "tcp", greeterVIP+":80")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, tc.req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("got %d, want %d", resp.StatusCode, tc.status)
			}
			if n := inboundRequests(ctx, t, g) - before; n != 0 {
				t.Errorf("%d requests reached the greeter's sidecar, want none", n)
			}
			if _, err := greetHTTP(m.client.httpClient(false)); err != nil {
				t.Errorf("the next request on a fresh connection: %v", err)
			}
		})
	}

	t.Run("own inbound port", func(t *testing.T) {
		before := sidecarStat(ctx, t, m.client, "inbound_connections") + sidecarStat(ctx, t, m.client, "outbound_connections")
		conn, err := m.client.dial(ctx, "tcp", m.client.ip+":15006")
		if err != nil {
			return // refused at connect: as good
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if b, _ := io.ReadAll(conn); len(b) != 0 {
			t.Errorf("a connection to the sidecar's own port got %q, want it closed", b)
		}
		if _, err := greetHTTP(c); err != nil {
			t.Errorf("the sidecar after the self-connection: %v", err)
		}
		// Before the fix one connection grew to thousands in a second.
		if n := sidecarStat(ctx, t, m.client, "inbound_connections") + sidecarStat(ctx, t, m.client, "outbound_connections") - before; n > 5 {
			t.Errorf("the sidecar accepted %d connections for one to its own port, want it refused at once", n)
		}
	})
}

// TestInboundToPodAddress: the greeter's sidecar delivers inbound
// traffic to the pod address it was sent to, as Istio does since 1.10: a
// port the app binds to loopback only (an admin or pprof port) is not
// reachable from another pod, and a port bound to the pod address is.
// Before, the sidecar delivered to 127.0.0.1 and the loopback-only port
// answered the network.
func TestInboundToPodAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := newMesh(t, ctx, 1)
	g := m.greeters[0]
	g.start(t, "admin", "greeter", "--instance", "loopback-admin", "--http-addr", "127.0.0.1:9901", "--grpc-addr", "")
	g.start(t, "podip", "greeter", "--instance", "pod-ip-only", "--http-addr", g.ip+":9902", "--grpc-addr", "")
	waitPodHTTP(ctx, t, g, "http://127.0.0.1:9901/greet?name=local", 200)
	c := m.client.httpClient(false)
	defer c.CloseIdleConnections()
	body := pollHTTP(ctx, t, c, "http://"+g.ip+":9902/greet?name=remote", 200)
	if !strings.Contains(string(body), "pod-ip-only") {
		t.Errorf("the app bound to the pod address answered %q", body)
	}
	resp, err := c.Get("http://" + g.ip + ":9901/greet?name=remote")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "loopback-admin") {
			t.Fatalf("an app bound to 127.0.0.1 answered another pod: %s %q", resp.Status, b)
		}
	}
}

func sidecarStat(ctx context.Context, t *testing.T, p *pod, key string) int {
	t.Helper()
	var st map[string]int
	if err := json.Unmarshal(waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/stats", 200), &st); err != nil {
		t.Fatal(err)
	}
	return st[key]
}

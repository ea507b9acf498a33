package greeter

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

// loopback returns the loopback address of a bound address such as
// "[::]:1234".
func loopback(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("bound address %q: %v", addr, err)
	}
	if port == "0" {
		t.Fatalf("bound address %q: got port 0, want the bound port", addr)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

func httpGet(t *testing.T, client *http.Client, url string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestServerLifecycle(t *testing.T) {
	tests := []struct {
		name     string
		httpAddr string
		grpcAddr string
	}{
		{name: "both", httpAddr: ":0", grpcAddr: ":0"},
		{name: "HTTP only", httpAddr: ":0"},
		{name: "gRPC only", grpcAddr: ":0"},
		{name: "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(ServerOptions{Instance: "s1", HTTPAddr: tt.httpAddr, GRPCAddr: tt.grpcAddr})
			if err := srv.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if err := srv.Start(t.Context()); err == nil {
				t.Errorf("second Start: got nil error, want an error")
			}
			hc := &http.Client{}
			defer hc.CloseIdleConnections()
			var healthURL string
			if tt.httpAddr == "" {
				if got := srv.HTTPAddr(); got != "" {
					t.Errorf("HTTPAddr: got %q, want \"\"", got)
				}
			} else {
				healthURL = "http://" + loopback(t, srv.HTTPAddr()) + "/healthz"
				code, body, err := httpGet(t, hc, healthURL)
				if err != nil || code != http.StatusOK || body != "ok" {
					t.Errorf("GET /healthz: got %d %q %v, want 200 \"ok\" <nil>", code, body, err)
				}
			}
			if tt.grpcAddr == "" {
				if got := srv.GRPCAddr(); got != "" {
					t.Errorf("GRPCAddr: got %q, want \"\"", got)
				}
			} else {
				conn := dialGRPC(t, loopback(t, srv.GRPCAddr()))
				for _, service := range []string{"", pb.Greeter_ServiceDesc.ServiceName} {
					resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
					if err != nil {
						t.Fatalf("health Check(%q): %v", service, err)
					}
					if got, want := resp.GetStatus(), healthpb.HealthCheckResponse_SERVING; got != want {
						t.Errorf("health Check(%q): got %v, want %v", service, got, want)
					}
				}
				reply, err := pb.NewGreeterClient(conn).Greet(t.Context(), &pb.GreetRequest{Name: "World"})
				if err != nil {
					t.Fatalf("Greet: %v", err)
				}
				if got, want := reply.GetInstance(), "s1"; got != want {
					t.Errorf("Greet instance: got %q, want %q", got, want)
				}
			}

			if err := srv.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := srv.Close(); err != nil {
				t.Errorf("second Close: got %v, want nil", err)
			}
			if healthURL != "" {
				hc.CloseIdleConnections()
				if _, _, err := httpGet(t, hc, healthURL); err == nil {
					t.Errorf("GET /healthz after Close: got nil error, want an error")
				}
			}
			if err := srv.Start(t.Context()); err == nil {
				t.Errorf("Start after Close: got nil error, want an error")
			}
		})
	}
}

func TestServerStartFailure(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name string
		opts ServerOptions
	}{
		{name: "gRPC address taken", opts: ServerOptions{HTTPAddr: "127.0.0.1:0", GRPCAddr: taken.Addr().String()}},
		{name: "HTTP address taken", opts: ServerOptions{HTTPAddr: taken.Addr().String(), GRPCAddr: "127.0.0.1:0"}},
		{name: "bad address", opts: ServerOptions{HTTPAddr: "not an address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(tt.opts)
			if err := srv.Start(t.Context()); err == nil {
				t.Errorf("Start: got nil error, want an error")
			}
			if diff := cmp.Diff([]string{"", ""}, []string{srv.HTTPAddr(), srv.GRPCAddr()}); diff != "" {
				t.Errorf("bound addresses after a failed Start (-want +got):\n%s", diff)
			}
			if err := srv.Close(); err != nil {
				t.Errorf("Close after a failed Start: got %v, want nil", err)
			}
		})
	}
	t.Run("close before start", func(t *testing.T) {
		srv := NewServer(ServerOptions{HTTPAddr: "127.0.0.1:0"})
		if err := srv.Close(); err != nil {
			t.Errorf("Close: got %v, want nil", err)
		}
	})
}

// TestServerH2C checks that an HTTP/2 client with prior knowledge (h2c, no
// upgrade) is served, as a proxy in the mesh would connect.
func TestServerH2C(t *testing.T) {
	srv := startServer(t, ServerOptions{Instance: "h2", HTTPAddr: "127.0.0.1:0"})
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true) // HTTP/2 only, prior knowledge
	tr := &http.Transport{Protocols: protocols}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	payload := make([]byte, 4<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		method   string
		path     string
		body     []byte
		wantCode int
		wantBody string
	}{
		{name: "greet", method: http.MethodGet, path: "/greet?name=h2c", wantCode: http.StatusOK,
			wantBody: `{"message":"Hello, h2c","instance":"h2"}` + "\n"},
		{name: "status", method: http.MethodGet, path: "/status/502", wantCode: http.StatusBadGateway, wantBody: "Bad Gateway"},
		{name: "echo 4 MiB", method: http.MethodPost, path: "/echo", body: payload, wantCode: http.StatusOK, wantBody: digest(payload)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, "http://"+srv.HTTPAddr()+tt.path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if got, want := resp.Proto, "HTTP/2.0"; got != want {
				t.Errorf("protocol: got %s, want %s", got, want)
			}
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if got, want := resp.Header.Get("X-Instance"), "h2"; got != want {
				t.Errorf("X-Instance: got %q, want %q", got, want)
			}
			gotBody := string(body)
			if len(tt.body) > 0 {
				gotBody = digest(body)
			}
			if diff := cmp.Diff(tt.wantBody, gotBody); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

package greeter

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// startServer starts a Server on loopback and closes it when t ends.
func startServer(t *testing.T, opts ServerOptions) *Server {
	t.Helper()
	srv := NewServer(opts)
	if err := srv.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: got %v, want nil", err)
		}
	})
	return srv
}

func TestClients(t *testing.T) {
	srv := startServer(t, ServerOptions{Instance: "c1", HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"})
	hc := &http.Client{}
	t.Cleanup(hc.CloseIdleConnections)
	httpSvc, err := NewHTTPClient("http://"+srv.HTTPAddr(), hc)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	clients := []struct {
		name string
		svc  Service
	}{
		{name: "gRPC", svc: NewGRPCClient(dialGRPC(t, srv.GRPCAddr()))},
		{name: "HTTP", svc: httpSvc},
	}
	tests := []struct {
		name    string
		in      string
		want    Greeting
		wantErr error
	}{
		{name: "ok", in: "World", want: Greeting{Message: "Hello, World", Instance: "c1"}},
		{name: "empty name", in: "", wantErr: ErrEmptyName},
	}
	for _, c := range clients {
		for _, tt := range tests {
			t.Run(c.name+"/"+tt.name, func(t *testing.T) {
				got, err := c.svc.Greet(t.Context(), tt.in)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Greet(%q) error: got %v, want %v", tt.in, err, tt.wantErr)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Greet(%q) (-want +got):\n%s", tt.in, diff)
				}
			})
		}
		t.Run(c.name+"/canceled context", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if _, err := c.svc.Greet(ctx, "World"); err == nil {
				t.Errorf("Greet with a canceled context: got nil error, want an error")
			}
		})
	}
}

func TestNewHTTPClientBaseURL(t *testing.T) {
	tests := []struct {
		name    string
		baseURL string
		wantErr bool
	}{
		{name: "host and port", baseURL: "http://127.0.0.1:8080"},
		{name: "with path", baseURL: "https://example.test/api/"},
		{name: "no scheme", baseURL: "127.0.0.1:8080", wantErr: true},
		{name: "other scheme", baseURL: "ftp://example.test", wantErr: true},
		{name: "no host", baseURL: "http://", wantErr: true},
		{name: "unparsable", baseURL: "http://[::1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewHTTPClient(tt.baseURL, nil)
			if (err != nil) != tt.wantErr {
				t.Errorf("NewHTTPClient(%q): got error %v, want error %t", tt.baseURL, err, tt.wantErr)
			}
		})
	}
}

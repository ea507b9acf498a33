package greeter

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFrontend checks that a frontend answers with its backend's greeting,
// instance included, and passes its errors on.
func TestFrontend(t *testing.T) {
	backend := startServer(t, ServerOptions{Instance: "backend", HTTPAddr: "127.0.0.1:0"})
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneAddr := gone.Addr().String()
	gone.Close() // nothing listens there any more
	frontends := map[string]*Server{
		"up":   startFrontend(t, "http://"+backend.HTTPAddr()),
		"down": startFrontend(t, "http://"+goneAddr),
	}
	clients := map[string]map[string]Service{} // by backend, then transport
	for name, f := range frontends {
		clients[name] = map[string]Service{"HTTP": newHTTPClient(t, f), "gRPC": newGRPCClient(t, f)}
	}
	tests := []struct {
		name    string
		backend string // key of frontends
		in      string
		want    Greeting
		wantErr bool
		wantIs  error // when set, the error wraps it
	}{
		{name: "ok", backend: "up", in: "World", want: Greeting{Message: "Hello, World", Instance: "backend"}},
		{name: "empty name", backend: "up", in: "", wantErr: true, wantIs: ErrEmptyName},
		{name: "blank name", backend: "up", in: " ", wantErr: true, wantIs: ErrEmptyName},
		{name: "backend down", backend: "down", in: "World", wantErr: true},
	}
	for _, tt := range tests {
		for _, transport := range []string{"HTTP", "gRPC"} {
			t.Run(transport+"/"+tt.name, func(t *testing.T) {
				got, err := clients[tt.backend][transport].Greet(t.Context(), tt.in)
				if (err != nil) != tt.wantErr || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
					t.Fatalf("Greet(%q): got error %v, want error %t (wrapping %v)", tt.in, err, tt.wantErr, tt.wantIs)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Greet(%q) (-want +got):\n%s", tt.in, diff)
				}
			})
		}
	}
	t.Run("X-Instance names the frontend", func(t *testing.T) {
		hc := &http.Client{}
		defer hc.CloseIdleConnections()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+frontends["up"].HTTPAddr()+"/greet?name=World", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET /greet: %v", err)
		}
		defer resp.Body.Close()
		var g Greeting
		if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
			t.Fatalf("GET /greet: decode body: %v", err)
		}
		got := []string{resp.Header.Get(InstanceHeader), g.Instance}
		if diff := cmp.Diff([]string{"frontend", "backend"}, got); diff != "" {
			t.Errorf("[X-Instance header, reply instance] (-want +got):\n%s", diff)
		}
	})
}

package greeter

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

func TestFault(t *testing.T) {
	fault := &Fault{}
	srv := NewServer(ServerOptions{Instance: "s1", HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", Fault: fault})
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	base := "http://" + srv.HTTPAddr()
	c := &http.Client{Timeout: 5 * time.Second}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewGreeterClient(conn)

	put := func(query string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, base+"/fault?"+query, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	if code, _, _ := httpGet(t, c, base+"/greet?name=a"); code != 200 {
		t.Fatalf("no fault: got %d", code)
	}
	if got := put("status=503"); got != 200 {
		t.Fatalf("PUT /fault?status=503: %d", got)
	}
	if code, body, _ := httpGet(t, c, base+"/greet?name=a"); code != 503 || !strings.Contains(body, "fault") {
		t.Errorf("with status 503: got %d %q", code, body)
	}
	if code, _, _ := httpGet(t, c, base+"/healthz"); code != 200 {
		t.Errorf("health check failed under a fault: %d", code)
	}
	if _, err := gc.Greet(t.Context(), &pb.GreetRequest{Name: "a"}); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC with status 503: got %v, want UNAVAILABLE", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("gRPC health check failed under a fault: %v", err)
	}
	if _, body, _ := httpGet(t, c, base+"/fault"); !strings.Contains(body, `"status":503`) {
		t.Errorf("GET /fault = %q", body)
	}

	put("delay=100ms")
	start := time.Now()
	if code, _, _ := httpGet(t, c, base+"/greet?name=a"); code != 200 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("with a 100ms delay: %d after %v", code, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := gc.Greet(ctx, &pb.GreetRequest{Name: "a"}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("gRPC past its deadline in the delay: %v", err)
	}

	for _, bad := range []string{"status=99", "status=200", "status=x", "delay=-1s", "delay=soon"} {
		if got := put(bad); got != http.StatusBadRequest {
			t.Errorf("PUT /fault?%s: %d, want 400", bad, got)
		}
	}
	put("")
	if _, body, _ := httpGet(t, c, base+"/fault"); !strings.Contains(body, `"delay":"0s","status":0`) {
		t.Errorf("GET /fault after clearing = %q", body)
	}
	if code, _, _ := httpGet(t, c, base+"/greet?name=a"); code != 200 {
		t.Errorf("fault cleared: %d", code)
	}
}

package greeter

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

// dialGRPC connects to addr on loopback with the example's message limits.
func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// startGRPCTransport serves NewGRPCServer on a loopback listener.
func startGRPCTransport(t *testing.T, instance string) pb.GreeterClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
	pb.RegisterGreeterServer(s, NewGRPCServer(MakeEndpoints(NewService(instance)), instance))
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: got %v, want nil", err)
		}
	})
	return pb.NewGreeterClient(dialGRPC(t, lis.Addr().String()))
}

func TestGRPCGreet(t *testing.T) {
	c := startGRPCTransport(t, "r1")
	tests := []struct {
		name     string
		in       string
		want     *pb.GreetReply
		wantCode codes.Code
	}{
		{name: "ok", in: "World", want: &pb.GreetReply{Message: "Hello, World", Instance: "r1"}, wantCode: codes.OK},
		{name: "empty name", in: "", wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header metadata.MD
			got, err := c.Greet(t.Context(), &pb.GreetRequest{Name: tt.in}, grpc.Header(&header))
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("Greet(%q) code: got %v (%v), want %v", tt.in, code, err, tt.wantCode)
			}
			if diff := cmp.Diff(tt.want.GetMessage(), got.GetMessage()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want.GetInstance(), got.GetInstance()); diff != "" {
				t.Errorf("instance (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"r1"}, header.Get("x-instance")); diff != "" {
				t.Errorf("x-instance header (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGRPCEcho(t *testing.T) {
	c := startGRPCTransport(t, "r1")
	big := make([]byte, 16<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{name: "empty", payload: nil},
		{name: "small", payload: []byte("ping")},
		{name: "16 MiB", payload: big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header metadata.MD
			got, err := c.Echo(t.Context(), &pb.EchoMessage{Payload: tt.payload}, grpc.Header(&header))
			if err != nil {
				t.Fatalf("Echo(%d bytes): %v", len(tt.payload), err)
			}
			if diff := cmp.Diff(digest(tt.payload), digest(got.GetPayload())); diff != "" {
				t.Errorf("payload of %d bytes, got %d bytes back (-want +got):\n%s", len(tt.payload), len(got.GetPayload()), diff)
			}
			if got, want := got.GetInstance(), "r1"; got != want {
				t.Errorf("instance: got %q, want %q", got, want)
			}
			if diff := cmp.Diff([]string{"r1"}, header.Get("x-instance")); diff != "" {
				t.Errorf("x-instance header (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGRPCChat(t *testing.T) {
	c := startGRPCTransport(t, "r1")
	tests := []struct {
		name string
		n    int
	}{
		{name: "none", n: 0},
		{name: "one", n: 1},
		{name: "1000 in order", n: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := c.Chat(t.Context())
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			sent := make(chan error, 1)
			go func() {
				for i := range tt.n {
					if err := stream.Send(&pb.EchoMessage{Payload: fmt.Appendf(nil, "msg-%d", i)}); err != nil {
						sent <- fmt.Errorf("send %d: %w", i, err)
						return
					}
				}
				sent <- stream.CloseSend()
			}()
			var want, got []string
			for i := range tt.n {
				want = append(want, fmt.Sprintf("msg-%d r1", i))
			}
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Recv after %d messages: %v", len(got), err)
				}
				got = append(got, string(msg.GetPayload())+" "+msg.GetInstance())
			}
			if err := <-sent; err != nil {
				t.Fatalf("sending: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("echoed messages (-want +got):\n%s", diff)
			}
			header, err := stream.Header()
			if err != nil {
				t.Fatalf("Header: %v", err)
			}
			if diff := cmp.Diff([]string{"r1"}, header.Get("x-instance")); diff != "" {
				t.Errorf("x-instance header (-want +got):\n%s", diff)
			}
		})
	}
}

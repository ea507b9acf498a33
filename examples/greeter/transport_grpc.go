package greeter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	grpctransport "github.com/go-kit/kit/transport/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

// MaxMessageSize is the largest gRPC message, either way, that the
// example's servers and clients accept (Echo is tested with 16 MiB).
const MaxMessageSize = 64 << 20

// grpcServer is the gRPC transport: Greet goes through Go kit, Echo and
// Chat are transport-level test helpers implemented directly.
type grpcServer struct {
	pb.UnimplementedGreeterServer
	greet    grpctransport.Handler
	instance string
}

// NewGRPCServer returns the gRPC transport of e. Every reply names instance,
// and every call gets the response header metadata x-instance: instance.
func NewGRPCServer(e Endpoints, instance string) pb.GreeterServer {
	return &grpcServer{
		greet:    grpctransport.NewServer(e.Greet, decodeGRPCGreetRequest, encodeGRPCGreetResponse),
		instance: instance,
	}
}

func (s *grpcServer) header() metadata.MD {
	return metadata.Pairs(strings.ToLower(InstanceHeader), s.instance)
}

// Greet implements pb.GreeterServer.
func (s *grpcServer) Greet(ctx context.Context, req *pb.GreetRequest) (*pb.GreetReply, error) {
	if err := grpc.SetHeader(ctx, s.header()); err != nil {
		return nil, status.Errorf(codes.Internal, "set header: %v", err)
	}
	_, resp, err := s.greet.ServeGRPC(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}
	reply, ok := resp.(*pb.GreetReply)
	if !ok {
		return nil, status.Errorf(codes.Internal, "unexpected reply type %T", resp)
	}
	return reply, nil
}

// Echo implements pb.GreeterServer: it returns the payload unchanged.
func (s *grpcServer) Echo(ctx context.Context, msg *pb.EchoMessage) (*pb.EchoMessage, error) {
	if err := grpc.SetHeader(ctx, s.header()); err != nil {
		return nil, status.Errorf(codes.Internal, "set header: %v", err)
	}
	return &pb.EchoMessage{Payload: msg.GetPayload(), Instance: s.instance}, nil
}

// Chat implements pb.GreeterServer: it echoes every message, in order,
// until the client closes its side.
func (s *grpcServer) Chat(stream grpc.BidiStreamingServer[pb.EchoMessage, pb.EchoMessage]) error {
	if err := stream.SetHeader(s.header()); err != nil {
		return status.Errorf(codes.Internal, "set header: %v", err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("chat: receive: %w", err)
		}
		if err := stream.Send(&pb.EchoMessage{Payload: msg.GetPayload(), Instance: s.instance}); err != nil {
			return fmt.Errorf("chat: send: %w", err)
		}
	}
}

// grpcError maps a Greet error to a gRPC status error.
func grpcError(err error) error {
	switch {
	case errors.Is(err, ErrEmptyName):
		// The bare text, also when a frontend wraps its backend's error:
		// the client turns it back into ErrEmptyName.
		return status.Error(codes.InvalidArgument, ErrEmptyName.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

func decodeGRPCGreetRequest(_ context.Context, r any) (any, error) {
	req, ok := r.(*pb.GreetRequest)
	if !ok {
		return nil, fmt.Errorf("decode greet request: unexpected type %T", r)
	}
	return GreetRequest{Name: req.GetName()}, nil
}

func encodeGRPCGreetResponse(_ context.Context, r any) (any, error) {
	resp, ok := r.(GreetResponse)
	if !ok {
		return nil, fmt.Errorf("encode greet response: unexpected type %T", r)
	}
	return &pb.GreetReply{Message: resp.Message, Instance: resp.Instance}, nil
}

var (
	_ pb.GreeterServer                 = (*grpcServer)(nil)
	_ grpctransport.DecodeRequestFunc  = decodeGRPCGreetRequest
	_ grpctransport.EncodeResponseFunc = encodeGRPCGreetResponse
)

package greeter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/go-kit/kit/endpoint"
	grpctransport "github.com/go-kit/kit/transport/grpc"
	httptransport "github.com/go-kit/kit/transport/http"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

// NewGRPCClient returns a Service that calls Greet over conn, through a Go
// kit gRPC client endpoint. An empty name fails with an error that wraps
// ErrEmptyName. Dial conn with DialOptions to trace the calls and to use
// Echo with large messages.
func NewGRPCClient(conn *grpc.ClientConn) Service {
	greet := grpctransport.NewClient(
		conn,
		pb.Greeter_ServiceDesc.ServiceName,
		"Greet",
		encodeGRPCGreetRequest,
		decodeGRPCGreetReply,
		pb.GreetReply{},
	).Endpoint()
	return endpointService{greet: grpcClientErrors(greet)}
}

// DialOptions returns the dial options of the example's gRPC clients, to be
// completed with transport credentials: MaxMessageSize both ways, and a
// client span per call, from the global TracerProvider, whose context the
// call carries to the server.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
	}
}

// grpcClientErrors turns the server's InvalidArgument for an empty name
// back into ErrEmptyName.
func grpcClientErrors(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		resp, err := next(ctx, request)
		if err == nil {
			return resp, nil
		}
		if s, ok := status.FromError(err); ok && s.Code() == codes.InvalidArgument && s.Message() == ErrEmptyName.Error() {
			return nil, fmt.Errorf("greet: %w", ErrEmptyName)
		}
		return nil, fmt.Errorf("greet: %w", err)
	}
}

func encodeGRPCGreetRequest(_ context.Context, r any) (any, error) {
	req, ok := r.(GreetRequest)
	if !ok {
		return nil, fmt.Errorf("encode greet request: unexpected type %T", r)
	}
	return &pb.GreetRequest{Name: req.Name}, nil
}

func decodeGRPCGreetReply(_ context.Context, r any) (any, error) {
	reply, ok := r.(*pb.GreetReply)
	if !ok {
		return nil, fmt.Errorf("decode greet reply: unexpected type %T", r)
	}
	return GreetResponse{Message: reply.GetMessage(), Instance: reply.GetInstance()}, nil
}

// NewHTTPClient returns a Service that calls POST baseURL/greet through a
// Go kit HTTP client endpoint. A nil client means http.DefaultClient. An
// empty name fails with an error that wraps ErrEmptyName.
//
// Each call gets a client span ("POST /greet"), from the global
// TracerProvider, and carries its context to the server, so pass the
// context of the request being served to keep one trace. The requests go
// through a copy of client whose transport is wrapped for that;
// client.CloseIdleConnections still closes their connections.
func NewHTTPClient(baseURL string, client *http.Client) (Service, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("parse base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("base URL %q: want http(s)://host[:port][/path]", baseURL)
	}
	if client == nil {
		client = http.DefaultClient
	}
	traced := *client
	traced.Transport = otelhttp.NewTransport(client.Transport, otelhttp.WithSpanNameFormatter(
		func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path },
	))
	greet := httptransport.NewClient(
		http.MethodPost,
		u.JoinPath("greet"),
		encodeJSONRequest,
		decodeHTTPGreetResponse,
		httptransport.SetClient(&traced),
	).Endpoint()
	return endpointService{greet: greet}, nil
}

// encodeJSONRequest writes the request as JSON with its length, so it
// leaves as one piece (go-kit's EncodeJSONRequest streams it chunked) and
// a sidecar can send it again should the first try not reach a server.
func encodeJSONRequest(_ context.Context, r *http.Request, request any) error {
	b, err := json.Marshal(request)
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	r.ContentLength = int64(len(b))
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return nil
}

func decodeHTTPGreetResponse(_ context.Context, r *http.Response) (any, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody))
	if err != nil {
		return nil, fmt.Errorf("greet: read response: %w", err)
	}
	if r.StatusCode != http.StatusOK {
		var e httpError
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			return nil, fmt.Errorf("greet: HTTP %d: %q", r.StatusCode, body)
		}
		if r.StatusCode == http.StatusBadRequest && e.Error == ErrEmptyName.Error() {
			return nil, fmt.Errorf("greet: HTTP %d: %w", r.StatusCode, ErrEmptyName)
		}
		return nil, fmt.Errorf("greet: HTTP %d: %s", r.StatusCode, e.Error)
	}
	var resp GreetResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("greet: decode response: %w", err)
	}
	return resp, nil
}

var (
	_ grpctransport.EncodeRequestFunc  = encodeGRPCGreetRequest
	_ grpctransport.DecodeResponseFunc = decodeGRPCGreetReply
	_ httptransport.DecodeResponseFunc = decodeHTTPGreetResponse
)

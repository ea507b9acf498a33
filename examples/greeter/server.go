package greeter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tender-mesh/tender/examples/greeter/pb"
)

// shutdownTimeout bounds the graceful part of Close; connections still busy
// after it are closed.
const shutdownTimeout = 10 * time.Second

// ServerOptions configures a Server.
type ServerOptions struct {
	// Instance names this instance in replies and X-Instance headers.
	Instance string
	// HTTPAddr is the HTTP/1.1 and h2c listen address; empty disables HTTP.
	HTTPAddr string
	// GRPCAddr is the gRPC listen address; empty disables gRPC.
	GRPCAddr string
	// Logger receives server logs; nil discards them.
	Logger *slog.Logger
	// Service answers Greet; nil means NewService(Instance). A frontend
	// passes a client of its backend, such as NewHTTPClient's.
	Service Service
	// Fault, when set, makes the instance misbehave on purpose and serves
	// /fault to change how; nil: no fault, no /fault.
	Fault *Fault
}

// Server runs the greeter over HTTP (HTTP/1.1 and unencrypted HTTP/2) and
// gRPC (with the standard health service). Both transports trace requests
// with the global TracerProvider and propagator.
type Server struct {
	opts ServerOptions

	mu       sync.Mutex
	started  bool
	closed   bool
	httpSrv  *http.Server
	grpcSrv  *grpc.Server
	health   *health.Server
	wg       sync.WaitGroup
	httpAddr string
	grpcAddr string
}

// NewServer returns a Server; Start makes it listen.
func NewServer(opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts}
}

// Start binds the configured listeners and serves on them in the
// background. It fails, with nothing left bound, if a listener cannot be
// bound; it can be called once.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("greeter server: already started or closed")
	}
	var lc net.ListenConfig
	var httpLn, grpcLn net.Listener
	if s.opts.HTTPAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", s.opts.HTTPAddr)
		if err != nil {
			return fmt.Errorf("greeter server: listen HTTP: %w", err)
		}
		httpLn = ln
	}
	if s.opts.GRPCAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", s.opts.GRPCAddr)
		if err != nil {
			if httpLn != nil {
				_ = httpLn.Close()
			}
			return fmt.Errorf("greeter server: listen gRPC: %w", err)
		}
		grpcLn = ln
	}
	s.started = true
	logger := s.opts.Logger
	svc := s.opts.Service
	if svc == nil {
		svc = NewService(s.opts.Instance)
	}
	endpoints := MakeEndpoints(svc)

	if httpLn != nil {
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
		s.httpAddr = httpLn.Addr().String()
		handler := NewHTTPHandler(endpoints, s.opts.Instance, logger)
		if s.opts.Fault != nil {
			handler = s.opts.Fault.HTTP(handler, s.opts.Instance)
		}
		s.httpSrv = &http.Server{
			Handler:           handler,
			Protocols:         protocols,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		s.wg.Go(func() {
			if err := s.httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("HTTP server stopped", slog.Any("err", err))
			}
		})
	}
	if grpcLn != nil {
		s.grpcAddr = grpcLn.Addr().String()
		opts := []grpc.ServerOption{
			grpc.MaxRecvMsgSize(MaxMessageSize),
			grpc.MaxSendMsgSize(MaxMessageSize),
			// Health checks come every few seconds from probes: not traced.
			grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))),
		}
		if s.opts.Fault != nil {
			opts = append(opts, grpc.UnaryInterceptor(s.opts.Fault.UnaryInterceptor()))
		}
		s.grpcSrv = grpc.NewServer(opts...)
		pb.RegisterGreeterServer(s.grpcSrv, NewGRPCServer(endpoints, s.opts.Instance))
		s.health = health.NewServer()
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		s.health.SetServingStatus(pb.Greeter_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s.grpcSrv, s.health)
		s.wg.Go(func() {
			if err := s.grpcSrv.Serve(grpcLn); err != nil {
				logger.Error("gRPC server stopped", slog.Any("err", err))
			}
		})
	}
	return nil
}

// HTTPAddr returns the bound HTTP address, or "" when HTTP is not serving.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// GRPCAddr returns the bound gRPC address, or "" when gRPC is not serving.
func (s *Server) GRPCAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grpcAddr
}

// Close stops the server gracefully: the gRPC health service turns
// NOT_SERVING, the listeners close, and in-flight requests get up to ten
// seconds to finish before their connections are closed. It is safe to call
// before Start, after a failed Start, and more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	httpSrv, grpcSrv, hs := s.httpSrv, s.grpcSrv, s.health
	s.mu.Unlock()

	if hs != nil {
		hs.Shutdown()
	}
	var httpErr error
	var stopping sync.WaitGroup
	if httpSrv != nil {
		stopping.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := httpSrv.Shutdown(ctx); err != nil {
				httpErr = fmt.Errorf("greeter server: shut down HTTP: %w", err)
				_ = httpSrv.Close()
			}
		})
	}
	if grpcSrv != nil {
		stopping.Go(func() {
			done := make(chan struct{})
			go func() {
				grpcSrv.GracefulStop()
				close(done)
			}()
			timer := time.NewTimer(shutdownTimeout)
			defer timer.Stop()
			select {
			case <-done:
			case <-timer.C:
				grpcSrv.Stop()
				<-done
			}
		})
	}
	stopping.Wait()
	s.wg.Wait()
	return httpErr
}

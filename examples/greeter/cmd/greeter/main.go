package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tender-mesh/tender/examples/greeter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "greeter:", err)
		os.Exit(1)
	}
}

func run() error {
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "greeter"
	}
	instance := flag.String("instance", hostname, "instance name reported in replies and the X-Instance header")
	httpAddr := flag.String("http-addr", ":8080", "HTTP/1.1 and h2c listen address; empty disables HTTP")
	grpcAddr := flag.String("grpc-addr", ":9090", "gRPC listen address; empty disables gRPC")
	tcpAddr := flag.String("tcp-echo-addr", "", "opaque TCP echo listen address; empty disables it")
	bannerAddr := flag.String("banner-addr", "", "server-speaks-first TCP address: writes a banner line, then echoes; empty disables it")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn or error")
	backend := flag.String("backend", "", "base URL of a backend greeter (e.g. http://greeter:8080); when set, this instance is a frontend that forwards Greet to it over HTTP")
	otlpEndpoint := flag.String("otlp-endpoint", greeter.OTLPEndpointFromEnv(), "OTLP collector host:port to export traces to; empty disables tracing (default from OTEL_EXPORTER_OTLP_ENDPOINT)")
	otlpProtocol := flag.String("otlp-protocol", cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc"), "OTLP protocol: grpc or http/protobuf")
	serviceName := flag.String("service-name", "greeter", "service.name of the spans (e.g. frontend)")
	failStatus := flag.Int("fail-status", 0, "answer every request but health checks with this HTTP status (gRPC: the matching code), for resilience tests; 0 answers normally. PUT /fault?status=N&delay=D changes it at run time")
	failDelay := flag.Duration("fail-delay", 0, "stall every request but health checks this long before answering, for resilience tests")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("instance", *instance)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	shutdownTracing, err := greeter.StartTracing(ctx, *serviceName, *otlpEndpoint, *otlpProtocol)
	if err != nil {
		return err
	}
	defer func() {
		// A fresh context: ctx is already done, and the batched spans of
		// the last requests must still go out.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			logger.Warn("spans lost", slog.Any("err", err))
		}
	}()

	var svc greeter.Service // nil: answer Greet itself
	if *backend != "" {
		hc := &http.Client{}
		defer hc.CloseIdleConnections()
		if svc, err = greeter.NewHTTPClient(*backend, hc); err != nil {
			return fmt.Errorf("--backend: %w", err)
		}
	}

	fault := &greeter.Fault{}
	if err := fault.Set(*failStatus, *failDelay); err != nil {
		return fmt.Errorf("--fail-status/--fail-delay: %w", err)
	}
	srv := greeter.NewServer(greeter.ServerOptions{
		Fault:    fault,
		Instance: *instance,
		HTTPAddr: *httpAddr,
		GRPCAddr: *grpcAddr,
		Logger:   logger,
		Service:  svc,
	})
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	for _, l := range []struct{ addr, banner string }{{*tcpAddr, ""}, {*bannerAddr, "220 " + *instance + " ready\r\n"}} {
		if l.addr == "" {
			continue
		}
		var lc net.ListenConfig
		lis, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			srv.Close() //nolint:errcheck // already failing
			return fmt.Errorf("tcp listener: %w", err)
		}
		go greeter.ServeTCPEcho(ctx, lis, l.banner) //nolint:errcheck // ends with ctx
	}
	logger.Info("serving", "http", srv.HTTPAddr(), "grpc", srv.GRPCAddr(), "tcp-echo", *tcpAddr, "banner", *bannerAddr,
		"backend", *backend, "otlp-endpoint", *otlpEndpoint)
	<-ctx.Done()
	logger.Info("shutting down")
	if err := srv.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	logger.Info("stopped")
	return nil
}

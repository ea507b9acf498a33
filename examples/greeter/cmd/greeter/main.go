package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

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
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("instance", *instance)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := greeter.NewServer(greeter.ServerOptions{
		Instance: *instance,
		HTTPAddr: *httpAddr,
		GRPCAddr: *grpcAddr,
		Logger:   logger,
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
	logger.Info("serving", "http", srv.HTTPAddr(), "grpc", srv.GRPCAddr(), "tcp-echo", *tcpAddr, "banner", *bannerAddr)
	<-ctx.Done()
	logger.Info("shutting down")
	if err := srv.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	logger.Info("stopped")
	return nil
}

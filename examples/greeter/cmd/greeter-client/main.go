package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	_ "google.golang.org/grpc/xds" // xds:/// targets; bootstrap from GRPC_XDS_BOOTSTRAP(_CONFIG)

	"github.com/tender-mesh/tender/examples/greeter"
)

type config struct {
	target      string
	httpURL     string
	name        string
	count       int
	interval    time.Duration
	concurrency int
	timeout     time.Duration

	otlpEndpoint string
	otlpProtocol string
	serviceName  string
	traceIDs     string
}

func main() {
	var c config
	flag.StringVar(&c.target, "target", "localhost:9090", "gRPC target: xds:///name:port, dns:///host:port or host:port")
	flag.StringVar(&c.httpURL, "http", "", "base URL of the HTTP transport (e.g. http://localhost:8080); when set, HTTP is used instead of gRPC")
	flag.StringVar(&c.name, "name", "world", "name to greet")
	flag.IntVar(&c.count, "count", 10, "number of requests")
	flag.DurationVar(&c.interval, "interval", 0, "pause between two requests of one worker")
	flag.IntVar(&c.concurrency, "concurrency", 1, "number of concurrent workers")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Second, "timeout of one request")
	flag.StringVar(&c.otlpEndpoint, "otlp-endpoint", greeter.OTLPEndpointFromEnv(), "OTLP collector host:port to export traces to; empty disables tracing (default from OTEL_EXPORTER_OTLP_ENDPOINT)")
	flag.StringVar(&c.otlpProtocol, "otlp-protocol", cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc"), "OTLP protocol: grpc or http/protobuf")
	flag.StringVar(&c.serviceName, "service-name", "greeter-client", "service.name of the spans")
	flag.StringVar(&c.traceIDs, "trace-ids", "", "file to append the trace ID of every request to, one per line (needs --otlp-endpoint)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "greeter-client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	if c.count < 0 || c.concurrency < 1 || c.interval < 0 || c.timeout <= 0 {
		return errors.New("--count must be >= 0, --concurrency >= 1, --interval >= 0 and --timeout > 0")
	}
	if c.traceIDs != "" && c.otlpEndpoint == "" {
		return errors.New("--trace-ids needs --otlp-endpoint: with tracing off there are no traces")
	}
	shutdownTracing, err := greeter.StartTracing(ctx, c.serviceName, c.otlpEndpoint, c.otlpProtocol)
	if err != nil {
		return err
	}
	defer func() {
		// A fresh context: ctx may be done, and the spans must still go out.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "greeter-client: spans lost:", err)
		}
	}()
	var traceIDs *os.File
	if c.traceIDs != "" {
		if traceIDs, err = os.OpenFile(c.traceIDs, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return fmt.Errorf("--trace-ids: %w", err)
		}
		defer traceIDs.Close()
	}
	svc, closeFn, err := newService(c)
	if err != nil {
		return err
	}
	defer closeFn()

	var (
		mu       sync.Mutex
		replies  = map[string]int{}
		failures int
		idsErr   error
		next     int
		wg       sync.WaitGroup
	)
	for range c.concurrency {
		wg.Go(func() {
			for i := 0; ; i++ {
				mu.Lock()
				if next >= c.count || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				if i > 0 && c.interval > 0 {
					t := time.NewTimer(c.interval)
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
				}
				g, traceID, err := greet(ctx, svc, c)
				mu.Lock()
				if traceIDs != nil && idsErr == nil {
					_, idsErr = fmt.Fprintln(traceIDs, traceID)
				}
				if err != nil {
					failures++
					fmt.Fprintln(os.Stderr, "error:", err)
				} else {
					replies[g.Instance]++
					fmt.Println(g.Instance, g.Message)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	ok := 0
	parts := []string{}
	for _, inst := range slices.Sorted(maps.Keys(replies)) {
		ok += replies[inst]
		parts = append(parts, fmt.Sprintf("%s=%d", inst, replies[inst]))
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Printf("summary: %d ok, %d failed; replies per instance: %s\n", ok, failures, strings.Join(parts, " "))
	switch {
	case idsErr != nil:
		return fmt.Errorf("--trace-ids: %w", idsErr)
	case failures > 0:
		return fmt.Errorf("%d of %d requests failed", failures, ok+failures)
	case ok < c.count:
		return fmt.Errorf("interrupted after %d of %d requests: %w", ok, c.count, context.Cause(ctx))
	}
	return nil
}

// tracer makes the client's spans; it follows the global TracerProvider
// that StartTracing installs.
var tracer = otel.Tracer("github.com/tender-mesh/tender/examples/greeter/cmd/greeter-client")

// greet makes one request in a new trace: its root span "greet" is the
// parent of the transport's client span, whose context the request carries.
func greet(ctx context.Context, svc greeter.Service, c config) (greeter.Greeting, trace.TraceID, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx, span := tracer.Start(ctx, "greet", trace.WithNewRoot())
	defer span.End()
	g, err := svc.Greet(ctx, c.name)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(attribute.String("greeter.instance", g.Instance))
	}
	return g, span.SpanContext().TraceID(), err
}

// newService returns the Go kit client for c and a function that releases it.
func newService(c config) (greeter.Service, func(), error) {
	if c.httpURL != "" {
		hc := &http.Client{}
		svc, err := greeter.NewHTTPClient(c.httpURL, hc)
		if err != nil {
			return nil, nil, fmt.Errorf("--http: %w", err)
		}
		return svc, hc.CloseIdleConnections, nil
	}
	// xDS credentials use what the control plane configures (mTLS) and
	// fall back to plaintext; for non-xds targets they are plaintext.
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, nil, fmt.Errorf("xDS credentials: %w", err)
	}
	conn, err := grpc.NewClient(c.target, append(greeter.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, nil, fmt.Errorf("--target %q: %w", c.target, err)
	}
	return greeter.NewGRPCClient(conn), func() { _ = conn.Close() }, nil
}

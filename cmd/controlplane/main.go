// Command controlplane watches the discovery sources and serves the mesh
// over xDS to tender sidecars, proxyless gRPC clients and Envoy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config holds every flag of the control plane.
type config struct {
	XDSAddr     string
	MetricsAddr string
	ConfigFile  string
	Debounce    time.Duration
	DNSServers  []string
	DNSRefresh  time.Duration
	LogLevel    string
	LogFormat   string
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	c := &config{}
	fs.StringVar(&c.XDSAddr, "xds-addr", ":15010", "address of the plaintext xDS (ADS) gRPC server")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", ":15014", "address of /metrics, /healthz, /readyz and /debug/*")
	fs.StringVar(&c.ConfigFile, "config-file", "", "mesh.yaml to read services from and watch (file source)")
	fs.DurationVar(&c.Debounce, "debounce", 100*time.Millisecond, "quiet time the registry waits for after a change before it pushes")
	var dnsServers string
	fs.StringVar(&dnsServers, "dns-servers", "", "comma-separated host:port DNS servers for the dns source (default: /etc/resolv.conf)")
	fs.DurationVar(&c.DNSRefresh, "dns-refresh", 30*time.Second, "longest time between two resolutions of a DNS-discovered service (TTLs shorten it)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if dnsServers != "" {
		c.DNSServers = strings.Split(dnsServers, ",")
	}
	if c.Debounce <= 0 {
		return nil, fmt.Errorf("--debounce must be positive, got %s", c.Debounce)
	}
	if c.DNSRefresh <= 0 {
		return nil, fmt.Errorf("--dns-refresh must be positive, got %s", c.DNSRefresh)
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

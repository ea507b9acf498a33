package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/exec"

	"github.com/tender-mesh/tender/inject/capture"
)

// initConfig holds the flags of `sidecar init`.
type initConfig struct {
	Capture capture.CaptureOptions
	Mode    capture.Mode
	IPv6    bool
	DryRun  bool
	Cleanup bool
}

func parseInitFlags(args []string) (*initConfig, error) {
	fs := flag.NewFlagSet("sidecar init", flag.ContinueOnError)
	c := &initConfig{}
	var exOutCIDRs, exOutPorts, exInPorts, inPorts, mode string
	fs.StringVar(&exOutCIDRs, "exclude-outbound-cidrs", "", "comma-separated CIDRs never captured outbound")
	fs.StringVar(&exOutPorts, "exclude-outbound-ports", "", "comma-separated destination ports never captured outbound")
	fs.StringVar(&exInPorts, "exclude-inbound-ports", "", "comma-separated ports never captured inbound")
	fs.StringVar(&inPorts, "include-inbound-ports", "", "comma-separated ports: capture only these inbound (default: all)")
	fs.IntVar(&c.Capture.ProxyUID, "proxy-uid", capture.ProxyUID, "UID of the sidecar, whose traffic is not captured")
	fs.IntVar(&c.Capture.OutboundPort, "outbound-port", capture.OutboundPort, "port of the sidecar's outbound listener")
	fs.IntVar(&c.Capture.InboundPort, "inbound-port", capture.InboundPort, "port of the sidecar's inbound listener")
	fs.StringVar(&mode, "iptables-mode", "auto", "iptables backend: auto (detect what the node uses), nft or legacy")
	fs.BoolVar(&c.IPv6, "ipv6", true, "also write the ip6tables rules (skipped when ip6tables is missing)")
	fs.BoolVar(&c.DryRun, "dry-run", false, "print the rules (iptables-restore input) instead of applying them")
	fs.BoolVar(&c.Cleanup, "cleanup", false, "remove tender's rules instead of writing them")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if c.Capture.ExcludeOutboundCIDRs, err = capture.ParseCIDRs(exOutCIDRs); err != nil {
		return nil, fmt.Errorf("--exclude-outbound-cidrs: %w", err)
	}
	if c.Capture.ExcludeOutboundPorts, err = capture.ParsePorts(exOutPorts); err != nil {
		return nil, fmt.Errorf("--exclude-outbound-ports: %w", err)
	}
	if c.Capture.ExcludeInboundPorts, err = capture.ParsePorts(exInPorts); err != nil {
		return nil, fmt.Errorf("--exclude-inbound-ports: %w", err)
	}
	if c.Capture.IncludeInboundPorts, err = capture.ParsePorts(inPorts); err != nil {
		return nil, fmt.Errorf("--include-inbound-ports: %w", err)
	}
	if err := c.Capture.Validate(); err != nil {
		return nil, err
	}
	c.Mode = capture.Mode(mode)
	return c, nil
}

func runInit(ctx context.Context, c *initConfig, out io.Writer) error {
	if c.DryRun {
		fmt.Fprintf(out, "# iptables (IPv4)\n%s", capture.Rules(c.Capture, false))
		if c.IPv6 {
			fmt.Fprintf(out, "# ip6tables (IPv6)\n%s", capture.Rules(c.Capture, true))
		}
		return nil
	}
	t, err := capture.NewTables(ctx, c.Mode, nil)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	families := []bool{false}
	if c.IPv6 {
		if _, err := exec.LookPath("ip6tables-" + string(t.Mode) + "-restore"); err == nil {
			families = append(families, true)
		}
	}
	for _, v6 := range families {
		if c.Cleanup {
			t.Cleanup(ctx, v6)
			continue
		}
		if err := t.Apply(ctx, c.Capture, v6); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	if c.Cleanup {
		fmt.Fprintf(out, "sidecar init: removed tender's rules (iptables-%s)\n", t.Mode)
	} else {
		fmt.Fprintf(out, "sidecar init: capture rules written (iptables-%s): outbound → %d, inbound → %d, uid %d exempt\n",
			t.Mode, c.Capture.OutboundPort, c.Capture.InboundPort, c.Capture.ProxyUID)
	}
	return nil
}

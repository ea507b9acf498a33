package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Chain names; every rule tender adds lives in a chain of its own, so
// cleanup removes exactly what it added.
const (
	ChainInbound    = "TENDER_INBOUND"
	ChainInRedirect = "TENDER_IN_REDIRECT"
	ChainOutput     = "TENDER_OUTPUT"
	ChainRedirect   = "TENDER_REDIRECT"
)

// Capture ports and the proxy's UID, as in Istio.
const (
	OutboundPort = 15001
	InboundPort  = 15006
	ProxyUID     = 1337
)

// SidecarPorts are the sidecar's own ports that other pods reach directly
// (admin, Prometheus metrics); inbound capture always leaves them alone.
var SidecarPorts = []int{15000, 15090}

// CaptureOptions say what to capture.
type CaptureOptions struct {
	// ProxyUID is exempt from capture; default 1337.
	ProxyUID int
	// OutboundPort and InboundPort receive the captured traffic.
	OutboundPort, InboundPort int
	// ExcludeOutboundCIDRs are never captured outbound.
	ExcludeOutboundCIDRs []netip.Prefix
	// ExcludeOutboundPorts are never captured outbound.
	ExcludeOutboundPorts []int
	// ExcludeInboundPorts are never captured inbound.
	ExcludeInboundPorts []int
	// IncludeInboundPorts, when set, are the only inbound ports captured.
	IncludeInboundPorts []int
}

func (o *CaptureOptions) defaults() {
	if o.ProxyUID == 0 {
		o.ProxyUID = ProxyUID
	}
	if o.OutboundPort == 0 {
		o.OutboundPort = OutboundPort
	}
	if o.InboundPort == 0 {
		o.InboundPort = InboundPort
	}
}

// Validate checks ports and CIDRs.
func (o *CaptureOptions) Validate() error {
	check := func(what string, ports []int) error {
		for _, p := range ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("%s: port %d out of range 1-65535", what, p)
			}
		}
		return nil
	}
	if err := check("exclude outbound ports", o.ExcludeOutboundPorts); err != nil {
		return err
	}
	if err := check("exclude inbound ports", o.ExcludeInboundPorts); err != nil {
		return err
	}
	if err := check("include inbound ports", o.IncludeInboundPorts); err != nil {
		return err
	}
	if len(o.IncludeInboundPorts) > 0 && len(o.ExcludeInboundPorts) > 0 {
		return fmt.Errorf("include and exclude inbound ports are exclusive")
	}
	return nil
}

// Rules returns the iptables-restore input (nat table) for one address
// family. It adds chains and the jumps to them, and nothing else; apply it
// with `iptables-restore --noflush` after Cleanup.
func Rules(o CaptureOptions, ipv6 bool) string {
	o.defaults()
	loopback := "127.0.0.1/32"
	if ipv6 {
		loopback = "::1/128"
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*nat")
	for _, c := range []string{ChainInbound, ChainInRedirect, ChainOutput, ChainRedirect} {
		w(":%s - [0:0]", c)
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInRedirect, o.InboundPort)
	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainRedirect, o.OutboundPort)

	// Inbound: everything TCP arriving at the pod, but the excluded ports
	// (or only the included ones).
	w("-A PREROUTING -p tcp -j %s", ChainInbound)
	for _, p := range SidecarPorts {
		w("-A %s -p tcp --dport %d -j RETURN", ChainInbound, p)
	}
	if len(o.IncludeInboundPorts) > 0 {
		for _, p := range sortedUnique(o.IncludeInboundPorts) {
			w("-A %s -p tcp --dport %d -j %s", ChainInbound, p, ChainInRedirect)
		}
	} else {
		for _, p := range sortedUnique(o.ExcludeInboundPorts) {
			w("-A %s -p tcp --dport %d -j RETURN", ChainInbound, p)
		}
		w("-A %s -p tcp -j %s", ChainInbound, ChainInRedirect)
	}

	// Outbound: the proxy's own traffic and loopback are exempt; so are the
	// excluded CIDRs and ports; the rest goes to the outbound listener.
	w("-A OUTPUT -p tcp -j %s", ChainOutput)
	w("-A %s -m owner --uid-owner %d -j RETURN", ChainOutput, o.ProxyUID)
	w("-A %s -d %s -j RETURN", ChainOutput, loopback)
	w("-A %s -o lo -j RETURN", ChainOutput)
	for _, c := range o.ExcludeOutboundCIDRs {
		if c.Addr().Is6() == ipv6 && !c.Addr().Is4In6() {
			w("-A %s -d %s -j RETURN", ChainOutput, c.Masked())
		}
	}
	for _, p := range sortedUnique(o.ExcludeOutboundPorts) {
		w("-A %s -p tcp --dport %d -j RETURN", ChainOutput, p)
	}
	w("-A %s -j %s", ChainOutput, ChainRedirect)
	w("COMMIT")
	return b.String()
}

// CleanupCommands are the iptables invocations (arguments after the
// binary) that remove everything Rules adds. Each may fail when there is
// nothing to remove; callers ignore "does not exist" errors.
func CleanupCommands() [][]string {
	return [][]string{
		{"-t", "nat", "-D", "PREROUTING", "-p", "tcp", "-j", ChainInbound},
		{"-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", ChainOutput},
		{"-t", "nat", "-F", ChainInbound},
		{"-t", "nat", "-X", ChainInbound},
		{"-t", "nat", "-F", ChainInRedirect},
		{"-t", "nat", "-X", ChainInRedirect},
		{"-t", "nat", "-F", ChainOutput},
		{"-t", "nat", "-X", ChainOutput},
		{"-t", "nat", "-F", ChainRedirect},
		{"-t", "nat", "-X", ChainRedirect},
	}
}

// ParsePorts reads a comma-separated port list ("80,8080").
func ParsePorts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 65535 {
			if len(f) > 16 { // the list is untrusted: an error does not echo it whole
				f = f[:16] + "…"
			}
			return nil, fmt.Errorf("port %q: want a number 1-65535", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// ParseCIDRs reads a comma-separated CIDR list ("10.0.0.0/8,fd00::/8").
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			if len(f) > 16 { // untrusted, and netip's error quotes it too
				return nil, fmt.Errorf("cidr %q: not an address prefix", f[:16]+"…")
			}
			return nil, fmt.Errorf("cidr %q: %w", f, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func sortedUnique(ports []int) []int {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

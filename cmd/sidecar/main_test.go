package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestParseRunFlags(t *testing.T) {
	t.Setenv("POD_NAME", "web-1")
	t.Setenv("POD_NAMESPACE", "shop")
	c, err := parseRunFlags([]string{"--zone", "z1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "web-1.shop" || c.Locality.Zone != "z1" || c.OutboundAddr != ":15001" || c.InboundAddr != ":15006" || c.AdminAddr != ":15000" {
		t.Errorf("got %+v, want node web-1.shop from the pod env and the standard ports", c)
	}
	if c.MetricsAddr != ":15090" || c.AccessLog != "off" || c.OTLPEndpoint != "" || c.Workload != "web-1" {
		t.Errorf("got metrics %q, access log %q, otlp %q, workload %q; want :15090, off, none, web-1",
			c.MetricsAddr, c.AccessLog, c.OTLPEndpoint, c.Workload)
	}
	for _, bad := range [][]string{
		{"--outbound-policy", "deny"},
		{"--access-log", "yes"},
		{"--trace-sampling", "1.5"},
		{"--otlp-protocol", "thrift"},
		{"--xds-tls", "--ca-root-file", "/etc/tender/root.pem"}, // no --controlplane-identity
		{"--admin-max-connections", "-1"},
	} {
		if _, err := parseRunFlags(bad); err == nil {
			t.Errorf("parseRunFlags(%q): got no error", bad)
		}
	}
}

func TestXDSTLSNeedsControlPlaneIdentity(t *testing.T) {
	t.Setenv("TENDER_CONTROLPLANE_IDENTITY", "")
	_, err := parseRunFlags([]string{"--xds-tls", "--ca-root-file", "/etc/tender/root.pem"})
	if err == nil || !strings.Contains(err.Error(), "--controlplane-identity") {
		t.Errorf("--xds-tls without --controlplane-identity: got %v, want an error naming the flag", err)
	}
	c, err := parseRunFlags([]string{"--xds-tls", "--ca-root-file", "/etc/tender/root.pem",
		"--controlplane-identity", "spiffe://cluster.local/ns/tender-system/sa/tender-controlplane"})
	if err != nil || c.AdminMaxConns != defaultAdminMaxConns {
		t.Errorf("with the identity: got %v, admin connections %d; want ok, %d", err, c.AdminMaxConns, defaultAdminMaxConns)
	}
}

func TestWorkloadOf(t *testing.T) {
	for pod, want := range map[string]string{
		"greeter-7d4b9c8f6-x2k9p":     "greeter",
		"my-web-app-5f6d7c8b9d-abcde": "my-web-app",
		"greeter-1":                   "greeter-1", // no Deployment suffixes: kept as is
		"client":                      "client",
	} {
		if got := workloadOf(pod); got != want {
			t.Errorf("workloadOf(%q) = %q, want %q", pod, got, want)
		}
	}
}

func TestInitDryRun(t *testing.T) {
	c, err := parseInitFlags([]string{"--dry-run", "--exclude-outbound-ports", "5432", "--exclude-outbound-cidrs", "10.9.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runInit(context.Background(), c, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--to-ports 15001", "--to-ports 15006", "--uid-owner 1337", "--dport 5432 -j RETURN", "-d 10.9.0.0/16 -j RETURN", "# ip6tables"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run lacks %q:\n%s", want, out.String())
		}
	}
	for _, bad := range [][]string{{"--exclude-outbound-ports", "ssh"}, {"--exclude-outbound-cidrs", "10.0.0.0/33"}, {"--include-inbound-ports", "80", "--exclude-inbound-ports", "81"}} {
		if _, err := parseInitFlags(bad); err == nil {
			t.Errorf("parseInitFlags(%q): got no error", bad)
		}
	}
}

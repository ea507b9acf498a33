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
	if _, err := parseRunFlags([]string{"--outbound-policy", "deny"}); err == nil {
		t.Error("accepted --outbound-policy deny")
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

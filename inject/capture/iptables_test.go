package capture

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestRulesGolden(t *testing.T) {
	tests := []struct {
		name string
		opts CaptureOptions
		ipv6 bool
	}{
		{"default", CaptureOptions{}, false},
		{"default-ipv6", CaptureOptions{}, true},
		{"excludes", CaptureOptions{
			ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.9.1.2/16"), netip.MustParsePrefix("fd00::/8")},
			ExcludeOutboundPorts: []int{5432, 22, 22},
			ExcludeInboundPorts:  []int{9100},
		}, false},
		{"include-inbound", CaptureOptions{IncludeInboundPorts: []int{8080, 9090}, ProxyUID: 2000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Rules(tt.opts, tt.ipv6)
			golden := filepath.Join("testdata", tt.name+".rules.golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./inject -update creates it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		opts CaptureOptions
		ok   bool
	}{
		{"empty", CaptureOptions{}, true},
		{"bad port", CaptureOptions{ExcludeOutboundPorts: []int{0}}, false},
		{"include and exclude", CaptureOptions{IncludeInboundPorts: []int{80}, ExcludeInboundPorts: []int{81}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.opts.Validate(); (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestParse(t *testing.T) {
	ports, err := ParsePorts(" 80, 443 ,,")
	if err != nil || !cmp.Equal(ports, []int{80, 443}) {
		t.Errorf("got %v %v, want [80 443]", ports, err)
	}
	for _, bad := range []string{"http", "0", "70000"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q): got no error", bad)
		}
	}
	if _, err := ParseCIDRs("10.0.0.0/8,nope"); err == nil {
		t.Error("ParseCIDRs: got no error for nope")
	}
}

// TestApplyNamesFailingRule checks that an iptables-restore failure names
// the rule that failed.
func TestApplyNamesFailingRule(t *testing.T) {
	var calls []string
	run := func(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		calls = append(calls, name+" "+strings.Join(args, " "))
		if strings.HasSuffix(name, "-restore") {
			return []byte("iptables-restore: line 12 failed"), errors.New("exit status 1")
		}
		return nil, nil
	}
	tb, err := NewTables(context.Background(), ModeNFT, run)
	if err != nil {
		t.Fatal(err)
	}
	err = tb.Apply(context.Background(), CaptureOptions{}, false)
	lines := strings.Split(Rules(CaptureOptions{}, false), "\n")
	if err == nil || !strings.Contains(err.Error(), lines[11]) {
		t.Errorf("got %v, want it to quote rule 12 %q", err, lines[11])
	}
	if calls[0] != "iptables-nft -t nat -D PREROUTING -p tcp -j TENDER_INBOUND" {
		t.Errorf("got first call %q, want the cleanup first (idempotence)", calls[0])
	}
	if _, err := NewTables(context.Background(), "iptables-9", run); err == nil {
		t.Error("NewTables accepted an unknown mode")
	}
}

package capture

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParsePorts: what ParsePorts returns are ports, and their list
// parses back to the same.
func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"80,8080", " 80 , 443", "", ",", "0", "65536", "-1", "+80", "1e3", "80,,81"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts(s)
		if err != nil {
			return
		}
		var back []string
		for _, p := range ports {
			if p < 1 || p > 65535 {
				t.Fatalf("ParsePorts(%q): got port %d, want 1-65535", s, p)
			}
			back = append(back, strconv.Itoa(p))
		}
		again, err := ParsePorts(strings.Join(back, ","))
		if err != nil || len(again) != len(ports) {
			t.Fatalf("ParsePorts(%q) = %v; its list parses as %v, %v", s, ports, again, err)
		}
	})
}

// FuzzParseCIDRs: what ParseCIDRs returns prints as a prefix that
// parses back.
func FuzzParseCIDRs(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8,fd00::/8", "1.2.3.4/33", "::/0", "", "10.0.0.1/8", "::ffff:1.2.3.4/128", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		prefixes, err := ParseCIDRs(s)
		if err != nil {
			return
		}
		for _, p := range prefixes {
			if !p.IsValid() {
				t.Fatalf("ParseCIDRs(%q): got invalid prefix %v", s, p)
			}
			if _, err := ParseCIDRs(p.String()); err != nil {
				t.Fatalf("ParseCIDRs(%q): %v does not parse back: %v", s, p, err)
			}
		}
	})
}

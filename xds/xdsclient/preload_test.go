package xdsclient

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePreload(t *testing.T) {
	got, err := ParsePreload(" Greeter.default.svc.cluster.local:8080, db.data.svc.cluster.local:05432 ,")
	if want := []string{"greeter.default.svc.cluster.local:8080", "db.data.svc.cluster.local:5432"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"greeter", "greeter:0", "greeter:65536", "-x.y:80", "a..b:80", "a_b:80", "[::1]:80", "--log-level=debug:80",
		strings.Repeat("a.", 200) + "a:80", strings.Repeat("a:1,", MaxPreload+1)} {
		if _, err := ParsePreload(bad); err == nil {
			t.Errorf("ParsePreload(%.40q) accepted", bad)
		}
	}
}

package xdsclient

import (
	"errors"
	"strings"
	"testing"
)

// TestRouteValueBounds: each check takes what is just within its bound
// and refuses what crosses it.
func TestRouteValueBounds(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"value at 4096", CheckHeaderValue(strings.Repeat("v", maxHeaderValueLength)), true},
		{"value at 4097", CheckHeaderValue(strings.Repeat("v", maxHeaderValueLength+1)), false},
		{"value with CR", CheckHeaderValue("a\rb"), false},
		{"name a token", CheckHeaderName("x-route"), true},
		{"name with a space", CheckHeaderName("x route"), false},
		{"name Content-Length", CheckHeaderName("Content-Length"), false},
		{"path at 1024", CheckPath("/" + strings.Repeat("p", maxPathLength-1)), true},
		{"path at 1025", CheckPath("/" + strings.Repeat("p", maxPathLength)), false},
		{"path with a space", CheckPath("/a b"), false},
		{"substitution with a group", CheckSubstitution(`/v2\1`), true},
		{"substitution with a bare backslash", CheckSubstitution(`/v2\x`), false},
		{"host", CheckHost("api.internal"), true},
		{"host with a slash", CheckHost("api/x"), false},
		{"regex at 2,000 instructions", func() error { _, err := RegexInsts(strings.Repeat(".{999}", 2)); return err }(), true},
		{"regex over 2,000 instructions", func() error { _, err := RegexInsts(strings.Repeat(".{1000}", 3)); return err }(), false},
		{"regex over 1,024 bytes", func() error { _, err := RegexInsts(strings.Repeat("a", MaxRegexLen+1)); return err }(), false},
	} {
		if ok := c.err == nil; ok != c.ok {
			t.Errorf("%s: %v, want ok %v", c.name, c.err, c.ok)
		}
		if c.err != nil && !errors.Is(c.err, ErrRouteValue) {
			t.Errorf("%s: %v does not wrap ErrRouteValue", c.name, c.err)
		}
	}
}

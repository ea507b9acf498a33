package main

import (
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		ok   bool
		want func(*config) bool
	}{
		{"defaults", nil, true, func(c *config) bool {
			return c.XDSAddr == ":15010" && c.MetricsAddr == ":15014" && c.Debounce == 100*time.Millisecond
		}},
		{"dns servers", []string{"--dns-servers", "127.0.0.1:53,[::1]:53"}, true, func(c *config) bool { return len(c.DNSServers) == 2 }},
		{"zero debounce", []string{"--debounce", "0s"}, false, nil},
		{"stray argument", []string{"mesh.yaml"}, false, nil},
		{"unknown flag", []string{"--xds-port", "1"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args)
			if (err == nil) != tt.ok {
				t.Fatalf("got error %v, want ok=%v", err, tt.ok)
			}
			if tt.want != nil && !tt.want(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
}

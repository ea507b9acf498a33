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
		{"eureka urls, repeated and comma-separated", []string{"--eureka-url", "http://a:8761/eureka", "--eureka-url", "http://b:8761/eureka, http://c:8761/eureka"}, true,
			func(c *config) bool {
				return len(c.Eureka.URLs) == 3 && c.Eureka.URLs[2] == "http://c:8761/eureka" && c.Eureka.Refresh == 30*time.Second
			}},
		{"eureka password without user", []string{"--eureka-url", "http://a:8761/eureka", "--eureka-password-file", "/p"}, false, nil},
		{"zero eureka refresh", []string{"--eureka-refresh", "0s"}, false, nil},
		{"zero debounce", []string{"--debounce", "0s"}, false, nil},
		{"webhook and CA bounds by default", nil, true, func(c *config) bool {
			return c.Webhook.MaxRequestBytes == 3<<20 && c.Webhook.MaxConcurrent == 8 && c.Webhook.Timeout == 30*time.Second &&
				c.CA.AuthFailureTTL == 10*time.Second && c.CA.PeerRate == 10 && c.CA.PeerBurst == 20
		}},
		{"zero webhook concurrency", []string{"--webhook-max-concurrent", "0"}, false, nil},
		{"negative peer rate", []string{"--peer-rate-limit", "-1"}, false, nil},
		{"ADS on the TLS port only", []string{"--xds-addr", ""}, true, func(c *config) bool { return c.XDSAddr == "" && c.CA.Addr == ":15012" }},
		{"no xDS port at all", []string{"--xds-addr", "", "--xds-tls-addr", ""}, false, nil},
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

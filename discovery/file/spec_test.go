package file

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/dns"
)

const full = `services:
  - name: greeter
    namespace: default
    vip: 10.96.0.10
    lb: RING_HASH
    hashHeader: x-user
    connectTimeout: 2s
    timeout: 1s
    retries:
      attempts: 2
      on: [5xx, connect-failure, unavailable]
      perTryTimeout: 200ms
      backoff: {base: 10ms, max: 100ms}
      statusCodes: [409]
      budget: {percent: 25, minConcurrency: 2}
    circuitBreaker: {maxConnections: 100, maxPendingRequests: 50, maxRequests: 10, maxRetries: 3}
    outlierDetection:
      consecutive5xx: 5
      consecutiveGatewayErrors: 3
      interval: 5s
      baseEjectionTime: 15s
      maxEjectionPercent: 50
      successRate: {minimumHosts: 3, requestVolume: 20, stdevFactor: 1900}
    fault: {delay: {percent: 10, duration: 50ms}, abort: {percent: 1.5, status: 503}}
    ports:
      - {name: grpc, port: 8080, protocol: GRPC}
    endpoints:
      - {address: 10.1.0.11, port: 18080, region: r1, zone: z1, subZone: s1, weight: 3, priority: 1, labels: {app: greeter}}
      - {address: "::ffff:10.1.0.12", health: DRAINING, serviceAccount: greeter-v2}
    serviceAccount: greeter
  - name: legacy
    ports:
      - {name: http, port: 80, protocol: HTTP}
      - {name: admin, port: 9000}
    dns: {name: legacy.example.internal, type: A, port: 8080, refresh: 10s}
`

func TestParseFull(t *testing.T) {
	cfg, err := Parse("mesh.yaml", strings.NewReader(full))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Static: []discovery.Service{{
			Name: "greeter", Namespace: "default", VIP: netip.MustParseAddr("10.96.0.10"),
			Policy: discovery.TrafficPolicy{LB: discovery.LBRingHash, HashHeader: "x-user", ConnectTimeout: 2 * time.Second,
				Resilience: discovery.Resilience{
					Timeout: time.Second,
					Retries: &discovery.RetryPolicy{Attempts: 2, On: []string{"5xx", "connect-failure", "unavailable"},
						PerTryTimeout: 200 * time.Millisecond, BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
						StatusCodes: []uint32{409}, BudgetPercent: 25, MinRetryConcurrency: 2},
					CircuitBreaker: &discovery.CircuitBreaker{MaxConnections: 100, MaxPendingRequests: 50, MaxRequests: 10, MaxRetries: 3},
					OutlierDetection: &discovery.OutlierDetection{Consecutive5xx: 5, ConsecutiveGatewayErrors: 3, Interval: 5 * time.Second,
						BaseEjectionTime: 15 * time.Second, MaxEjectionPercent: 50, SuccessRateMinimumHosts: 3,
						SuccessRateRequestVolume: 20, SuccessRateStdevFactor: 1900},
					Fault: &discovery.Fault{DelayPercent: 10, Delay: 50 * time.Millisecond, AbortPercent: 1.5, AbortStatus: 503},
				}},
			Ports: []discovery.Port{{Name: "grpc", Number: 8080, Protocol: discovery.ProtocolGRPC}},
			Endpoints: []discovery.Endpoint{
				{
					Address: netip.MustParseAddr("10.1.0.11"), Ports: map[string]uint32{"grpc": 18080},
					Locality: discovery.Locality{Region: "r1", Zone: "z1", SubZone: "s1"},
					Weight:   3, Priority: 1, Health: discovery.HealthHealthy, Labels: map[string]string{"app": "greeter"},
					ServiceAccount: "greeter",
				},
				{Address: netip.MustParseAddr("10.1.0.12"), Health: discovery.HealthDraining, ServiceAccount: "greeter-v2"},
			},
		}},
		DNS: []dns.Target{{
			Service: discovery.Service{
				Name: "legacy", Namespace: "default", Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin},
				Ports: []discovery.Port{{Name: "http", Number: 80, Protocol: discovery.ProtocolHTTP}, {Name: "admin", Number: 9000}},
			},
			Name: "legacy.example.internal", Type: dns.A, Port: 8080, Refresh: 10 * time.Second,
		}},
	}
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "services: []\n", "# nothing yet\n"} {
		cfg, err := Parse("mesh.yaml", strings.NewReader(in))
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if len(cfg.Static)+len(cfg.DNS) != 0 {
			t.Errorf("Parse(%q): got %d services, want none", in, len(cfg.Static)+len(cfg.DNS))
		}
	}
}

// TestParseErrorsNamePosition is acceptance 5's first half: every broken
// file is refused with the line of the problem and the reason.
func TestParseErrorsNamePosition(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantMsg  string
	}{
		{"bad yaml", "services:\n  - name: a\n    ports: [}\n", 3, "did not find expected"},
		{"tab indent", "services:\n\t- name: a\n", 2, "cannot start any token"},
		{"unknown top-level field", "services: []\nservice: []\n", 2, "field service not found"},
		{"unknown service field", "services:\n  - name: a\n    prots: []\n", 3, `unknown field "prots"`},
		{"unknown endpoint field", "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints:\n      - {address: 10.0.0.1, wieght: 2}\n", 5, `unknown field "wieght"`},
		{"duplicate service", "services:\n  - name: a\n    ports: [{port: 80}]\n  - name: b\n    ports: [{port: 80}]\n  - name: a\n    ports: [{port: 81}]\n", 6, "duplicate service default/a (first defined at line 2)"},
		{"invalid address", "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints:\n      - {address: 10.0.0.300}\n", 5, "endpoint address"},
		{"hostname address", "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints:\n      - address: db.example\n", 5, "endpoint address"},
		{"port out of range", "services:\n  - name: a\n    ports:\n      - {port: 80}\n      - {name: x, port: 70000}\n", 5, "port 70000 out of range"},
		{"endpoint port out of range", "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints:\n      - {address: 10.0.0.1, port: 0}\n      - {address: 10.0.0.2, port: 65536}\n", 6, "out of range"},
		{"port not a number", "services:\n  - name: a\n    ports:\n      - {port: eighty}\n", 4, "cannot unmarshal"},
		{"unknown protocol", "services:\n  - name: a\n    ports:\n      - {port: 80, protocol: SMTP}\n", 4, `unknown protocol "SMTP"`},
		{"unknown lb", "services:\n  - name: a\n    lb: FASTEST\n    ports: [{port: 80}]\n", 2, `unknown lb policy "FASTEST"`},
		{"bad vip", "services:\n  - name: a\n    vip: nope\n    ports: [{port: 80}]\n", 2, "vip"},
		{"no ports", "services:\n  - name: a\n", 2, "has no ports"},
		{"bad name", "services:\n  - name: Greeter_1\n    ports: [{port: 80}]\n", 2, "not a DNS label"},
		{"service not a mapping", "services:\n  - greeter\n", 2, "expected a mapping"},
		{"both endpoints and dns", "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints: [{address: 10.0.0.1}]\n    dns: {name: a.example}\n", 2, "not both"},
		{"srv with port", "services:\n  - name: a\n    ports: [{port: 80}]\n    dns: {name: _a._tcp.example, type: SRV, port: 80}\n", 4, "SRV"},
		{"hashHeader without hash lb", "services:\n  - name: a\n    hashHeader: x\n    ports: [{port: 80}]\n", 2, "hashHeader needs"},
		{"unknown retry field", "services:\n  - name: a\n    ports: [{port: 80}]\n    retries:\n      attempts: 2\n      backof: {base: 1s}\n", 6, `unknown field "backof"`},
		{"unknown nested field", "services:\n  - name: a\n    ports: [{port: 80}]\n    fault: {abort: {percent: 5, code: 503}}\n", 4, `unknown field "code"`},
		{"unknown retry condition", "services:\n  - name: a\n    ports: [{port: 80}]\n    retries: {attempts: 1, on: [5xx, sometimes]}\n", 2, `unknown condition "sometimes"`},
		{"abort without status", "services:\n  - name: a\n    ports: [{port: 80}]\n    fault: {abort: {percent: 5}}\n", 2, "abort status 0"},
		{"bad service account", "services:\n  - name: a\n    serviceAccount: Not_A_Name\n    ports: [{port: 80}]\n    endpoints: [{address: 10.0.0.1}]\n", 2, "service account"},
		{"two documents", "services: []\n---\nservices: []\n", 0, "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("mesh.yaml", strings.NewReader(tt.in))
			if err == nil {
				t.Fatal("got no error, want one")
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("got %T %v, want a *file.Error", err, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %q, want it to contain %q", err, tt.wantMsg)
			}
			if tt.wantLine > 0 && fe.Line != tt.wantLine && !strings.Contains(err.Error(), "line "+strconv.Itoa(tt.wantLine)) {
				t.Errorf("got %q (line %d), want line %d", err, fe.Line, tt.wantLine)
			}
			if !strings.HasPrefix(err.Error(), "mesh.yaml") {
				t.Errorf("got %q, want it to start with the file name", err)
			}
		})
	}
}

// FuzzParse: no input may panic or hang the parser.
func FuzzParse(f *testing.F) {
	f.Add(full)
	f.Add("services:\n  - name: a\n    ports: [{port: 80}]\n")
	f.Add("services: [{name: a, ports: [{port: 1}], endpoints: [{address: '::1', ports: {x: 2}}]}]")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := Parse("fuzz.yaml", strings.NewReader(in))
		if err != nil {
			return
		}
		for _, s := range cfg.Static {
			if err := s.Validate(); err != nil {
				t.Errorf("Parse accepted an invalid service: %v", err)
			}
		}
	})
}

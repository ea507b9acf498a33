package consul

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tender-mesh/tender/discovery"
)

func entry(id, addr string, port int, checks ...string) healthEntry {
	var e healthEntry
	e.Node.Node, e.Node.Address, e.Node.Datacenter = "node-"+id, "10.0.0.99", "dc1"
	e.Node.Meta = map[string]string{"zone": "z-" + id}
	e.Service.ID, e.Service.Service, e.Service.Address, e.Service.Port = id, "greeter", addr, port
	e.Service.Weights.Passing, e.Service.Weights.Warning = 2, 1
	for _, c := range checks {
		e.Checks = append(e.Checks, struct{ CheckID, Status string }{CheckID: "c", Status: c})
	}
	return e
}

func TestBuild(t *testing.T) {
	tagged := entry("a", "127.0.0.1", 9001, "passing", "passing")
	tagged.Service.Tags = []string{"tender.namespace=shop", "tender.vip=10.96.0.30", "v2"}
	tagged.Service.Meta = map[string]string{"tender_protocol": "grpc", "tender_port": "9000"}
	noAddr := entry("d", "", 9001, "passing") // falls back to the node's address

	tests := []struct {
		name    string
		service string // the Consul service name; default greeter
		opts    Options
		entries []healthEntry
		want    *discovery.Service
	}{
		{
			name:    "passing only, attributes from meta and tags",
			entries: []healthEntry{tagged, entry("b", "127.0.0.2", 9002, "passing", "warning"), entry("c", "127.0.0.3", 9003, "critical")},
			want: &discovery.Service{Name: "greeter", Namespace: "shop", VIP: netip.MustParseAddr("10.96.0.30"),
				Ports:  []discovery.Port{{Name: "grpc", Number: 9000, Protocol: discovery.ProtocolGRPC}},
				Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin},
				Endpoints: []discovery.Endpoint{{Address: netip.MustParseAddr("127.0.0.1"), Ports: map[string]uint32{"grpc": 9001},
					Locality: discovery.Locality{Region: "dc1", Zone: "z-a"}, Weight: 2, Health: discovery.HealthHealthy,
					Labels: map[string]string{"consul_id": "a", "consul_node": "node-a"}}}},
		},
		{
			name:    "warning included on request, default namespace, common port",
			opts:    Options{IncludeWarning: true},
			entries: []healthEntry{entry("b", "127.0.0.2", 8080, "warning"), noAddr, entry("e", "127.0.0.5", 8080, "passing")},
			want: &discovery.Service{Name: "greeter", Namespace: "default",
				Ports:  []discovery.Port{{Name: "default", Number: 8080}},
				Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin},
				Endpoints: []discovery.Endpoint{
					{Address: netip.MustParseAddr("127.0.0.2"), Ports: map[string]uint32{"default": 8080}, Locality: discovery.Locality{Region: "dc1", Zone: "z-b"},
						Weight: 1, Health: discovery.HealthHealthy, Labels: map[string]string{"consul_id": "b", "consul_node": "node-b"}},
					{Address: netip.MustParseAddr("10.0.0.99"), Ports: map[string]uint32{"default": 9001}, Locality: discovery.Locality{Region: "dc1", Zone: "z-d"},
						Weight: 2, Health: discovery.HealthHealthy, Labels: map[string]string{"consul_id": "d", "consul_node": "node-d"}},
					{Address: netip.MustParseAddr("127.0.0.5"), Ports: map[string]uint32{"default": 8080}, Locality: discovery.Locality{Region: "dc1", Zone: "z-e"},
						Weight: 2, Health: discovery.HealthHealthy, Labels: map[string]string{"consul_id": "e", "consul_node": "node-e"}},
				}},
		},
		{
			name:    "all critical: the service stays, without endpoints",
			entries: []healthEntry{entry("a", "127.0.0.1", 9001, "critical")},
			want: &discovery.Service{Name: "greeter", Namespace: "default", Ports: []discovery.Port{{Name: "default", Number: 9001}},
				Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin}, Endpoints: []discovery.Endpoint{}},
		},
		{
			name: "bad protocol: ignored", entries: func() []healthEntry {
				e := entry("a", "127.0.0.1", 9001, "passing")
				e.Service.Tags = []string{"tender.protocol=smtp"}
				return []healthEntry{e}
			}(),
		},
		{
			name: "name that is not a DNS label: ignored", service: "Greeter_V2", entries: func() []healthEntry {
				e := entry("a", "127.0.0.1", 9001, "passing")
				return []healthEntry{e}
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Options{Addr: "127.0.0.1:8500", IncludeWarning: tt.opts.IncludeWarning})
			if err != nil {
				t.Fatal(err)
			}
			name := tt.service
			if name == "" {
				name = "greeter"
			}
			got := s.build(map[string][]healthEntry{name: tt.entries})
			var want []discovery.Service
			if tt.want != nil {
				want = []discovery.Service{*tt.want}
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	for _, addr := range []string{"", "ftp://x:1", "http://"} {
		if _, err := New(Options{Addr: addr}); err == nil {
			t.Errorf("New(%q): got no error", addr)
		}
	}
	if _, err := New(Options{Addr: "https://127.0.0.1:8501", CAFile: "/nonexistent"}); err == nil {
		t.Error("a missing CA file was accepted")
	}
	s, err := New(Options{Addr: "127.0.0.1:8500"})
	if err != nil || s.base.String() != "http://127.0.0.1:8500" || s.opts.Namespace != "default" || s.opts.ZoneMetaKey != "zone" {
		t.Errorf("New: %v, %+v", err, s)
	}
}

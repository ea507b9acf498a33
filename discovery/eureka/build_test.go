package eureka

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tender-mesh/tender/discovery"
)

func inst(app, id, ip string, p int, status string) instance {
	return instance{InstanceID: id, HostName: id + ".local", App: app, IPAddr: ip, Status: status,
		Port: port{p, true}, SecurePort: port{443, false}}
}

func tableOf(ins ...instance) table {
	t := table{}
	for _, in := range ins {
		if t[in.App] == nil {
			t[in.App] = map[string]instance{}
		}
		t[in.App][in.ID()] = in
	}
	return t
}

func ep(ip, portName string, p uint32, h discovery.Health, zone, app, id string) discovery.Endpoint {
	return discovery.Endpoint{Address: netip.MustParseAddr(ip), Ports: map[string]uint32{portName: p},
		Locality: discovery.Locality{Region: "eu-west-1", Zone: zone}, Health: h,
		Labels: map[string]string{"eureka_app": app, "eureka_instance_id": id}}
}

func TestBuild(t *testing.T) {
	grpc := inst("GREETER", "g1", "10.0.0.1", 9001, "UP")
	grpc.Metadata = metadata{metaProtocol: "grpc", metaPort: "8080", metaNamespace: "shop", metaZone: "z1", metaLB: "least_request", metaVIP: "10.96.0.40"}
	grpc.VIPAddress = "greeter"
	g2 := inst("GREETER", "g2", "10.0.0.2", 9002, "UP")
	g2.Metadata = metadata{metaNamespace: "shop"}
	g2.OverriddenStatus = "OUT_OF_SERVICE"
	g2.DataCenterInfo = dataCenterInfo{Name: "Amazon", Metadata: metadata{metaAvailabilityZone: "eu-west-1b"}}
	g3 := inst("GREETER", "g3", "10.0.0.3", 9003, "DOWN")
	g3.Metadata = metadata{metaNamespace: "shop"}
	g4 := inst("GREETER", "g4", "10.0.0.4", 9004, "STARTING")
	g4.Metadata = metadata{metaNamespace: "shop"}

	// Two applications behind one vipAddress, one of them with a
	// secure port too.
	a1 := inst("ORDERS-V1", "o1", "10.0.1.1", 8080, "UP")
	a1.VIPAddress = "orders, orders-v1"
	a2 := inst("ORDERS-V2", "o2", "10.0.1.2", 8080, "UP")
	a2.VIPAddress = "orders"
	a2.SecurePort = port{8443, true}
	oos := inst("ORDERS-V1", "o3", "10.0.1.3", 8080, "OUT_OF_SERVICE")

	tests := []struct {
		name string
		tab  table
		want []discovery.Service
	}{
		{
			name: "statuses, attributes from metadata, zones",
			tab:  tableOf(grpc, g2, g3, g4),
			want: []discovery.Service{{Name: "greeter", Namespace: "shop", VIP: netip.MustParseAddr("10.96.0.40"),
				Ports:  []discovery.Port{{Name: "grpc", Number: 8080, Protocol: discovery.ProtocolGRPC}},
				Policy: discovery.TrafficPolicy{LB: discovery.LBLeastRequest},
				Endpoints: []discovery.Endpoint{
					ep("10.0.0.1", "grpc", 9001, discovery.HealthHealthy, "z1", "GREETER", "g1"),
					ep("10.0.0.2", "grpc", 9002, discovery.HealthDraining, "eu-west-1b", "GREETER", "g2"),
				}}},
		},
		{
			name: "vipAddress names: a service each, across applications",
			tab:  tableOf(a1, a2, oos),
			want: []discovery.Service{
				{Name: "orders", Namespace: "default", Ports: []discovery.Port{{Name: "default", Number: 8080}},
					Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin},
					// Only o2 of the two serves https: the service
					// has no https port.
					Endpoints: []discovery.Endpoint{
						ep("10.0.1.1", "default", 8080, discovery.HealthHealthy, "", "ORDERS-V1", "o1"),
						ep("10.0.1.2", "default", 8080, discovery.HealthHealthy, "", "ORDERS-V2", "o2"),
					}},
				{Name: "orders-v1", Namespace: "default", Ports: []discovery.Port{{Name: "default", Number: 8080}},
					Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin},
					Endpoints: []discovery.Endpoint{
						ep("10.0.1.1", "default", 8080, discovery.HealthHealthy, "", "ORDERS-V1", "o1"),
						ep("10.0.1.3", "default", 8080, discovery.HealthDraining, "", "ORDERS-V1", "o3"),
					}},
				{Name: "orders-v2", Namespace: "default",
					Ports:  []discovery.Port{{Name: "default", Number: 8080}, {Name: "https", Number: 8443, Protocol: discovery.ProtocolTCP}},
					Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin},
					Endpoints: []discovery.Endpoint{{Address: netip.MustParseAddr("10.0.1.2"),
						Ports:    map[string]uint32{"default": 8080, "https": 8443},
						Locality: discovery.Locality{Region: "eu-west-1"}, Health: discovery.HealthHealthy,
						Labels: map[string]string{"eureka_app": "ORDERS-V2", "eureka_instance_id": "o2"}}}},
			},
		},
		{
			name: "all down: the service stays, without endpoints",
			tab:  tableOf(inst("PAY", "p1", "10.0.2.1", 7000, "DOWN")),
			want: []discovery.Service{{Name: "pay", Namespace: "default", Ports: []discovery.Port{{Name: "default", Number: 7000}},
				Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin}, Endpoints: []discovery.Endpoint{}}},
		},
		{
			name: "bad protocol, name not a DNS label, no port: left out; a hostname for ipAddr: instance left out",
			tab: func() table {
				bad := inst("BAD", "b1", "10.0.3.1", 80, "UP")
				bad.Metadata = metadata{metaProtocol: "smtp"}
				noPort := inst("NOPORT", "n1", "10.0.3.2", 80, "UP")
				noPort.Port.Enabled = false
				host := inst("HOST", "h1", "host.example", 80, "UP")
				return tableOf(bad, inst("MY_APP", "m1", "10.0.3.3", 80, "UP"), noPort, host)
			}(),
			want: []discovery.Service{{Name: "host", Namespace: "default", Ports: []discovery.Port{{Name: "default", Number: 80}},
				Policy: discovery.TrafficPolicy{LB: discovery.LBRoundRobin}, Endpoints: []discovery.Endpoint{}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Options{URLs: []string{"http://127.0.0.1:8761/eureka"}, Region: "eu-west-1"})
			if err != nil {
				t.Fatal(err)
			}
			got := s.build(tt.tab)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApply(t *testing.T) {
	base := tableOf(inst("A", "a1", "10.0.0.1", 80, "UP"), inst("A", "a2", "10.0.0.2", 80, "UP"), inst("B", "b1", "10.0.0.3", 80, "UP"))
	delta := func(ins ...instance) *applications {
		apps := &applications{}
		for _, in := range ins {
			apps.Application = append(apps.Application, application{Name: in.App, Instance: list[instance]{in}})
		}
		return apps
	}
	with := func(in instance, action string) instance { in.ActionType = action; return in }
	down := inst("A", "a1", "10.0.0.1", 80, "DOWN")
	next, changed, err := base.apply(delta(with(down, actionModified), with(inst("B", "b1", "", 0, ""), actionDeleted),
		with(inst("C", "c1", "10.0.0.4", 80, "STARTING"), actionAdded)))
	if err != nil || !changed {
		t.Fatalf("apply: changed %v, %v", changed, err)
	}
	want := tableOf(down, inst("A", "a2", "10.0.0.2", 80, "UP"), inst("C", "c1", "10.0.0.4", 80, "STARTING"))
	if diff := cmp.Diff(want, next); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	if got, want := next.hash(), "DOWN_1_STARTING_1_UP_1_"; got != want {
		t.Errorf("hash: got %q, want %q", got, want)
	}
	if got, want := base.hash(), "UP_3_"; got != want {
		t.Errorf("the delta changed the table it was applied to: hash %q, want %q", got, want)
	}
	if _, changed, err := base.apply(delta()); err != nil || changed {
		t.Errorf("an empty delta: changed %v, %v; want no change", changed, err)
	}
	if _, _, err := base.apply(delta(with(down, "RENAMED"))); err == nil {
		t.Error("an unknown actionType was accepted")
	}
	// B's only instance replaced by another in one delta (a pod
	// restarted): deleted, which drops B, then added again.
	b2 := inst("B", "b2", "10.0.0.5", 80, "UP")
	next, _, err = base.apply(delta(with(inst("B", "b1", "", 0, ""), actionDeleted), with(b2, actionAdded)))
	if err != nil {
		t.Fatalf("replace B's only instance: %v", err)
	}
	want = tableOf(inst("A", "a1", "10.0.0.1", 80, "UP"), inst("A", "a2", "10.0.0.2", 80, "UP"), b2)
	if diff := cmp.Diff(want, next); diff != "" {
		t.Errorf("B's only instance replaced (-want +got):\n%s", diff)
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{},
		{URLs: []string{"ftp://x:1/eureka"}},
		{URLs: []string{"http://"}},
		{URLs: []string{"http://x:1/eureka?q=1"}},
		{URLs: []string{"https://x:1/eureka"}, CAFile: "/nonexistent"},
		{URLs: []string{"http://x:1/eureka"}, UsernameFile: "/u"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v): got no error", o)
		}
	}
	s, err := New(Options{URLs: []string{"http://user:secret@127.0.0.1:8761/eureka/", "http://127.0.0.2:8761/eureka/v2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.servers[0].String(); got != "http://127.0.0.1:8761/eureka" {
		t.Errorf("server 0 is %q: want its URL without credentials or a trailing slash", got)
	}
	if sv := s.servers[0]; !sv.set || sv.user != "user" || sv.password != "secret" {
		t.Errorf("server 0 credentials %+v", sv)
	}
	if s.opts.Refresh != 30*time.Second || s.opts.Namespace != "default" {
		t.Errorf("defaults: %+v", s.opts)
	}
	if _, err := New(Options{URLs: []string{"http://user:secret@[::1"}}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("a bad URL's error must not show its password: %v", err)
	}
}

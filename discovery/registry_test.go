package discovery

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tender-mesh/tender/security/authz"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func service(ns, name string, addrs ...string) Service {
	s := Service{Name: name, Namespace: ns, Ports: []Port{{Name: "http", Number: 80, Protocol: ProtocolHTTP}}}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, Endpoint{Address: netip.MustParseAddr(a), Health: HealthHealthy})
	}
	return s
}

// runRegistry runs r until the test ends and returns its snapshots.
func runRegistry(t *testing.T, r *Registry) <-chan *Snapshot {
	t.Helper()
	ch := make(chan *Snapshot, 16)
	r.Subscribe(func(s *Snapshot) { ch <- s })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

func next(t *testing.T, ch <-chan *Snapshot) *Snapshot {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot within 5s")
		return nil
	}
}

func keys(s *Snapshot) []string {
	var out []string
	for _, svc := range s.Services {
		out = append(out, svc.Key()+"@"+svc.Source)
	}
	return out
}

func TestRegistryWaitsForAllSourcesThenMerges(t *testing.T) {
	r := New(Options{Debounce: 10 * time.Millisecond, Sources: []string{"file", "dns"}})
	ch := runRegistry(t, r)
	r.Update("file", []Service{service("default", "b"), service("default", "a")})
	// dns has not reported: nothing may be published, and not ready.
	select {
	case s := <-ch:
		t.Fatalf("got snapshot %v before every source synced", keys(s))
	case <-time.After(100 * time.Millisecond):
	}
	if r.Ready() {
		t.Error("Ready before every source synced")
	}
	r.Update("dns", []Service{service("web", "c")})
	s := next(t, ch)
	want := []string{"default/a@file", "default/b@file", "web/c@dns"}
	if diff := cmp.Diff(want, keys(s)); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	if s.Version != 1 {
		t.Errorf("got version %d, want 1", s.Version)
	}
	if !r.Ready() {
		t.Error("not Ready after every source synced and a snapshot was published")
	}
}

func TestRegistryDebouncesBursts(t *testing.T) {
	r := New(Options{Debounce: 50 * time.Millisecond, Sources: []string{"file"}})
	ch := runRegistry(t, r)
	for i := range 20 {
		r.Update("file", []Service{service("default", "a", netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String())})
	}
	s := next(t, ch)
	if got := s.Services[0].Endpoints[0].Address.String(); got != "10.0.0.19" {
		t.Errorf("got endpoint %s, want the last update's 10.0.0.19", got)
	}
	select {
	case s := <-ch:
		t.Errorf("got a second snapshot (version %d) for one burst", s.Version)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestRegistryMaxDelayBoundsSteadyUpdates(t *testing.T) {
	r := New(Options{Debounce: 40 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	ch := runRegistry(t, r)
	next(t, ch) // the empty mesh
	start := time.Now()
	stop := time.After(2 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case s := <-ch:
			if len(s.Services) == 0 {
				t.Fatal("got an empty snapshot while updates flow")
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("first snapshot after %v of steady updates, want about MaxDelay (100ms)", d)
			}
			return
		case <-tick.C:
			r.Update("file", []Service{service("default", "a", netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String())})
		case <-stop:
			t.Fatal("steady updates held back every snapshot")
		}
	}
}

func TestRegistryConflictPrecedence(t *testing.T) {
	var conflicts []Conflict
	r := New(Options{Debounce: 10 * time.Millisecond, Sources: []string{"kubernetes", "file", "dns"},
		OnConflict: func(c Conflict) { conflicts = append(conflicts, c) }})
	ch := runRegistry(t, r)
	r.Update("dns", []Service{service("default", "a", "10.0.0.3")})
	r.Update("file", []Service{service("default", "a", "10.0.0.2")})
	r.Update("kubernetes", []Service{service("default", "a", "10.0.0.1"), service("default", "z")})
	s := next(t, ch)
	if diff := cmp.Diff([]string{"default/a@kubernetes", "default/z@kubernetes"}, keys(s)); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	want := []Conflict{{Key: "default/a", Winner: "kubernetes", Losers: []string{"file", "dns"}}}
	if diff := cmp.Diff(want, s.Conflicts); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, conflicts); diff != "" {
		t.Errorf("OnConflict calls (-want +got):\n%s", diff)
	}
	// A later change that keeps the conflict does not report it again.
	r.Update("dns", []Service{service("default", "a", "10.0.0.4")})
	r.Update("kubernetes", []Service{service("default", "a", "10.0.0.1"), service("default", "y")})
	if s := next(t, ch); len(s.Conflicts) != 1 || len(conflicts) != 1 {
		t.Errorf("after an unrelated change: %d conflicts in the snapshot, %d reported in all; want 1 and 1", len(s.Conflicts), len(conflicts))
	}
}

// TestRegistryVIPConflict: two services claiming one VIP:port (a Consul
// registration with another service's ClusterIP) do not both keep it:
// the source with precedence does, the other loses its VIP, and the
// conflict is reported. Every snapshot decides alike.
func TestRegistryVIPConflict(t *testing.T) {
	var reported []Conflict
	r := New(Options{Debounce: 10 * time.Millisecond, Sources: []string{"kubernetes", "consul"},
		OnConflict: func(c Conflict) { reported = append(reported, c) }})
	ch := runRegistry(t, r)
	owner, impostor := service("default", "payments", "10.0.0.1"), service("default", "evil", "10.0.0.9")
	owner.VIP, impostor.VIP = netip.MustParseAddr("10.96.0.50"), netip.MustParseAddr("10.96.0.50")
	r.Update("consul", []Service{impostor})
	r.Update("kubernetes", []Service{owner})
	s := next(t, ch)
	vips := map[string]string{}
	for _, svc := range s.Services {
		vips[svc.Key()] = svc.VIP.String()
	}
	if vips["default/payments"] != "10.96.0.50" || vips["default/evil"] != "invalid IP" {
		t.Errorf("VIPs after the conflict: %v; want payments to keep 10.96.0.50 and evil none", vips)
	}
	want := []Conflict{{Key: "vip 10.96.0.50:80", Winner: "default/payments@kubernetes", Losers: []string{"default/evil@consul"}}}
	if diff := cmp.Diff(want, s.Conflicts); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, reported); diff != "" {
		t.Errorf("reported (-want +got):\n%s", diff)
	}
}

func TestRegistrySkipsUnchangedAndTracksErrors(t *testing.T) {
	r := New(Options{Debounce: 10 * time.Millisecond, Sources: []string{"file"}})
	ch := runRegistry(t, r)
	r.Update("file", []Service{service("default", "a")})
	first := next(t, ch)
	r.ReportError("file", errors.New("mesh.yaml:3: bad"))
	if got := r.Status()["file"].Err; got != "mesh.yaml:3: bad" {
		t.Errorf("got status error %q, want the reported one", got)
	}
	r.Update("file", []Service{service("default", "a")})
	r.Update("file", []Service{service("default", "a"), service("default", "b")})
	s := next(t, ch)
	if s.Version != first.Version+1 {
		t.Errorf("got version %d, want %d: an unchanged update must not publish", s.Version, first.Version+1)
	}
	if got := r.Status()["file"].Err; got != "" {
		t.Errorf("got status error %q after a good update, want none", got)
	}
}

func TestRegistrySyncTimeoutPublishesWhatItHas(t *testing.T) {
	r := New(Options{Debounce: 10 * time.Millisecond, Sources: []string{"file", "consul"}, SyncTimeout: 200 * time.Millisecond})
	ch := runRegistry(t, r)
	r.Update("file", []Service{service("default", "a")})
	s := next(t, ch)
	if diff := cmp.Diff([]string{"default/a@file"}, keys(s)); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	ok := service("default", "a", "10.0.0.1")
	tests := []struct {
		name   string
		mutate func(*Service)
		ok     bool
	}{
		{"valid", func(*Service) {}, true},
		{"upper-case name", func(s *Service) { s.Name = "Greeter" }, false},
		{"empty namespace", func(s *Service) { s.Namespace = "" }, false},
		{"no ports", func(s *Service) { s.Ports = nil }, false},
		{"port zero", func(s *Service) { s.Ports[0].Number = 0 }, false},
		{"port too big", func(s *Service) { s.Ports[0].Number = 70000 }, false},
		{"duplicate port", func(s *Service) { s.Ports = append(s.Ports, Port{Name: "x", Number: 80}) }, false},
		{"bad protocol", func(s *Service) { s.Ports[0].Protocol = "SMTP" }, false},
		{"bad lb", func(s *Service) { s.Policy.LB = "FASTEST" }, false},
		{"endpoint without address", func(s *Service) { s.Endpoints[0].Address = netip.Addr{} }, false},
		{"endpoint unknown port name", func(s *Service) { s.Endpoints[0].Ports = map[string]uint32{"grpc": 1} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			s.Ports = append([]Port(nil), ok.Ports...)
			s.Endpoints = append([]Endpoint(nil), ok.Endpoints...)
			tt.mutate(&s)
			err := s.Validate()
			if got := err == nil; got != tt.ok {
				t.Errorf("got error %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want an error wrapping ErrInvalid", err)
			}
		})
	}
}

// TestRegistryWaitsForPolicies: a control plane that just started (a
// restart, a new replica) publishes nothing until its policy source has
// reported, not even after SyncTimeout, so a proxy that connects
// meanwhile never gets a route without the policy guarding it; then one
// snapshot carries services and policies together, and security changes
// are published like services, merged by source precedence.
func TestRegistryWaitsForPolicies(t *testing.T) {
	r := New(Options{Debounce: 10 * time.Millisecond, SyncTimeout: 50 * time.Millisecond,
		Sources: []string{"file", "kubernetes"}, SecuritySources: []string{"kubernetes"}})
	ch := runRegistry(t, r)
	r.Update("file", []Service{service("default", "a")})
	r.UpdateSecurity("file", Security{MTLS: &MTLSPolicy{Mode: MTLSStrict},
		Authorization: []authz.Policy{{Name: "p", Namespace: "default", Action: authz.ActionAllow}}})
	r.Update("kubernetes", []Service{service("shop", "b")})
	select {
	case s := <-ch:
		t.Fatalf("published version %d (%d policies) before the policy source reported", s.Version, len(s.Security.Authorization))
	case <-time.After(300 * time.Millisecond): // six sync timeouts
	}
	if r.Ready() {
		t.Error("ready before the policy source reported")
	}
	deny := authz.Policy{Name: "deny", Namespace: "shop", Action: authz.ActionDeny}
	r.UpdateSecurity("kubernetes", Security{Authorization: []authz.Policy{deny, {Name: "p", Namespace: "default"}}})
	s := next(t, ch)
	if len(s.Services) != 2 || s.Security.MTLS == nil || s.Security.MTLS.Mode != MTLSStrict {
		t.Fatalf("first snapshot: %v, modes %+v", keys(s), s.Security.MTLS)
	}
	want := []authz.Policy{{Name: "p", Namespace: "default", Action: authz.ActionAllow}, deny}
	if diff := cmp.Diff(want, s.Security.Authorization); diff != "" {
		t.Errorf("policies (-want +got): mesh.yaml's wins a name both use\n%s", diff)
	}
	if !r.Ready() {
		t.Error("not ready once every source reported")
	}
	r.UpdateSecurity("kubernetes", Security{})
	if s := next(t, ch); len(s.Security.Authorization) != 1 {
		t.Errorf("after kubernetes dropped its policies: %v", s.Security.Authorization)
	}
}

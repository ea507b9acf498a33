package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	mdns "github.com/miekg/dns"

	"github.com/tender-mesh/tender/discovery"
)

// wait bounds every wait for something the source should do at once.
const wait = 5 * time.Second

// web is the service template most tests resolve.
var web = discovery.Service{
	Name: "web", Namespace: "default",
	VIP:    netip.MustParseAddr("10.96.0.10"),
	Ports:  []discovery.Port{{Name: "http", Number: 80, Protocol: discovery.ProtocolHTTP}, {Name: "admin", Number: 9000}},
	Policy: discovery.TrafficPolicy{LB: discovery.LBLeastRequest},
}

func named(name string) discovery.Service {
	s := web
	s.Name = name
	return s
}

// withEndpoints is what the source reports for template with eps.
func withEndpoints(template discovery.Service, eps ...discovery.Endpoint) discovery.Service {
	template.Endpoints = eps
	template.Source = Name
	return template
}

// srvEndpoint is an endpoint found through SRV: every port of web on port.
func srvEndpoint(addr string, port, weight, priority uint32) discovery.Endpoint {
	return discovery.Endpoint{
		Address: netip.MustParseAddr(addr), Ports: map[string]uint32{"http": port, "admin": port},
		Weight: weight, Priority: priority, Health: discovery.HealthHealthy,
	}
}

// addrEndpoint is an endpoint found through A/AAAA, on port if not 0.
func addrEndpoint(addr string, port uint32) discovery.Endpoint {
	ep := discovery.Endpoint{Address: netip.MustParseAddr(addr), Health: discovery.HealthHealthy}
	if port != 0 {
		ep.Ports = map[string]uint32{"http": port, "admin": port}
	}
	return ep
}

func TestSRV(t *testing.T) {
	const name = "_http._tcp.web.test."
	srvs := []string{
		name + " 30 IN SRV 10 5 8080 a.web.test.",
		name + " 30 IN SRV 20 0 8081 B.Web.Test.", // names are case-insensitive
		name + " 30 IN SRV 5 1 8082 .",            // "not available here": skipped
		name + " 30 IN SRV 5 1 0 c.web.test.",     // no port: skipped
	}
	want := []discovery.Service{withEndpoints(web,
		srvEndpoint("10.0.0.1", 8080, 5, 10),
		srvEndpoint("10.0.0.2", 8081, 1, 20),
		srvEndpoint("fd00::1", 8080, 5, 10),
	)}
	tests := []struct {
		name string
		zone func(t *testing.T, z *zone)
		// asked are the questions the source must ask, in any order.
		asked []question
	}{{
		name: "addresses in the additional section",
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.set(name, mdns.TypeSRV, answer{
				answer: rrs(t, srvs...),
				extra:  rrs(t, "a.web.test. 30 IN A 10.0.0.1", "a.web.test. 30 IN AAAA fd00::1", "b.web.test. 30 IN A 10.0.0.2"),
			})
		},
		asked: []question{{name, mdns.TypeSRV}},
	}, {
		name: "addresses looked up",
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.setLines(name, mdns.TypeSRV, srvs...)
			z.setLines("a.web.test", mdns.TypeA, "a.web.test. 30 IN A 10.0.0.1")
			z.setLines("a.web.test", mdns.TypeAAAA, "a.web.test. 30 IN AAAA fd00::1")
			z.setLines("b.web.test", mdns.TypeA, "b.web.test. 30 IN A 10.0.0.2")
		},
		asked: []question{
			{name, mdns.TypeSRV},
			{"a.web.test.", mdns.TypeA}, {"a.web.test.", mdns.TypeAAAA},
			{"b.web.test.", mdns.TypeA}, {"b.web.test.", mdns.TypeAAAA},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newZone(t)
			tt.zone(t, z)
			addr := serve(t, z, false)
			s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: name, Type: SRV}})
			waitEqual(t, s, wait, want)
			noErr(t, s)

			var asked []question
			for len(z.queries) > 0 {
				asked = append(asked, <-z.queries)
			}
			sortQ := cmp.Transformer("sort", func(qs []question) map[question]bool {
				m := make(map[question]bool, len(qs))
				for _, q := range qs {
					m[q] = true
				}
				return m
			})
			if diff := cmp.Diff(tt.asked, asked, cmp.AllowUnexported(question{}), sortQ); diff != "" {
				t.Errorf("questions asked (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		name   string
		target Target
		zone   func(t *testing.T, z *zone)
		want   []discovery.Endpoint
	}{{
		name:   "A and AAAA with a port",
		target: Target{Service: web, Name: "web.test", Type: A, Port: 8080},
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.setLines("web.test", mdns.TypeA, "web.test. 30 IN A 10.0.0.2", "web.test. 30 IN A 10.0.0.1")
			z.setLines("web.test", mdns.TypeAAAA, "web.test. 30 IN AAAA fd00::1")
		},
		want: []discovery.Endpoint{addrEndpoint("10.0.0.1", 8080), addrEndpoint("10.0.0.2", 8080), addrEndpoint("fd00::1", 8080)},
	}, {
		name:   "empty type is A",
		target: Target{Service: web, Name: "web.test."},
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.setLines("web.test", mdns.TypeA, "web.test. 30 IN A 10.0.0.1")
			z.setLines("web.test", mdns.TypeAAAA, "web.test. 30 IN AAAA fd00::1")
		},
		want: []discovery.Endpoint{addrEndpoint("10.0.0.1", 0), addrEndpoint("fd00::1", 0)},
	}, {
		name:   "AAAA only, service ports",
		target: Target{Service: web, Name: "web.test", Type: AAAA},
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.setLines("web.test", mdns.TypeA, "web.test. 30 IN A 10.0.0.1")
			z.setLines("web.test", mdns.TypeAAAA, "web.test. 30 IN AAAA fd00::2", "web.test. 30 IN AAAA fd00::1")
		},
		want: []discovery.Endpoint{addrEndpoint("fd00::1", 0), addrEndpoint("fd00::2", 0)},
	}, {
		name:   "CNAME chain in the answer",
		target: Target{Service: web, Name: "web.test", Type: A, Port: 8080},
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.setLines("web.test", mdns.TypeA,
				"web.test. 30 IN CNAME c1.test.",
				"other.test. 30 IN A 10.9.9.9", // not on the chain: ignored
				"c2.test. 30 IN A 10.0.0.3",
				"c1.test. 30 IN CNAME c2.test.",
			)
		},
		want: []discovery.Endpoint{addrEndpoint("10.0.0.3", 8080)},
	}, {
		name:   "CNAME the answer does not resolve",
		target: Target{Service: web, Name: "web.test", Type: A, Port: 8080},
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			z.setLines("web.test", mdns.TypeA, "web.test. 30 IN CNAME real.test.")
			z.setLines("real.test", mdns.TypeA, "real.test. 30 IN A 10.0.0.7")
		},
		want: []discovery.Endpoint{addrEndpoint("10.0.0.7", 8080)},
	}, {
		name:   "malformed and stray records ignored",
		target: Target{Service: web, Name: "web.test", Type: A, Port: 8080},
		zone: func(t *testing.T, z *zone) {
			t.Helper()
			a := rrs(t, "web.test. 30 IN A 10.0.0.1", "web.test. 30 IN A 0.0.0.0", "web.test. 30 IN TXT \"hello\"")
			// An A record without an address arrives with no rdata.
			a = append(a, &mdns.A{Hdr: mdns.RR_Header{Name: "web.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30}})
			z.set("web.test", mdns.TypeA, answer{answer: a})
			z.setLines("web.test", mdns.TypeAAAA, "web.test. 30 IN AAAA ::", "web.test. 30 IN A 10.0.0.2")
		},
		want: []discovery.Endpoint{addrEndpoint("10.0.0.1", 8080)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newZone(t)
			tt.zone(t, z)
			addr := serve(t, z, false)
			s := run(t, New(testOptions(addr)), []Target{tt.target})
			waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, tt.want...)})
			noErr(t, s)
		})
	}
}

func TestReportsServicesBeforeTheyResolve(t *testing.T) {
	z := newZone(t)
	z.setSilent(true)
	addr := serve(t, z, false)
	src := New(testOptions(addr))
	s := run(t, src, []Target{{Service: web, Name: "web.test", Type: A}})
	select {
	case got := <-s.updates:
		if diff := cmp.Diff([]discovery.Service{withEndpoints(web)}, got, cmpOpts); diff != "" {
			t.Errorf("first update (-want +got):\n%s", diff)
		}
	case <-time.After(wait):
		t.Fatalf("no update within %s, want one before any answer", wait)
	}
	// No targets at all is still a report: the registry waits for it.
	src.SetTargets(nil)
	waitEqual(t, s, wait, []discovery.Service{})
}

func TestTTLDrivesRefresh(t *testing.T) {
	z := newZone(t)
	z.setLines("web.test", mdns.TypeA, "web.test. 1 IN A 10.0.0.1")
	addr := serve(t, z, false)
	s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: "web.test", Type: A, Port: 8080, Refresh: time.Minute}})
	waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 8080))})

	z.setLines("web.test", mdns.TypeA, "web.test. 1 IN A 10.0.0.2")
	start := time.Now()
	waitEqual(t, s, 3*time.Second, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.2", 8080))})
	t.Logf("change seen after %s", time.Since(start))
}

func TestNoUpdateWhenNothingChanges(t *testing.T) {
	z := newZone(t)
	// TTL 0: resolved again every MinRefresh.
	z.setLines("web.test", mdns.TypeA, "web.test. 0 IN A 10.0.0.1")
	addr := serve(t, z, false)
	s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: "web.test", Type: A}})
	waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 0))})
	drain(z.queries)
	waitQueries(t, z, 10, wait) // five more resolutions, A and AAAA each
	select {
	case got := <-s.updates:
		t.Errorf("got update %+v, want none: nothing changed", got)
	default:
	}
	noErr(t, s)
}

func TestFailureKeepsEndpoints(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(z *zone)
		recover func(z *zone)
		// check inspects one server's error.
		check func(t *testing.T, err error)
	}{{
		name:    "no answer",
		fail:    func(z *zone) { z.setSilent(true) },
		recover: func(z *zone) { z.setSilent(false) },
		check: func(t *testing.T, err error) {
			t.Helper()
			if !strings.Contains(err.Error(), "timeout") {
				t.Errorf("got %v, want a timeout", err)
			}
		},
	}, {
		name:    "SERVFAIL",
		fail:    func(z *zone) { z.setRcode(mdns.RcodeServerFailure) },
		recover: func(z *zone) { z.setRcode(0) },
		check: func(t *testing.T, err error) {
			t.Helper()
			var re *RcodeError
			if !errors.As(err, &re) || re.Rcode != mdns.RcodeServerFailure {
				t.Errorf("got %v, want an RcodeError SERVFAIL", err)
			}
		},
	}, {
		name:    "REFUSED",
		fail:    func(z *zone) { z.setRcode(mdns.RcodeRefused) },
		recover: func(z *zone) { z.setRcode(0) },
		check: func(t *testing.T, err error) {
			t.Helper()
			var re *RcodeError
			if !errors.As(err, &re) || re.Rcode != mdns.RcodeRefused {
				t.Errorf("got %v, want an RcodeError REFUSED", err)
			}
		},
	}, {
		name: "garbage answer",
		fail: func(z *zone) {
			z.mu.Lock()
			defer z.mu.Unlock()
			// A header claiming five answers, then noise.
			z.raw["web.test."] = []byte{0, 0, 0x84, 0, 0, 1, 0, 5, 0, 0, 0, 0, 3, 'w', 'e', 'b', 0xc0, 0xff, 0x01}
		},
		recover: func(z *zone) {
			z.mu.Lock()
			defer z.mu.Unlock()
			delete(z.raw, "web.test.")
		},
		check: func(t *testing.T, err error) {
			t.Helper()
			if err == nil || strings.Contains(err.Error(), "timeout") {
				t.Errorf("got %v, want an error reading the answer", err)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newZone(t)
			z.setLines("web.test", mdns.TypeA, "web.test. 0 IN A 10.0.0.1")
			addr := serve(t, z, false)
			opts := testOptions(addr)
			opts.Timeout = 100 * time.Millisecond
			s := run(t, New(opts), []Target{{Service: web, Name: "web.test", Type: A, Port: 8080, Refresh: 200 * time.Millisecond}})
			want := []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 8080))}
			waitEqual(t, s, wait, want)

			tt.fail(z)
			// Retried with backoff, and reported every time.
			for range 2 {
				err := waitErr(t, s, wait)
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("got error %v (%T), want a *dns.Error", err, err)
				}
				if de.Service != "default/web" || de.Name != "web.test." || len(de.Servers) != 1 || de.Servers[0].Server != addr {
					t.Errorf("got error %+v, want one for service default/web, name web.test., server %s", de, addr)
				}
				for _, want := range []string{"default/web", "web.test.", addr} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("got error %q, want it to name %s", err, want)
					}
				}
				tt.check(t, de.Servers[0].Err)
			}
			select {
			case got := <-s.updates:
				t.Errorf("got update %+v during the failure, want the last endpoints kept", got)
			default:
			}

			// Back, with the same records: one update clears the error.
			tt.recover(z)
			waitEqual(t, s, wait, want)
			drain(s.errs)
			z.setLines("web.test", mdns.TypeA, "web.test. 0 IN A 10.0.0.2")
			waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.2", 8080))})
		})
	}
}

func TestServersTriedInOrder(t *testing.T) {
	broken := newZone(t)
	broken.setRcode(mdns.RcodeServerFailure)
	brokenAddr := serve(t, broken, false)
	good := newZone(t)
	good.setLines("web.test", mdns.TypeA, "web.test. 0 IN A 10.0.0.1")
	goodAddr := serve(t, good, false)

	s := run(t, New(testOptions(brokenAddr, goodAddr)), []Target{{Service: web, Name: "web.test", Type: A}})
	waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 0))})
	noErr(t, s)
	if len(broken.queries) == 0 {
		t.Errorf("the first server was not asked")
	}

	// Both failing: the error names each.
	good.setRcode(mdns.RcodeRefused)
	err := waitErr(t, s, wait)
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("got error %v, want a *dns.Error", err)
	}
	var got []string
	for _, se := range de.Servers {
		got = append(got, se.Server+" "+se.Err.Error())
	}
	want := []string{brokenAddr + " answered SERVFAIL", goodAddr + " answered REFUSED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("servers in error %q (-want +got):\n%s", err, diff)
	}
}

func TestNoRecordsMeansNoEndpoints(t *testing.T) {
	tests := []struct {
		name   string
		change func(z *zone)
	}{
		{"NXDOMAIN", func(z *zone) { z.remove("web.test", mdns.TypeA) }},
		{"empty answer", func(z *zone) { z.setLines("web.test", mdns.TypeA) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newZone(t)
			z.setLines("web.test", mdns.TypeA, "web.test. 0 IN A 10.0.0.1")
			addr := serve(t, z, false)
			s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: "web.test", Type: A}})
			waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 0))})
			tt.change(z)
			waitEqual(t, s, wait, []discovery.Service{withEndpoints(web)})
			noErr(t, s)
		})
	}
}

func TestNegativeTTL(t *testing.T) {
	z := newZone(t)
	// No A records for a second, says the SOA; the refresh is long.
	z.set("web.test", mdns.TypeA, answer{ns: rrs(t, "test. 60 IN SOA ns.test. admin.test. 1 60 60 60 1")})
	addr := serve(t, z, false)
	s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: "web.test", Type: A, Refresh: time.Minute}})
	waitEqual(t, s, wait, []discovery.Service{withEndpoints(web)})
	z.setLines("web.test", mdns.TypeA, "web.test. 30 IN A 10.0.0.1")
	waitEqual(t, s, 3*time.Second, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 0))})
}

func TestSetTargets(t *testing.T) {
	z := newZone(t)
	z.setLines("a.test", mdns.TypeA, "a.test. 30 IN A 10.0.0.1")
	z.setLines("b.test", mdns.TypeA, "b.test. 30 IN A 10.0.0.2")
	addr := serve(t, z, false)
	src := New(testOptions(addr))
	a := Target{Service: named("a"), Name: "a.test", Type: A, Port: 8080}
	b := Target{Service: named("b"), Name: "b.test", Type: A}
	s := run(t, src, []Target{b, a})
	waitEqual(t, s, wait, []discovery.Service{
		withEndpoints(named("a"), addrEndpoint("10.0.0.1", 8080)),
		withEndpoints(named("b"), addrEndpoint("10.0.0.2", 0)),
	})
	drain(z.queries)

	next := func(what string) []discovery.Service {
		t.Helper()
		select {
		case got := <-s.updates:
			return got
		case <-time.After(wait):
			t.Fatalf("no update within %s, want %s", wait, what)
			return nil
		}
	}

	// The same targets again: nothing to report, nothing to resolve.
	src.SetTargets([]Target{a, b})
	// A changed port: the endpoints are kept and re-rendered at once.
	a.Port = 9090
	src.SetTargets([]Target{a, b})
	want := []discovery.Service{
		withEndpoints(named("a"), addrEndpoint("10.0.0.1", 9090)),
		withEndpoints(named("b"), addrEndpoint("10.0.0.2", 0)),
	}
	if diff := cmp.Diff(want, next("a's new port"), cmpOpts); diff != "" {
		t.Errorf("update after changing a's port (-want +got):\n%s", diff)
	}

	// Removing b drops its service.
	src.SetTargets([]Target{a})
	want = []discovery.Service{withEndpoints(named("a"), addrEndpoint("10.0.0.1", 9090))}
	if diff := cmp.Diff(want, next("b removed"), cmpOpts); diff != "" {
		t.Errorf("update after removing b (-want +got):\n%s", diff)
	}
	for len(z.queries) > 0 {
		if q := <-z.queries; q.name != "a.test." {
			t.Errorf("got question %s %s, want only a.test. asked again (a changed)", q.name, mdns.TypeToString[q.qtype])
		}
	}
	noErr(t, s)
}

func TestInvalidTargetsReported(t *testing.T) {
	z := newZone(t)
	z.setLines("a.test", mdns.TypeA, "a.test. 30 IN A 10.0.0.1")
	addr := serve(t, z, false)
	a := Target{Service: named("a"), Name: "a.test"}
	s := run(t, New(testOptions(addr)), []Target{
		a,
		{Service: named("b"), Name: "b.test", Type: "MX"},
		{Service: named("c")},
		{Service: named("a"), Name: "other.test"},
	})
	waitEqual(t, s, wait, []discovery.Service{withEndpoints(named("a"), addrEndpoint("10.0.0.1", 0))})
	var got []string
	for range 3 {
		got = append(got, waitErr(t, s, wait).Error())
	}
	want := []string{
		`dns source: service default/b: unknown dns record type "MX" (want SRV, A or AAAA)`,
		"dns source: service default/c: no dns name",
		"dns source: service default/a listed twice; ignoring the target for A other.test.",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	z := newZone(t)
	z.setLines("web.test", mdns.TypeA, "web.test. 30 IN A 10.0.0.1", "web.test. 30 IN A 10.0.0.2")
	z.truncate["web.test."] = true
	addr := serve(t, z, true)
	s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: "web.test", Type: A}})
	waitEqual(t, s, wait, []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 0), addrEndpoint("10.0.0.2", 0))})
	noErr(t, s)
}

func TestCNAMELoopIsAFailure(t *testing.T) {
	z := newZone(t)
	z.setLines("web.test", mdns.TypeA, "web.test. 30 IN CNAME loop.test.")
	z.setLines("loop.test", mdns.TypeA, "loop.test. 30 IN CNAME web.test.")
	addr := serve(t, z, false)
	s := run(t, New(testOptions(addr)), []Target{{Service: web, Name: "web.test", Type: A}})
	err := waitErr(t, s, wait)
	if want := "CNAME loop"; !strings.Contains(err.Error(), want) {
		t.Errorf("got error %q, want it to say %q", err, want)
	}
}

func TestSetTargetsFromManyGoroutines(t *testing.T) {
	z := newZone(t)
	for i := range 4 {
		n := fmt.Sprintf("s%d.test", i)
		z.setLines(n, mdns.TypeA, fmt.Sprintf("%s. 30 IN A 10.0.0.%d", n, i+1))
	}
	addr := serve(t, z, false)
	src := New(testOptions(addr))
	target := func(i int) Target {
		return Target{Service: named(fmt.Sprintf("s%d", i)), Name: fmt.Sprintf("s%d.test", i), Type: A}
	}
	src.SetTargets([]Target{target(3)}) // before Run
	s := run(t, src, []Target{target(0)})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				src.SetTargets([]Target{target((g + i) % 4)})
			}
		})
	}
	wg.Wait()
	src.SetTargets([]Target{target(1), target(2)})
	waitEqual(t, s, wait, []discovery.Service{
		withEndpoints(named("s1"), addrEndpoint("10.0.0.2", 0)),
		withEndpoints(named("s2"), addrEndpoint("10.0.0.3", 0)),
	})
}

func TestRunAgainStartsFromTheLastTargets(t *testing.T) {
	z := newZone(t)
	z.setLines("web.test", mdns.TypeA, "web.test. 30 IN A 10.0.0.1")
	addr := serve(t, z, false)
	src := New(testOptions(addr))
	want := []discovery.Service{withEndpoints(web, addrEndpoint("10.0.0.1", 0))}
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		s := newSink()
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx, s) }()
		src.SetTargets([]Target{{Service: web, Name: "web.test"}})
		waitEqual(t, s, wait, want)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	}
	// Without a SetTargets this time.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newSink()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()
	waitEqual(t, s, wait, want)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
}

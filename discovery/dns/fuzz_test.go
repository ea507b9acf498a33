package dns

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tender-mesh/tender/discovery"
)

// maxFuzzRecords bounds the records FuzzTarget builds from one input.
const maxFuzzRecords = 64

// FuzzAnswer unpacks arbitrary bytes as the answer a DNS server sends to
// an SRV, A or AAAA query, as the client does, and runs each step the resolver
// applies to it off the network: check, chase (CNAMEs), the records of
// the asked type at the name chased to, their addresses (addrOf, with
// the SRV glue of the additional section) and the TTLs. It must never
// panic; check accepts only NOERROR and NXDOMAIN answers to the question
// asked; chase ends at the name asked or at a CNAME's target; every
// address is usable (valid, not unspecified, of its record's family); and
// the service rendered from the records validates, with one endpoint per
// distinct record at most.
func FuzzAnswer(f *testing.F) {
	for _, tc := range []struct {
		qtype               uint16
		answer, extra, auth []string
		rcode               int
	}{
		{qtype: mdns.TypeSRV,
			answer: []string{"_http._tcp.web.test. 30 IN SRV 10 60 8080 a.web.test.", "_http._tcp.web.test. 30 IN SRV 20 0 8081 b.web.test.", "_http._tcp.web.test. 30 IN SRV 0 0 0 .", "_http._tcp.web.test. 30 IN SRV 0 0 9 ."},
			extra:  []string{"a.web.test. 5 IN A 10.0.0.1", "a.web.test. 5 IN AAAA fd00::1", "b.web.test. 5 IN A 0.0.0.0"}},
		{qtype: mdns.TypeA, answer: []string{"_http._tcp.web.test. 3 IN CNAME lb.test.", "lb.test. 7 IN A 192.0.2.7", "lb.test. 7 IN A 192.0.2.8", "other.test. 1 IN A 192.0.2.9"}},
		{qtype: mdns.TypeA, answer: []string{"_http._tcp.web.test. 3 IN CNAME a.test.", "a.test. 3 IN CNAME _http._tcp.web.test."}},
		{qtype: mdns.TypeAAAA, answer: []string{"_http._tcp.web.test. 60 IN AAAA ::ffff:10.0.0.1", "_http._tcp.web.test. 60 IN AAAA ::"}},
		{qtype: mdns.TypeA, rcode: mdns.RcodeNameError, auth: []string{"test. 300 IN SOA ns.test. admin.test. 1 7200 3600 1209600 30"}},
		{qtype: mdns.TypeSRV, rcode: mdns.RcodeServerFailure},
	} {
		q := fuzzQuery(tc.qtype)
		m := new(mdns.Msg)
		m.SetReply(q)
		m.Rcode = tc.rcode
		m.Answer, m.Extra, m.Ns = mustRRs(f, tc.answer), mustRRs(f, tc.extra), mustRRs(f, tc.auth)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		kind := uint8(slices.Index(fuzzTypes, tc.qtype))
		f.Add(b, kind)
		f.Add(b[:len(b)/2], kind)
	}
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 12), uint8(2)) // a header alone: no question, no answer

	f.Fuzz(func(t *testing.T, wire []byte, kind uint8) {
		qtype := fuzzTypes[int(kind)%len(fuzzTypes)]
		q := fuzzQuery(qtype)
		resp := new(mdns.Msg)
		if err := resp.Unpack(wire); err != nil {
			return // the client refuses it too
		}
		if err := check(q, resp); err != nil {
			return
		}
		if resp.Rcode != mdns.RcodeSuccess && resp.Rcode != mdns.RcodeNameError {
			t.Fatalf("check accepted rcode %d", resp.Rcode)
		}
		if len(resp.Question) > 0 && (resp.Question[0].Qtype != qtype || mdns.CanonicalName(resp.Question[0].Name) != q.Question[0].Name) {
			t.Fatalf("check accepted the answer to %v, asked %v", resp.Question[0], q.Question[0])
		}

		name := q.Question[0].Name
		ttl := &ttlMin{}
		final := chase(resp.Answer, name, ttl)
		if final != mdns.CanonicalName(final) {
			t.Errorf("chase = %q, not canonical", final)
		}
		if final != name && !slices.ContainsFunc(resp.Answer, func(rr mdns.RR) bool {
			c, ok := rr.(*mdns.CNAME)
			return ok && mdns.CanonicalName(c.Target) == final
		}) {
			t.Errorf("chase = %q, neither the name asked nor a CNAME's target", final)
		}
		ttl.negative(resp)
		if d := ttl.duration(); d < -1 || d > time.Duration(1<<32)*time.Second {
			t.Errorf("TTL %v out of range", d)
		}

		glue := map[string][]netip.Addr{}
		for _, rr := range resp.Extra {
			if a, ok := usableAddr(t, rr); ok {
				host := mdns.CanonicalName(rr.Header().Name)
				glue[host] = append(glue[host], a)
			}
		}
		var recs []record
		for _, rr := range resp.Answer {
			if h := rr.Header(); h.Rrtype != qtype || mdns.CanonicalName(h.Name) != final {
				continue
			}
			if a, ok := usableAddr(t, rr); ok {
				recs = append(recs, record{addr: a})
			}
			if s, ok := rr.(*mdns.SRV); ok && s.Port != 0 {
				for _, a := range glue[mdns.CanonicalName(s.Target)] {
					recs = append(recs, record{addr: a, port: uint32(s.Port), weight: uint32(s.Weight), priority: uint32(s.Priority)})
				}
			}
		}
		typ := RecordType(mdns.TypeToString[qtype])
		checkRender(t, Target{Service: web, Name: name, Type: typ}, recs)
	})
}

// FuzzTarget feeds normalize and render arbitrary targets, as SetTargets
// receives them, and arbitrary resolved records: addresses of 4 or 16
// bytes through addrOf, ports, weights and priorities. normalize must
// never panic, and every target it accepts must render, whatever its
// records, as one service that validates: its template's, from this
// source, with one endpoint per distinct record, each on a port in range.
func FuzzTarget(f *testing.F) {
	rec := func(flag byte, addr []byte, port, weight, priority uint16) []byte {
		b := append([]byte{flag}, addr...)
		return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, port), weight), priority)
	}
	v4 := rec(0, []byte{10, 0, 0, 1}, 8080, 10, 0)
	v6 := rec(3, netip.MustParseAddr("fd00::1").AsSlice(), 8443, 0, 1)
	zero := rec(0, []byte{0, 0, 0, 0}, 0, 0, 0)
	f.Add("SRV", "_http._tcp.web.test", uint32(0), false, append(append(v4, v6...), zero...))
	f.Add("A", "web.test.", uint32(8080), false, v4)
	f.Add("", "web.test", uint32(0), true, append(v4, v4...))
	f.Add("AAAA", "web.test", uint32(65535), true, v6)
	f.Add("MX", "web.test", uint32(80), false, v4)
	f.Add("A", "", uint32(80), false, v4)
	f.Add("A", "a..b", uint32(80), false, v4)
	f.Add("SRV", "_x._tcp.web.test", uint32(1<<32-1), false, v6[:7])
	f.Fuzz(func(t *testing.T, typ, name string, port uint32, single bool, raw []byte) {
		tmpl := web
		if single {
			tmpl.Ports = []discovery.Port{{Number: 5432, Protocol: discovery.ProtocolTCP}}
		}
		var recs []record
		for len(raw) > 0 && len(recs) < maxFuzzRecords {
			// A flag byte: bit 0, 16 address bytes (else 4); bit 1, an
			// AAAA record (else A). Then the address, port, weight and
			// priority.
			flag, n := raw[0], 4
			if flag&1 == 1 {
				n = 16
			}
			if len(raw) < 1+n+6 {
				break
			}
			addr, rest := raw[1:1+n], raw[1+n:]
			raw = rest[6:]
			var rr mdns.RR = &mdns.A{Hdr: mdns.RR_Header{Rrtype: mdns.TypeA}, A: addr}
			if flag&2 == 2 {
				rr = &mdns.AAAA{Hdr: mdns.RR_Header{Rrtype: mdns.TypeAAAA}, AAAA: addr}
			}
			a, ok := usableAddr(t, rr)
			if !ok {
				continue
			}
			r := record{addr: a}
			if RecordType(typ) == SRV {
				r.port = uint32(binary.BigEndian.Uint16(rest))
				r.weight = uint32(binary.BigEndian.Uint16(rest[2:]))
				r.priority = uint32(binary.BigEndian.Uint16(rest[4:]))
				if r.port == 0 {
					continue // resolve skips these
				}
			}
			recs = append(recs, r)
		}
		s := New(Options{})
		nt, err := s.normalize(Target{Service: tmpl, Name: name, Type: RecordType(typ), Port: port})
		if err != nil {
			if _, perr := ParseRecordType(typ); perr != nil && !errors.Is(err, ErrUnknownRecordType) {
				t.Errorf("type %q: got %v, want an error wrapping ErrUnknownRecordType", typ, err)
			}
			return
		}
		if _, ok := mdns.IsDomainName(nt.Name); !ok || !mdns.IsFqdn(nt.Name) {
			t.Errorf("normalize accepted name %q", nt.Name)
		}
		if nt.Refresh <= 0 || len(nt.Service.Endpoints) != 0 {
			t.Errorf("normalize = %+v, want a refresh and no endpoints", nt)
		}
		checkRender(t, nt, recs)
	})
}

// checkRender renders t with recs, as resolve leaves them (sorted,
// without duplicates), and checks the service.
func checkRender(t *testing.T, tgt Target, recs []record) {
	t.Helper()
	slices.SortFunc(recs, compareRecords)
	recs = slices.Compact(recs)
	for i := 1; i < len(recs); i++ {
		if compareRecords(recs[i-1], recs[i]) >= 0 || compareRecords(recs[i], recs[i-1]) <= 0 {
			t.Fatalf("compareRecords does not order %+v and %+v", recs[i-1], recs[i])
		}
	}
	key := tgt.Service.Key()
	svcs := render(map[string]*entry{key: {target: tgt, records: recs}})
	if len(svcs) != 1 {
		t.Fatalf("render gave %d services, want 1", len(svcs))
	}
	svc := svcs[0]
	if err := svc.Validate(); err != nil {
		t.Errorf("target %s %s port %d with %d records: rendered service does not validate: %v", tgt.Type, tgt.Name, tgt.Port, len(recs), err)
	}
	if svc.Key() != key || svc.Source != Name || len(svc.Endpoints) != len(recs) {
		t.Errorf("rendered %s from %q with %d endpoints, want %s from %q with %d", svc.Key(), svc.Source, len(svc.Endpoints), key, Name, len(recs))
	}
}

// usableAddr is addrOf, checked: an address it returns is valid, not
// unspecified, and of its record's family.
func usableAddr(t *testing.T, rr mdns.RR) (netip.Addr, bool) {
	t.Helper()
	a, ok := addrOf(rr)
	if !ok {
		return a, false
	}
	_, isA := rr.(*mdns.A)
	if !a.IsValid() || a.IsUnspecified() || (isA && !a.Is4()) || (!isA && !a.Is6()) {
		t.Errorf("addrOf(%v) = %v, not a usable address of the record's family", rr, a)
	}
	return a, true
}

// fuzzTypes are the query types FuzzAnswer asks, by its kind argument.
var fuzzTypes = []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV}

func fuzzQuery(qtype uint16) *mdns.Msg {
	q := new(mdns.Msg)
	q.SetQuestion("_http._tcp.web.test.", qtype)
	q.RecursionDesired = true
	q.SetEdns0(ednsSize, false)
	return q
}

func mustRRs(f *testing.F, lines []string) []mdns.RR {
	f.Helper()
	out := make([]mdns.RR, 0, len(lines))
	for _, l := range lines {
		rr, err := mdns.NewRR(l)
		if err != nil || rr == nil {
			f.Fatalf("bad seed record %q: %v", l, err)
		}
		out = append(out, rr)
	}
	return out
}

package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// maxCNAMEHops bounds how many CNAMEs are followed for one name.
const maxCNAMEHops = 8

// ednsSize is the UDP payload size the queries advertise, as DNS Flag Day
// 2020 recommends; bigger answers come back truncated and are asked again
// over TCP.
const ednsSize = 1232

// Error is a failed resolution of one target: one of its queries got no
// usable answer from any server. The target keeps its last endpoints.
type Error struct {
	// Service is the target's service key, namespace/name.
	Service string
	// Name is the name whose query failed: the target's own, an SRV
	// target's, or a CNAME's.
	Name string
	// Type is the query type: SRV, A or AAAA.
	Type string
	// Servers holds what went wrong at each server, in the order tried.
	Servers []ServerError
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dns source: service %s: %s query for %s failed", e.Service, e.Type, e.Name)
	for i := range e.Servers {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(e.Servers[i].Error())
	}
	return b.String()
}

// Unwrap returns each server's error.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Servers))
	for i := range e.Servers {
		errs[i] = &e.Servers[i]
	}
	return errs
}

// ServerError is what went wrong at one server.
type ServerError struct {
	Server string // host:port
	Err    error
}

func (e *ServerError) Error() string { return "server " + e.Server + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ServerError) Unwrap() error { return e.Err }

// RcodeError is an answer whose response code is neither NOERROR nor
// NXDOMAIN: SERVFAIL, REFUSED, and so on.
type RcodeError struct {
	Rcode int
}

func (e *RcodeError) Error() string {
	name, ok := mdns.RcodeToString[e.Rcode]
	if !ok {
		name = fmt.Sprintf("RCODE%d", e.Rcode)
	}
	return "answered " + name
}

// errWrongQuestion is an answer to a question that was not asked.
var errWrongQuestion = errors.New("answer to another question")

// resolver asks a list of servers, in order, until one answers.
type resolver struct {
	servers []string
	timeout time.Duration
}

// ttlMin tracks the smallest TTL of the records a resolution used.
type ttlMin struct {
	ttl uint32
	ok  bool
}

func (t *ttlMin) add(ttl uint32) {
	if !t.ok || ttl < t.ttl {
		t.ttl, t.ok = ttl, true
	}
}

// negative adds the negative-caching TTL of an answer without records: the
// smaller of its SOA's TTL and minimum (RFC 2308).
func (t *ttlMin) negative(m *mdns.Msg) {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			t.add(min(soa.Hdr.Ttl, soa.Minttl))
		}
	}
}

// duration is the smallest TTL seen, or -1 if none.
func (t *ttlMin) duration() time.Duration {
	if !t.ok {
		return -1
	}
	return time.Duration(t.ttl) * time.Second
}

// resolve returns t's records, sorted and without duplicates, and the
// smallest TTL of the answers they came from (-1 when there was none).
// service names the target in errors.
func (r *resolver) resolve(ctx context.Context, service string, t Target) ([]record, time.Duration, error) {
	ttl := &ttlMin{}
	var recs []record
	switch t.Type {
	case SRV:
		rrs, extra, err := r.lookup(ctx, service, t.Name, mdns.TypeSRV, ttl)
		if err != nil {
			return nil, 0, err
		}
		glue := make(map[string][]mdns.RR)
		for _, rr := range extra {
			if _, ok := addrOf(rr); ok {
				host := mdns.CanonicalName(rr.Header().Name)
				glue[host] = append(glue[host], rr)
			}
		}
		hosts := make(map[string][]netip.Addr)
		for _, rr := range rrs {
			srv, ok := rr.(*mdns.SRV)
			// A target of "." means the service is decidedly not
			// available at this name (RFC 2782).
			if !ok || srv.Port == 0 || srv.Target == "" || srv.Target == "." {
				continue
			}
			host := mdns.CanonicalName(srv.Target)
			addrs, done := hosts[host]
			if !done {
				if g := glue[host]; len(g) > 0 {
					for _, rr := range g {
						a, _ := addrOf(rr)
						addrs = append(addrs, a)
						ttl.add(rr.Header().Ttl)
					}
				} else {
					addrs, err = r.addresses(ctx, service, host, []uint16{mdns.TypeA, mdns.TypeAAAA}, ttl)
					if err != nil {
						return nil, 0, err
					}
				}
				hosts[host] = addrs
			}
			for _, a := range addrs {
				recs = append(recs, record{addr: a, port: uint32(srv.Port), weight: uint32(srv.Weight), priority: uint32(srv.Priority)})
			}
		}
	case A, AAAA:
		qtypes := []uint16{mdns.TypeA, mdns.TypeAAAA}
		if t.Type == AAAA {
			qtypes = qtypes[1:]
		}
		addrs, err := r.addresses(ctx, service, t.Name, qtypes, ttl)
		if err != nil {
			return nil, 0, err
		}
		for _, a := range addrs {
			recs = append(recs, record{addr: a})
		}
	default:
		return nil, 0, fmt.Errorf("dns source: service %s: %w %q", service, ErrUnknownRecordType, t.Type)
	}
	slices.SortFunc(recs, compareRecords)
	recs = slices.Compact(recs)
	return recs, ttl.duration(), nil
}

// addresses returns the addresses of name for each of qtypes (A, AAAA).
func (r *resolver) addresses(ctx context.Context, service, name string, qtypes []uint16, ttl *ttlMin) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, qtype := range qtypes {
		rrs, _, err := r.lookup(ctx, service, name, qtype, ttl)
		if err != nil {
			return nil, err
		}
		for _, rr := range rrs {
			if a, ok := addrOf(rr); ok {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// addrOf returns the address of an A or AAAA record, if it holds a usable
// one.
func addrOf(rr mdns.RR) (netip.Addr, bool) {
	var a netip.Addr
	var ok bool
	switch v := rr.(type) {
	case *mdns.A:
		a, ok = netip.AddrFromSlice(v.A)
		a = a.Unmap()
		ok = ok && a.Is4()
	case *mdns.AAAA:
		a, ok = netip.AddrFromSlice(v.AAAA)
		ok = ok && a.Is6()
	}
	if !ok || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// lookup returns the qtype records of name, following CNAMEs, and the
// additional section of the answer they came from. NXDOMAIN and an empty
// answer are no records, not errors. The TTLs of every record used are
// added to ttl.
func (r *resolver) lookup(ctx context.Context, service, name string, qtype uint16, ttl *ttlMin) ([]mdns.RR, []mdns.RR, error) {
	name = mdns.CanonicalName(name)
	asked := make(map[string]bool)
	for range maxCNAMEHops {
		asked[name] = true
		resp, err := r.query(ctx, service, name, qtype)
		if err != nil {
			return nil, nil, err
		}
		final := chase(resp.Answer, name, ttl)
		var rrs []mdns.RR
		for _, rr := range resp.Answer {
			if h := rr.Header(); h.Rrtype == qtype && mdns.CanonicalName(h.Name) == final {
				rrs = append(rrs, rr)
				ttl.add(h.Ttl)
			}
		}
		if len(rrs) > 0 {
			return rrs, resp.Extra, nil
		}
		if final == name || resp.Rcode == mdns.RcodeNameError {
			ttl.negative(resp)
			return nil, resp.Extra, nil
		}
		// The answer ends at a CNAME it does not resolve: ask for the
		// name it points to.
		if asked[final] {
			return nil, nil, fmt.Errorf("dns source: service %s: CNAME loop at %s", service, final)
		}
		name = final
	}
	return nil, nil, fmt.Errorf("dns source: service %s: more than %d CNAMEs from %s", service, maxCNAMEHops, name)
}

// chase follows the CNAME chain from name through answer and returns the
// name it ends at, canonical; the TTL of every CNAME followed is added to
// ttl.
func chase(answer []mdns.RR, name string, ttl *ttlMin) string {
	cur := mdns.CanonicalName(name)
	for range maxCNAMEHops {
		next := ""
		for _, rr := range answer {
			if c, ok := rr.(*mdns.CNAME); ok && c.Target != "" && mdns.CanonicalName(c.Hdr.Name) == cur {
				next = mdns.CanonicalName(c.Target)
				ttl.add(c.Hdr.Ttl)
				break
			}
		}
		if next == "" || next == cur {
			break
		}
		cur = next
	}
	return cur
}

// query asks each server in turn for name's qtype records and returns the
// first usable answer: NOERROR or NXDOMAIN, to the question asked. A
// truncated UDP answer is asked again over TCP.
func (r *resolver) query(ctx context.Context, service, name string, qtype uint16) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.SetEdns0(ednsSize, false)
	fail := &Error{Service: service, Name: name, Type: mdns.TypeToString[qtype]}
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			fail.Servers = append(fail.Servers, ServerError{Server: server, Err: err})
			break
		}
		resp, err := r.exchange(ctx, q, server, "udp")
		if resp != nil && resp.Truncated {
			resp, err = r.exchange(ctx, q, server, "tcp")
		}
		if err == nil {
			err = check(q, resp)
		}
		if err == nil {
			return resp, nil
		}
		fail.Servers = append(fail.Servers, ServerError{Server: server, Err: err})
	}
	return nil, fail
}

// check accepts resp as the answer to q.
func check(q, resp *mdns.Msg) error {
	if resp == nil {
		return errors.New("no answer")
	}
	if resp.Rcode != mdns.RcodeSuccess && resp.Rcode != mdns.RcodeNameError {
		return &RcodeError{Rcode: resp.Rcode}
	}
	if len(resp.Question) > 0 {
		got, want := resp.Question[0], q.Question[0]
		if got.Qtype != want.Qtype || mdns.CanonicalName(got.Name) != mdns.CanonicalName(want.Name) {
			return fmt.Errorf("%w: %s %s", errWrongQuestion, mdns.TypeToString[got.Qtype], got.Name)
		}
	}
	return nil
}

// exchange sends q to server over network and reads the answer, within
// the timeout and until ctx is done.
func (r *resolver) exchange(ctx context.Context, q *mdns.Msg, server, network string) (*mdns.Msg, error) {
	// The client's Timeout bounds the dial, the write and the read.
	c := &mdns.Client{Net: network, Timeout: r.timeout}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The client honours a context's deadline but not its cancellation:
	// closing the connection unblocks the read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

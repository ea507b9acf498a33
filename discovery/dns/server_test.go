package dns

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	mdns "github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/tender-mesh/tender/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// question is what a zone answers: a canonical name and a type.
type question struct {
	name  string
	qtype uint16
}

// answer is the reply to one question.
type answer struct {
	answer, extra, ns []mdns.RR
}

// zone is an in-memory DNS server's data, which a test changes while the
// source runs. Every question it is asked is sent on queries.
type zone struct {
	t *testing.T

	mu      sync.Mutex
	records map[question]answer
	// silent drops every query unanswered, as a dead server does.
	silent bool
	// rcode, if set, is the answer to every query.
	rcode int
	// truncate holds names whose UDP answers are truncated and empty.
	truncate map[string]bool
	// raw holds names answered with these bytes instead of a message.
	raw map[string][]byte

	queries chan question
}

func newZone(t *testing.T) *zone {
	t.Helper()
	return &zone{
		t:        t,
		records:  make(map[question]answer),
		truncate: make(map[string]bool),
		raw:      make(map[string][]byte),
		queries:  make(chan question, 4096),
	}
}

// rrs parses zone-file lines, such as "a.test. 5 IN A 10.0.0.1".
func rrs(t *testing.T, lines ...string) []mdns.RR {
	t.Helper()
	out := make([]mdns.RR, 0, len(lines))
	for _, l := range lines {
		rr, err := mdns.NewRR(l)
		if err != nil || rr == nil {
			t.Fatalf("bad test record %q: %v", l, err)
		}
		out = append(out, rr)
	}
	return out
}

// set makes name's qtype answer the given records.
func (z *zone) set(name string, qtype uint16, a answer) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.records[question{mdns.CanonicalName(name), qtype}] = a
}

// setLines is set with the answer section written as zone-file lines.
func (z *zone) setLines(name string, qtype uint16, lines ...string) {
	z.t.Helper()
	z.set(name, qtype, answer{answer: rrs(z.t, lines...)})
}

func (z *zone) remove(name string, qtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.records, question{mdns.CanonicalName(name), qtype})
}

func (z *zone) setSilent(silent bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.silent = silent
}

func (z *zone) setRcode(rcode int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.rcode = rcode
}

func (z *zone) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := question{mdns.CanonicalName(req.Question[0].Name), req.Question[0].Qtype}
	select {
	case z.queries <- q:
	default:
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.silent {
		return
	}
	if raw, ok := z.raw[q.name]; ok {
		b := append([]byte(nil), raw...)
		if len(b) >= 2 {
			b[0], b[1] = byte(req.Id>>8), byte(req.Id)
		}
		_, _ = w.Write(b)
		return
	}
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if z.rcode != 0 {
		m.Rcode = z.rcode
		_ = w.WriteMsg(m)
		return
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && z.truncate[q.name] {
		m.Truncated = true
		_ = w.WriteMsg(m)
		return
	}
	if a, ok := z.records[q]; ok {
		m.Answer, m.Extra, m.Ns = a.answer, a.extra, a.ns
	} else {
		m.Rcode = mdns.RcodeNameError
		for k := range z.records {
			if k.name == q.name {
				m.Rcode = mdns.RcodeSuccess // the name exists: NODATA
			}
		}
	}
	_ = w.WriteMsg(m)
}

// serve runs a DNS server for z on 127.0.0.1 over UDP and, with tcp, over
// TCP on the same port, until the test ends. It returns "host:port".
func serve(t *testing.T, z *zone, tcp bool) string {
	t.Helper()
	var (
		pc  net.PacketConn
		lis net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if !tcp {
			break
		}
		lis, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close() // the port is taken over TCP; try another
	}
	if err != nil {
		t.Fatalf("no port free over both UDP and TCP: %v", err)
	}
	start := func(srv *mdns.Server) {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("dns server: %v", err)
		}
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Errorf("dns server shutdown: %v", err)
			}
			<-done
		})
	}
	start(&mdns.Server{PacketConn: pc, Handler: z})
	if lis != nil {
		start(&mdns.Server{Listener: lis, Handler: z})
	}
	return pc.LocalAddr().String()
}

// sink records what the source reports.
type sink struct {
	updates chan []discovery.Service
	errs    chan error
}

func newSink() *sink {
	return &sink{updates: make(chan []discovery.Service, 1024), errs: make(chan error, 1024)}
}

func (s *sink) Update(source string, svcs []discovery.Service) {
	if source != Name {
		panic("update from source " + source)
	}
	s.updates <- svcs
}

func (s *sink) ReportError(source string, err error) {
	if source != Name {
		panic("error from source " + source)
	}
	s.errs <- err
}

// run starts src with targets and stops it when the test ends.
func run(t *testing.T, src *Source, targets []Target) *sink {
	t.Helper()
	s := newSink()
	src.SetTargets(targets)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context being cancelled")
		}
	})
	return s
}

// testOptions are fast defaults for tests against servers.
func testOptions(servers ...string) Options {
	return Options{
		Servers:        servers,
		DefaultRefresh: time.Minute,
		MinRefresh:     20 * time.Millisecond,
		Timeout:        200 * time.Millisecond,
	}
}

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmpopts.EquateEmpty(),
}

// waitUpdate returns the first update for which check returns "", failing
// the test with the last mismatch if none comes within d.
func waitUpdate(t *testing.T, s *sink, d time.Duration, check func([]discovery.Service) string) []discovery.Service {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	mismatch := "no update at all"
	for {
		select {
		case got := <-s.updates:
			if mismatch = check(got); mismatch == "" {
				return got
			}
		case <-deadline.C:
			t.Fatalf("no wanted update within %s; last: %s", d, mismatch)
			return nil
		}
	}
}

// waitEqual waits for an update equal to want.
func waitEqual(t *testing.T, s *sink, d time.Duration, want []discovery.Service) []discovery.Service {
	t.Helper()
	return waitUpdate(t, s, d, func(got []discovery.Service) string {
		if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
			return "update (-want +got):\n" + diff
		}
		return ""
	})
}

// waitErr returns the next reported error, failing the test if none comes
// within d.
func waitErr(t *testing.T, s *sink, d time.Duration) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(d):
		t.Fatalf("no error reported within %s, want one", d)
		return nil
	}
}

// noErr fails the test if an error has been reported.
func noErr(t *testing.T, s *sink) {
	t.Helper()
	select {
	case err := <-s.errs:
		t.Errorf("got error %v, want none", err)
	default:
	}
}

// waitQueries waits until the zone has been asked n questions.
func waitQueries(t *testing.T, z *zone, n int, d time.Duration) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for i := range n {
		select {
		case <-z.queries:
		case <-deadline.C:
			t.Fatalf("got %d queries within %s, want %d", i, d, n)
		}
	}
}

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

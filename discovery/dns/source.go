package dns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tender-mesh/tender/discovery"
)

// Name is the source's name in the registry.
const Name = "dns"

// RecordType is how a target's endpoints are looked up.
type RecordType string

// The record types a target can resolve.
const (
	// SRV looks up SRV records; each names a host, port, weight and priority.
	SRV RecordType = "SRV"
	// A looks up both A and AAAA records.
	A RecordType = "A"
	// AAAA looks up AAAA records only.
	AAAA RecordType = "AAAA"
)

// ErrUnknownRecordType is returned by ParseRecordType; wrap it, branch with
// errors.Is.
var ErrUnknownRecordType = errors.New("unknown dns record type")

// ParseRecordType returns the RecordType named by s (case-sensitive, upper
// case); empty means A.
func ParseRecordType(s string) (RecordType, error) {
	switch t := RecordType(s); t {
	case "":
		return A, nil
	case SRV, A, AAAA:
		return t, nil
	}
	return "", fmt.Errorf("%w %q (want SRV, A or AAAA)", ErrUnknownRecordType, s)
}

// Target is one service whose endpoints come from DNS.
type Target struct {
	// Service is the template of the reported service: name, namespace,
	// ports, VIP and policy. Its Endpoints are ignored.
	Service discovery.Service
	// Name is the DNS name to resolve; it is made fully qualified, and no
	// search domain is applied.
	Name string
	Type RecordType
	// Port is, for A and AAAA, the port every endpoint serves all the
	// service ports on; 0 means each service port's own number, more
	// than 65535 is an error. SRV records carry their own port.
	Port uint32
	// Refresh is the longest time between two resolutions; 0 means
	// Options.DefaultRefresh.
	Refresh time.Duration
}

// Options configure a Source.
type Options struct {
	// Servers are the DNS servers, "host:port", tried in order for every
	// query. Empty means the nameservers of /etc/resolv.conf.
	Servers []string
	// DefaultRefresh is the Refresh of targets that set none; default 30 s.
	DefaultRefresh time.Duration
	// MinRefresh is the floor for TTL-driven re-resolution and the first
	// retry after a failure; default 1 s.
	MinRefresh time.Duration
	// Timeout bounds each query to one server; default 2 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Source resolves its targets and reports them as services.
type Source struct {
	opts Options

	mu      sync.Mutex // guards targets and set
	targets []Target
	// set reports whether SetTargets has been called.
	set  bool
	kick chan struct{}
}

// New returns a Source; call SetTargets and Run.
func New(opts Options) *Source {
	if opts.DefaultRefresh <= 0 {
		opts.DefaultRefresh = 30 * time.Second
	}
	if opts.MinRefresh <= 0 {
		opts.MinRefresh = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Servers = slices.Clone(opts.Servers)
	return &Source{opts: opts, kick: make(chan struct{}, 1)}
}

// Name implements discovery.Source.
func (s *Source) Name() string { return Name }

// SetTargets replaces the set of targets. It never blocks and may be called
// from any goroutine, before or during Run; Run applies the latest set.
func (s *Source) SetTargets(targets []Target) {
	clone := make([]Target, len(targets))
	for i, t := range targets {
		t.Service.Ports = slices.Clone(t.Service.Ports)
		t.Service.Endpoints = nil
		clone[i] = t
	}
	s.mu.Lock()
	s.targets, s.set = clone, true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// latest returns the targets of the last SetTargets, if there was one.
func (s *Source) latest() ([]Target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets, s.set
}

// entry is the state of one target, owned by the Run goroutine.
type entry struct {
	target  Target
	id      uint64 // of the resolver goroutine whose results count
	cancel  context.CancelFunc
	records []record
	failing bool
}

// result is what a resolver goroutine reports after each resolution.
type result struct {
	key     string
	id      uint64
	records []record
	err     error
}

// Run resolves the targets and reports them to sink until ctx is done. It
// reports nothing until the first SetTargets, then once straight away (the
// services, without endpoints until their names resolve), then on every
// change, and once more when the last failing target answers again, so
// that the sink clears the error it holds. It returns nil once ctx is done
// and every goroutine it started has stopped; a later Run starts again
// from the last targets set.
func (s *Source) Run(ctx context.Context, sink discovery.Sink) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	log := s.opts.Logger
	res := &resolver{servers: s.servers(), timeout: s.opts.Timeout}
	log.Debug("dns source starting", "servers", res.servers)

	results := make(chan result)
	entries := make(map[string]*entry)
	var (
		nextID    uint64
		published bool
		last      []discovery.Service
	)
	anyFailing := func() bool {
		for _, e := range entries {
			if e.failing {
				return true
			}
		}
		return false
	}
	// publish reports every service if anything changed since the last
	// report, or if force is set (to clear an error the sink holds).
	publish := func(force bool) {
		services := render(entries)
		if published && !force && reflect.DeepEqual(services, last) {
			return
		}
		published, last = true, services
		log.Debug("dns source update", "services", len(services))
		sink.Update(Name, slices.Clone(services))
	}
	start := func(key string, e *entry) {
		nextID++
		e.id = nextID
		wctx, wcancel := context.WithCancel(ctx)
		e.cancel = wcancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.resolveLoop(wctx, res, key, e.id, e.target, results)
		}()
	}
	apply := func(targets []Target) {
		wasFailing := anyFailing()
		want := make(map[string]Target, len(targets))
		var invalid []error
		for _, t := range targets {
			t, err := s.normalize(t)
			if err == nil {
				if _, dup := want[t.Service.Key()]; dup {
					err = fmt.Errorf("dns source: service %s listed twice; ignoring the target for %s %s", t.Service.Key(), t.Type, t.Name)
				}
			}
			if err != nil {
				log.Error("dns target ignored", "service", t.Service.Key(), "err", err)
				invalid = append(invalid, err)
				continue
			}
			want[t.Service.Key()] = t
		}
		for key, e := range entries {
			if _, ok := want[key]; !ok {
				e.cancel()
				delete(entries, key)
				log.Info("dns target removed", "service", key, "name", e.target.Name)
			}
		}
		for key, t := range want {
			old := entries[key]
			switch {
			case old == nil:
				e := &entry{target: t}
				entries[key] = e
				start(key, e)
				log.Info("dns target added", "service", key, "name", t.Name, "type", t.Type)
			case !reflect.DeepEqual(old.target, t):
				old.cancel()
				e := &entry{target: t}
				if old.target.Name == t.Name && old.target.Type == t.Type {
					// Same question, same answer: keep serving it while
					// the new resolver asks again.
					e.records, e.failing = old.records, old.failing
				}
				entries[key] = e
				start(key, e)
				log.Info("dns target changed", "service", key, "name", t.Name, "type", t.Type)
			}
		}
		publish(wasFailing && !anyFailing())
		// After the update, which would clear them in the registry.
		for _, err := range invalid {
			sink.ReportError(Name, err)
		}
	}

	if targets, ok := s.latest(); ok {
		apply(targets)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
			if targets, ok := s.latest(); ok {
				apply(targets) // a no-op when nothing changed
			}
		case r := <-results:
			e := entries[r.key]
			if e == nil || e.id != r.id {
				continue // from a resolver stopped since
			}
			if r.err != nil {
				e.failing = true
				log.Warn("dns resolution failed; keeping the last endpoints",
					"service", r.key, "name", e.target.Name, "type", e.target.Type, "endpoints", len(e.records), "err", r.err)
				sink.ReportError(Name, r.err)
				continue
			}
			wasFailing := anyFailing()
			e.failing = false
			e.records = r.records
			publish(wasFailing && !anyFailing())
		}
	}
}

// normalize fills in a target's defaults and checks what resolution needs.
func (s *Source) normalize(t Target) (Target, error) {
	t.Service.Endpoints = nil
	t.Service.Source = ""
	if t.Type == "" {
		t.Type = A
	}
	if _, err := ParseRecordType(string(t.Type)); err != nil {
		return t, fmt.Errorf("dns source: service %s: %w", t.Service.Key(), err)
	}
	if t.Name == "" {
		return t, fmt.Errorf("dns source: service %s: no dns name", t.Service.Key())
	}
	t.Name = mdns.Fqdn(t.Name)
	// Fqdn adds a dot; a name ending in a backslash escapes it, and is
	// no fully qualified name (found by FuzzTarget).
	if _, ok := mdns.IsDomainName(t.Name); !ok || !mdns.IsFqdn(t.Name) {
		return t, fmt.Errorf("dns source: service %s: %q is not a domain name", t.Service.Key(), t.Name)
	}
	if t.Type == SRV {
		t.Port = 0
	}
	if t.Port > 65535 {
		return t, fmt.Errorf("dns source: service %s: port %d out of range 0-65535", t.Service.Key(), t.Port)
	}
	if t.Refresh <= 0 {
		t.Refresh = s.opts.DefaultRefresh
	}
	return t, nil
}

// resolveLoop resolves t until ctx is done and sends every outcome to out.
func (s *Source) resolveLoop(ctx context.Context, res *resolver, key string, id uint64, t Target, out chan<- result) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var backoff time.Duration
	for {
		records, ttl, err := res.resolve(ctx, key, t)
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- result{key: key, id: id, records: records, err: err}:
		case <-ctx.Done():
			return
		}
		var wait time.Duration
		if err != nil {
			if backoff == 0 {
				backoff = min(s.opts.MinRefresh, t.Refresh)
			} else {
				backoff = min(2*backoff, t.Refresh)
			}
			wait = backoff
		} else {
			backoff = 0
			wait = t.Refresh
			if ttl >= 0 {
				wait = min(t.Refresh, max(s.opts.MinRefresh, ttl))
			}
		}
		s.opts.Logger.Debug("dns resolved", "service", key, "name", t.Name, "type", t.Type,
			"endpoints", len(records), "ok", err == nil, "next", wait)
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// resolvConf is read when Options.Servers is empty; tests point it
// elsewhere.
var resolvConf = "/etc/resolv.conf"

// servers returns the servers to query, each "host:port".
func (s *Source) servers() []string {
	var out []string
	for _, srv := range s.opts.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			srv = net.JoinHostPort(srv, "53")
		}
		out = append(out, srv)
	}
	if len(out) > 0 {
		return out
	}
	cfg, err := mdns.ClientConfigFromFile(resolvConf)
	if err == nil {
		for _, srv := range cfg.Servers {
			out = append(out, net.JoinHostPort(srv, cfg.Port))
		}
	}
	if len(out) == 0 {
		// As Go's own resolver does without a resolv.conf.
		out = []string{"127.0.0.1:53", "[::1]:53"}
		s.opts.Logger.Warn("no dns servers configured or in resolv.conf; using localhost", "resolvConf", resolvConf, "err", err, "servers", out)
	}
	return out
}

// render builds every target's service with its current endpoints, sorted
// by key.
func render(entries map[string]*entry) []discovery.Service {
	keys := slices.Sorted(maps.Keys(entries))
	services := make([]discovery.Service, 0, len(keys))
	for _, key := range keys {
		e := entries[key]
		svc := e.target.Service
		svc.Ports = slices.Clone(svc.Ports)
		svc.Source = Name
		for _, r := range e.records {
			svc.Endpoints = append(svc.Endpoints, endpoint(&e.target, r))
		}
		services = append(services, svc)
	}
	return services
}

// endpoint turns one resolved record into an endpoint of t's service.
func endpoint(t *Target, r record) discovery.Endpoint {
	ep := discovery.Endpoint{Address: r.addr, Health: discovery.HealthHealthy}
	port := t.Port
	if t.Type == SRV {
		port = r.port
		ep.Weight = max(r.weight, 1)
		ep.Priority = r.priority
	}
	if port != 0 && len(t.Service.Ports) > 0 {
		ep.Ports = make(map[string]uint32, len(t.Service.Ports))
		for _, p := range t.Service.Ports {
			ep.Ports[p.Name] = port
		}
	}
	return ep
}

// record is one resolved endpoint: an address and, for SRV, its port,
// weight and priority.
type record struct {
	addr     netip.Addr
	port     uint32
	weight   uint32
	priority uint32
}

func compareRecords(a, b record) int {
	return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port),
		cmp.Compare(a.priority, b.priority), cmp.Compare(a.weight, b.weight))
}

var _ discovery.Source = (*Source)(nil)

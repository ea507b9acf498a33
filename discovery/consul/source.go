package consul

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tender-mesh/tender/discovery"
)

// Name is the source's name in the registry.
const Name = "consul"

// Options configure the Consul source.
type Options struct {
	// Addr is the agent's HTTP address: host:port (http) or a URL with
	// scheme http or https.
	Addr string
	// Token is the ACL token; TokenFile, when set, is read before every
	// request instead, so a rotated token is picked up.
	Token     string
	TokenFile string
	// CAFile verifies an https agent; CertFile and KeyFile present a
	// client certificate.
	CAFile, CertFile, KeyFile string
	// Datacenter to query; empty is the agent's own.
	Datacenter string
	// Namespace is the tender namespace of services that do not name one;
	// default "default".
	Namespace string
	// ZoneMetaKey is the node meta key holding an instance's zone; default
	// "zone".
	ZoneMetaKey string
	// IncludeWarning also serves instances whose worst check is warning.
	IncludeWarning bool
	// Wait bounds one blocking query; default 1 minute.
	Wait   time.Duration
	Logger *slog.Logger
}

// Source watches a Consul catalog.
type Source struct {
	opts   Options
	base   *url.URL
	client *http.Client
}

// New checks the options and returns a Source.
func New(o Options) (*Source, error) {
	if o.Addr == "" {
		return nil, errors.New("consul: no agent address")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.ZoneMetaKey == "" {
		o.ZoneMetaKey = "zone"
	}
	if o.Wait <= 0 {
		o.Wait = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	addr := o.Addr
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	base, err := url.Parse(addr)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("consul: address %q: want host:port or an http(s) URL", o.Addr)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if base.Scheme == "https" || o.CAFile != "" || o.CertFile != "" {
		cfg, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	return &Source{opts: o, base: base, client: &http.Client{Transport: tr}}, nil
}

func tlsConfig(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("consul: CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("consul: CA file %s holds no PEM certificate", o.CAFile)
		}
	}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("consul: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Name implements discovery.Source.
func (s *Source) Name() string { return Name }

// healthEntry is one element of /v1/health/service/NAME.
type healthEntry struct {
	Node struct {
		Node       string
		Address    string
		Datacenter string
		Meta       map[string]string
	}
	Service struct {
		ID      string
		Service string
		Tags    []string
		Address string
		Port    int
		Meta    map[string]string
		Weights struct{ Passing, Warning int }
	}
	Checks []struct {
		CheckID string
		Status  string
	}
}

// event is what a watch reports to the Run loop: the catalog's service
// names (service == "") or one service's instances, or an error.
type event struct {
	service string
	gen     int
	names   map[string][]string
	entries []healthEntry
	err     error
}

// Run implements discovery.Source.
func (s *Source) Run(ctx context.Context, sink discovery.Sink) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	events := make(chan event)
	send := func(wctx context.Context, ev event) {
		select {
		case events <- ev:
		case <-wctx.Done():
		}
	}
	wg.Go(func() {
		watch(ctx, s, "/v1/catalog/services", func(names map[string][]string, err error) {
			send(ctx, event{names: names, err: err})
		})
	})

	type watched struct {
		gen    int
		cancel context.CancelFunc
	}
	services := map[string]watched{}
	entries := map[string][]healthEntry{}
	pending := map[string]bool{} // watched but not heard from yet
	failing := map[string]bool{}
	gen := 0
	catalogSynced := false
	var last []discovery.Service
	reported := false
	for {
		var ev event
		select {
		case <-ctx.Done():
			for _, w := range services {
				w.cancel()
			}
			return nil
		case ev = <-events:
		}
		if ev.service != "" && services[ev.service].gen != ev.gen {
			continue // from a watch already stopped
		}
		if ev.err != nil {
			if !failing[ev.service] {
				what := "the catalog"
				if ev.service != "" {
					what = "service " + ev.service
				}
				s.opts.Logger.Warn("consul unreachable; serving the last known endpoints", "watch", what, "err", ev.err)
			}
			failing[ev.service] = true
			sink.ReportError(Name, ev.err)
			continue
		}
		recovered := failing[ev.service]
		if recovered {
			delete(failing, ev.service)
			s.opts.Logger.Info("consul answers again", "service", ev.service)
		}
		if ev.service == "" {
			catalogSynced = true
			for name := range ev.names {
				if _, ok := services[name]; ok || name == "consul" {
					continue
				}
				gen++
				wctx, wcancel := context.WithCancel(ctx)
				services[name] = watched{gen: gen, cancel: wcancel}
				pending[name] = true
				g := gen
				wg.Go(func() {
					watch(wctx, s, "/v1/health/service/"+url.PathEscape(name), func(es []healthEntry, err error) {
						send(wctx, event{service: name, gen: g, entries: es, err: err})
					})
				})
			}
			for name, w := range services {
				if _, ok := ev.names[name]; !ok {
					w.cancel()
					delete(services, name)
					delete(entries, name)
					delete(pending, name)
					delete(failing, name)
				}
			}
		} else {
			entries[ev.service] = ev.entries
			delete(pending, ev.service)
		}
		if !catalogSynced || len(pending) > 0 {
			continue
		}
		out := s.build(entries)
		// Report on a change, the first time, and when recovering from an
		// error (so the registry clears it).
		if !reported || recovered || !reflect.DeepEqual(out, last) {
			sink.Update(Name, out)
			last, reported = out, true
		}
	}
}

// Backoff bounds between failed queries.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// watch long-polls path until ctx ends, calling report with each new
// result (and the first), or with each error.
func watch[T any](ctx context.Context, s *Source, path string, report func(T, error)) {
	var index uint64
	first, failed := true, false
	backoff := minBackoff
	for ctx.Err() == nil {
		var v T
		next, err := s.get(ctx, path, index, &v)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			report(v, err)
			failed = true
			t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		changed := next != index
		if next < index {
			// The agent restarted (or the leader changed) and its index
			// went backwards: start over, as Consul's docs say.
			next = 0
		}
		index = next
		if first || failed || changed {
			report(v, nil)
		}
		first, failed = false, false
	}
}

// get runs one blocking query and decodes its JSON answer into out.
func (s *Source) get(ctx context.Context, path string, index uint64, out any) (uint64, error) {
	u := *s.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	q := url.Values{}
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
		q.Set("wait", strconv.Itoa(int(s.opts.Wait.Seconds()))+"s")
	}
	if s.opts.Datacenter != "" {
		q.Set("dc", s.opts.Datacenter)
	}
	u.RawQuery = q.Encode()
	// Consul adds up to wait/16 of jitter to a blocking query.
	ctx, cancel := context.WithTimeout(ctx, s.opts.Wait+s.opts.Wait/16+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	token := s.opts.Token
	if s.opts.TokenFile != "" {
		b, err := os.ReadFile(s.opts.TokenFile)
		if err != nil {
			return 0, fmt.Errorf("consul: token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("consul: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("consul: GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return 0, fmt.Errorf("consul: GET %s: bad answer: %w", path, err)
	}
	idx, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if err != nil || idx == 0 {
		// Not a blocking endpoint, or a broken answer: never block on 0.
		idx = 1
	}
	return idx, nil
}

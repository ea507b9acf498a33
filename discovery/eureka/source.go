package eureka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/tender-mesh/tender/discovery"
)

// Name is the source's name in the registry.
const Name = "eureka"

// userAgent names tender in the servers' logs.
const userAgent = "tender-controlplane"

// errUnreachable is wrapped by errors of requests that got no answer.
var errUnreachable = errors.New("unreachable")

// maxAnswer bounds the body of one answer (a registry of some 100,000
// instances).
const maxAnswer = 256 << 20

// Options configure the Eureka source.
type Options struct {
	// URLs are the servers' service URLs (http://host:8761/eureka, or
	// .../eureka/v2 for Netflix's war), tried in order. A URL's user
	// information is its basic-auth credentials.
	URLs []string
	// UsernameFile and PasswordFile hold the basic-auth credentials of
	// URLs that carry none; both are read before every request, so
	// rotated credentials are picked up.
	UsernameFile, PasswordFile string
	// CAFile verifies https servers; CertFile and KeyFile present a
	// client certificate.
	CAFile, CertFile, KeyFile string
	// Refresh is the time between two fetches; default 30 s, as Eureka
	// clients do.
	Refresh time.Duration
	// Timeout bounds one request; default 10 s.
	Timeout time.Duration
	// Namespace is the tender namespace of instances whose metadata names
	// none; default "default".
	Namespace string
	// Region is the region of every endpoint (Eureka servers serve one).
	Region string
	Logger *slog.Logger
}

// server is one Eureka server.
type server struct {
	base *url.URL // without user information
	// user and password come from the URL; set says they did.
	user, password string
	set            bool
}

// String is the server's URL without credentials, for logs and errors.
func (sv *server) String() string { return sv.base.String() }

// Source reads a Eureka registry.
type Source struct {
	opts    Options
	servers []server
	client  *http.Client
}

// New checks the options and returns a Source.
func New(o Options) (*Source, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("eureka: no server URL")
	}
	if o.Refresh <= 0 {
		o.Refresh = 30 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if (o.UsernameFile == "") != (o.PasswordFile == "") {
		return nil, errors.New("eureka: a username file and a password file go together")
	}
	s := &Source{opts: o}
	secure := o.CAFile != "" || o.CertFile != ""
	for _, raw := range o.URLs {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("eureka: URL %q: want http(s)://HOST[:PORT]/PATH", redact(raw))
		}
		sv := server{base: u}
		if u.User != nil {
			sv.user = u.User.Username()
			sv.password, _ = u.User.Password()
			sv.set = true
			u.User = nil
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = ""
		secure = secure || u.Scheme == "https"
		s.servers = append(s.servers, sv)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if secure {
		cfg, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	s.client = &http.Client{Transport: tr, Timeout: o.Timeout,
		// A redirect would carry the credentials elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return s, nil
}

// redact hides the password of a URL that may not parse.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "xxxxx" + raw[i:]
	}
	return raw
}

func tlsConfig(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("eureka: CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("eureka: CA file %s holds no PEM certificate", o.CAFile)
		}
	}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("eureka: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Name implements discovery.Source.
func (s *Source) Name() string { return Name }

// maxBackoff bounds the wait between failed refreshes, in refresh
// intervals, as the Netflix client's cacheRefreshExecutorExponentialBackOffBound.
const maxBackoff = 10

// Run implements discovery.Source. It fetches the registry, then a delta
// every Refresh, and reports the services whenever they change.
func (s *Source) Run(ctx context.Context, sink discovery.Sink) error {
	f := &fetcher{s: s}
	var last []discovery.Service
	reported, failing := false, false
	wait := s.opts.Refresh
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		changed, err := f.refresh(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if !failing {
				s.opts.Logger.Warn("every eureka server failed; serving the last known registry", "err", err)
			}
			failing = true
			sink.ReportError(Name, err)
			wait = min(2*wait, maxBackoff*s.opts.Refresh)
			timer.Reset(wait)
			continue
		}
		recovered := failing
		if failing {
			s.opts.Logger.Info("eureka answers again", "server", f.servers[f.current].String())
			failing = false
		}
		wait = s.opts.Refresh
		timer.Reset(wait)
		if !changed && reported && !recovered {
			continue
		}
		out := s.build(f.table)
		// Report on a change, the first time, and when recovering from an
		// error (so the registry clears it).
		if !reported || recovered || !reflect.DeepEqual(out, last) {
			sink.Update(Name, out)
			last, reported = out, true
		}
	}
}

// fetcher holds the registry the source last read and the server it read
// it from. Only the Run goroutine uses it.
type fetcher struct {
	s *Source
	// servers aliases s.servers.
	servers []server
	current int
	// table is nil until a full fetch succeeded.
	table table
}

// refresh brings the table up to date: a delta from the current server
// (a full fetch when the table is new, or the delta's answer is bad or its
// hash does not match), else a full fetch from each following server in turn. The
// first server that answers becomes the current one; a server other than
// the one the table came from always starts with a full fetch, as each
// server's delta is its own. changed reports whether the table may have
// changed; err, when every server failed, joins their errors.
func (f *fetcher) refresh(ctx context.Context) (changed bool, err error) {
	if f.servers == nil {
		f.servers = f.s.servers
	}
	var errs []error
	for i := range f.servers {
		n := (f.current + i) % len(f.servers)
		sv := &f.servers[n]
		if i == 0 && f.table != nil {
			ok, changed, err := f.delta(ctx, sv)
			switch {
			case err == nil && ok:
				return changed, nil
			case ctx.Err() != nil:
				return false, ctx.Err()
			case errors.Is(err, errUnreachable):
				// The server is gone: on to the next.
				errs = append(errs, err)
				continue
			case err != nil:
				f.s.opts.Logger.Warn("eureka delta failed; fetching the full registry", "err", err)
			}
		}
		t, err := f.full(ctx, sv)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			errs = append(errs, err)
			if len(f.servers) > 1 {
				f.s.opts.Logger.Debug("eureka server failed; trying the next", "server", sv.String(), "err", err)
			}
			continue
		}
		if n != f.current {
			f.s.opts.Logger.Info("eureka: failed over", "from", f.servers[f.current].String(), "to", sv.String())
		}
		changed := f.table == nil || !reflect.DeepEqual(t, f.table)
		f.table, f.current = t, n
		return changed, nil
	}
	return false, errors.Join(errs...)
}

// delta applies sv's delta to the table. ok is false, with a nil error,
// when the delta's hash does not match the result (the caller fetches the
// full registry, as the Netflix client does).
func (f *fetcher) delta(ctx context.Context, sv *server) (ok, changed bool, err error) {
	d, err := f.s.get(ctx, sv, "/apps/delta")
	if err != nil {
		return false, false, err
	}
	next, changed, err := f.table.apply(d)
	if err != nil {
		return false, false, fmt.Errorf("eureka: GET %s/apps/delta: %w", sv, err)
	}
	if got := next.hash(); got != d.AppsHashCode {
		f.s.opts.Logger.Info("eureka delta does not reconcile; fetching the full registry", "server", sv.String(),
			"hash", got, "server_hash", d.AppsHashCode)
		return false, false, nil
	}
	f.table = next
	return true, changed, nil
}

// full fetches sv's whole registry.
func (f *fetcher) full(ctx context.Context, sv *server) (table, error) {
	apps, err := f.s.get(ctx, sv, "/apps")
	if err != nil {
		return nil, err
	}
	return newTable(apps), nil
}

// get fetches path from sv and decodes the answer. Every error names the
// server's URL.
func (s *Source) get(ctx context.Context, sv *server, path string) (*applications, error) {
	u := *sv.base
	u.Path += path
	where := u.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return nil, fmt.Errorf("eureka: GET %s: %w", where, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	user, password, ok, err := s.credentials(sv)
	if err != nil {
		return nil, err
	}
	if ok {
		req.SetBasicAuth(user, password)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // it repeats the URL
		}
		return nil, fmt.Errorf("eureka: GET %s: %w: %w", where, errUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("eureka: GET %s: %s: %s", where, resp.Status, strings.TrimSpace(string(b)))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("eureka: GET %s: %w", where, err)
	}
	if len(b) > maxAnswer {
		return nil, fmt.Errorf("eureka: GET %s: %w: over %d bytes", where, ErrMalformed, maxAnswer)
	}
	apps, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("eureka: GET %s: %w", where, err)
	}
	return apps, nil
}

// credentials are sv's basic-auth user and password: its URL's, else the
// files'.
func (s *Source) credentials(sv *server) (user, password string, ok bool, err error) {
	if sv.set {
		return sv.user, sv.password, true, nil
	}
	if s.opts.UsernameFile == "" {
		return "", "", false, nil
	}
	u, err := os.ReadFile(s.opts.UsernameFile)
	if err != nil {
		return "", "", false, fmt.Errorf("eureka: username file: %w", err)
	}
	p, err := os.ReadFile(s.opts.PasswordFile)
	if err != nil {
		return "", "", false, fmt.Errorf("eureka: password file: %w", err)
	}
	return strings.TrimSpace(string(u)), strings.TrimRight(string(p), "\r\n"), true, nil
}

var _ discovery.Source = (*Source)(nil)

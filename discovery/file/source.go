package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/dns"
)

// Name is the source's name in the registry.
const Name = "file"

// DNSTargets receives the services of the file whose endpoints come from
// DNS. *dns.Source implements it.
type DNSTargets interface {
	SetTargets([]dns.Target)
}

// Options configure a Source.
type Options struct {
	// Path is the mesh.yaml to read and watch, or a directory: every
	// *.yaml and *.yml file in it (not in its subdirectories, not hidden)
	// is read, as if they were one file.
	Path string
	// DNS gets the file's DNS-discovered services; nil refuses files that
	// declare any.
	DNS    DNSTargets
	Logger *slog.Logger
}

// Source reports the services of one mesh.yaml (or a directory of them)
// and follows its changes.
type Source struct {
	opts Options
	// files are the files last read, by path: a reload parses again only
	// those whose bytes changed.
	files map[string]parsedFile
}

// parsedFile is one file's bytes and what they parsed to (nil: they did
// not).
type parsedFile struct {
	data []byte
	cfg  *Config
	err  error
}

// New returns a Source for opts.Path.
func New(opts Options) *Source {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{opts: opts, files: map[string]parsedFile{}}
}

// Name implements discovery.Source.
func (s *Source) Name() string { return Name }

// paths lists the files Path names.
func (s *Source) paths() ([]string, error) {
	st, err := os.Stat(s.opts.Path)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	if !st.IsDir() {
		return []string{s.opts.Path}, nil
	}
	entries, err := os.ReadDir(s.opts.Path)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || (!strings.HasSuffix(name, ".yaml") && !strings.HasSuffix(name, ".yml")) {
			continue
		}
		p := filepath.Join(s.opts.Path, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() { // a ConfigMap's files are symbolic links
			continue
		}
		out = append(out, p)
	}
	return out, nil // sorted by ReadDir
}

// Load reads the files; changed is false when no file's bytes changed
// since the last Load (cfg is then nil). A file that does not parse makes
// the whole load fail.
func (s *Source) Load() (cfg *Config, changed bool, err error) {
	paths, err := s.paths()
	if err != nil {
		return nil, false, err
	}
	next := make(map[string]parsedFile, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, false, fmt.Errorf("file source: %w", err)
		}
		if old, ok := s.files[p]; ok && bytes.Equal(old.data, data) {
			next[p] = old
			continue
		}
		changed = true
		c, err := Parse(p, bytes.NewReader(data))
		next[p] = parsedFile{data: data, cfg: c, err: err}
	}
	for p := range s.files {
		if _, ok := next[p]; !ok {
			changed = true
		}
	}
	if !changed && len(s.files) > 0 {
		return nil, false, nil
	}
	s.files = next
	keys := make([]string, 0, len(next))
	for p := range next {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	cfgs := make([]*Config, 0, len(keys))
	for _, p := range keys {
		if f := next[p]; f.err != nil {
			return nil, true, f.err
		}
		cfgs = append(cfgs, next[p].cfg)
	}
	cfg, err = merge(keys, cfgs)
	if err != nil {
		return nil, true, err
	}
	if len(cfg.DNS) > 0 && s.opts.DNS == nil {
		return nil, true, &Error{File: s.opts.Path, Err: errors.New("dns services need the dns source, which is not running")}
	}
	return cfg, true, nil
}

// merge joins the configs of several files: a service, route or policy
// defined in two is refused, as it would be in one; so are mtls settings
// in two.
func merge(paths []string, cfgs []*Config) (*Config, error) {
	if len(cfgs) == 1 {
		return cfgs[0], nil
	}
	out := &Config{}
	services, routes, policies := map[string]string{}, map[string]string{}, map[string]string{}
	var mtlsFrom string
	twice := func(what, key, first, second string) error {
		return &Error{File: second, Err: fmt.Errorf("%s %s is defined in %s too", what, key, first)}
	}
	for i, c := range cfgs {
		p := paths[i]
		keys := make([]string, 0, len(c.Static)+len(c.DNS))
		for i := range c.Static {
			keys = append(keys, c.Static[i].Key())
		}
		for i := range c.DNS {
			keys = append(keys, c.DNS[i].Service.Key())
		}
		for _, k := range keys {
			if f, ok := services[k]; ok {
				return nil, twice("service", k, f, p)
			}
			services[k] = p
		}
		for _, r := range c.Routes {
			if f, ok := routes[r.Key()]; ok {
				return nil, twice("route", r.Key(), f, p)
			}
			routes[r.Key()] = p
		}
		for _, a := range c.Security.Authorization {
			key := a.Namespace + "/" + a.Name
			if f, ok := policies[key]; ok {
				return nil, twice("authorization policy", key, f, p)
			}
			policies[key] = p
		}
		if c.Security.MTLS != nil {
			if mtlsFrom != "" {
				return nil, &Error{File: p, Err: fmt.Errorf("mtls is set in %s too: set it in one file", mtlsFrom)}
			}
			mtlsFrom, out.Security.MTLS = p, c.Security.MTLS
		}
		out.Static = append(out.Static, c.Static...)
		out.DNS = append(out.DNS, c.DNS...)
		out.Routes = append(out.Routes, c.Routes...)
		out.Security.Authorization = append(out.Security.Authorization, c.Security.Authorization...)
	}
	return out, nil
}

// Run reports the files, then every valid change to them, until ctx is
// done. The first read must succeed: a control plane should not start on
// a broken file. Later broken versions are reported and skipped.
func (s *Source) Run(ctx context.Context, sink discovery.Sink) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file source: watch: %w", err)
	}
	defer w.Close() //nolint:errcheck // nothing to do on a failed close
	// Watch the directory, not the file: editors and Kubernetes ConfigMap
	// updates replace the file rather than writing into it.
	dir := filepath.Dir(s.opts.Path)
	if st, err := os.Stat(s.opts.Path); err == nil && st.IsDir() {
		dir = s.opts.Path
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("file source: watch %s: %w", dir, err)
	}
	cfg, _, err := s.Load()
	if err != nil {
		return err
	}
	s.apply(cfg, sink)
	// Writers truncate, then write: read only once events have settled, so
	// a half-written file is never served.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.opts.Logger.Warn("file watch error", "path", s.opts.Path, "err", err)
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			settle.Reset(settleDelay)
		case <-settle.C:
			cfg, changed, err := s.Load()
			switch {
			case errors.Is(err, os.ErrNotExist):
				continue // mid-replace; the create event follows
			case err != nil:
				s.opts.Logger.Error("mesh config rejected; still serving the last good one", "err", err)
				sink.ReportError(Name, err)
				continue
			case !changed:
				continue
			}
			s.opts.Logger.Info("mesh config reloaded", "path", s.opts.Path, "services", len(cfg.Static)+len(cfg.DNS))
			s.apply(cfg, sink)
		}
	}
}

// settleDelay is how long the files must be quiet before they are read.
const settleDelay = 50 * time.Millisecond

func (s *Source) apply(cfg *Config, sink discovery.Sink) {
	if s.opts.DNS != nil {
		s.opts.DNS.SetTargets(cfg.DNS)
	}
	if rs, ok := sink.(discovery.RouteSink); ok {
		rs.UpdateRoutes(Name, cfg.Routes)
	}
	if ss, ok := sink.(discovery.SecuritySink); ok {
		ss.UpdateSecurity(Name, cfg.Security)
	}
	sink.Update(Name, cfg.Static)
}

var _ discovery.Source = (*Source)(nil)

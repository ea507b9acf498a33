package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	// Path is the mesh.yaml to read and watch.
	Path string
	// DNS gets the file's DNS-discovered services; nil refuses files that
	// declare any.
	DNS    DNSTargets
	Logger *slog.Logger
}

// Source reports the services of one mesh.yaml and follows its changes.
type Source struct {
	opts Options
}

// New returns a Source for opts.Path.
func New(opts Options) *Source {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{opts: opts}
}

// Name implements discovery.Source.
func (s *Source) Name() string { return Name }

// Load reads and parses the file once.
func (s *Source) Load() (*Config, []byte, error) {
	data, err := os.ReadFile(s.opts.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("file source: %w", err)
	}
	cfg, err := Parse(s.opts.Path, bytes.NewReader(data))
	if err != nil {
		return nil, data, err
	}
	if len(cfg.DNS) > 0 && s.opts.DNS == nil {
		return nil, data, &Error{File: s.opts.Path, Err: errors.New("dns services need the dns source, which is not running")}
	}
	return cfg, data, nil
}

// Run reports the file, then every valid change to it, until ctx is done.
// The first read must succeed: a control plane should not start on a
// broken file. Later broken versions are reported and skipped.
func (s *Source) Run(ctx context.Context, sink discovery.Sink) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file source: watch: %w", err)
	}
	defer w.Close() //nolint:errcheck // nothing to do on a failed close
	// Watch the directory, not the file: editors and Kubernetes ConfigMap
	// updates replace the file rather than writing into it.
	if err := w.Add(filepath.Dir(s.opts.Path)); err != nil {
		return fmt.Errorf("file source: watch %s: %w", filepath.Dir(s.opts.Path), err)
	}
	cfg, last, err := s.Load()
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
			data, err := os.ReadFile(s.opts.Path)
			if errors.Is(err, os.ErrNotExist) {
				continue // mid-replace; the create event follows
			}
			if err == nil && bytes.Equal(data, last) {
				continue
			}
			cfg, data, err := s.Load()
			if err != nil {
				s.opts.Logger.Error("mesh config rejected; still serving the last good one", "err", err)
				sink.ReportError(Name, err)
				if data != nil {
					last = data
				}
				continue
			}
			last = data
			s.opts.Logger.Info("mesh config reloaded", "path", s.opts.Path, "services", len(cfg.Static)+len(cfg.DNS))
			s.apply(cfg, sink)
		}
	}
}

// settleDelay is how long the file must be quiet before it is read.
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

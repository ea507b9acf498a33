package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tender-mesh/tender/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records what the source reports.
type sink struct {
	updates chan []discovery.Service
	errs    chan error
}

func newSink() *sink {
	return &sink{updates: make(chan []discovery.Service, 16), errs: make(chan error, 16)}
}

func (s *sink) Update(_ string, svcs []discovery.Service) { s.updates <- svcs }
func (s *sink) ReportError(_ string, err error)           { s.errs <- err }

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("nothing reported within 5s")
		var zero T
		return zero
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write then rename, as editors and ConfigMap updates do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const oneService = "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints: [{address: 10.0.0.1}]\n"

func TestSourceFollowsChangesAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	writeFile(t, path, oneService)
	s := newSink()
	src := New(Options{Path: path})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	if got := recv(t, s.updates); len(got) != 1 || got[0].Endpoints[0].Address.String() != "10.0.0.1" {
		t.Fatalf("got %+v, want service a at 10.0.0.1", got)
	}

	// An in-place write is seen too.
	if err := os.WriteFile(path, []byte(strings.Replace(oneService, "10.0.0.1", "10.0.0.2", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, s.updates); got[0].Endpoints[0].Address.String() != "10.0.0.2" {
		t.Fatalf("got %+v, want the new address 10.0.0.2", got)
	}

	// A broken file is reported with its line; no update is sent.
	writeFile(t, path, "services:\n  - name: a\n    ports: [{port: 80}]\n    endpoints: [{address: 10.0.0.1, zone: [}]\n")
	err := recv(t, s.errs)
	var fe *Error
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "line 4") && fe.Line != 4 {
		t.Errorf("got error %v, want a *file.Error naming line 4", err)
	}
	select {
	case got := <-s.updates:
		t.Fatalf("got update %+v from a broken file", got)
	default:
	}

	// Fixing it resumes updates.
	writeFile(t, path, strings.Replace(oneService, "10.0.0.1", "10.0.0.3", 1))
	if got := recv(t, s.updates); got[0].Endpoints[0].Address.String() != "10.0.0.3" {
		t.Fatalf("got %+v, want 10.0.0.3 after the fix", got)
	}
}

func TestSourceRefusesBrokenFileAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, path, "services:\n  - name: a\n    ports: [{port: 99999}]\n")
	err := New(Options{Path: path}).Run(context.Background(), newSink())
	if err == nil || !strings.Contains(err.Error(), "mesh.yaml:3") {
		t.Errorf("got %v, want an error naming mesh.yaml:3", err)
	}
}

func TestSourceMissingFile(t *testing.T) {
	err := New(Options{Path: filepath.Join(t.TempDir(), "nope.yaml")}).Run(context.Background(), newSink())
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping os.ErrNotExist", err)
	}
}

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

// TestSourceDirectory: a directory's files are read as one; a change to
// one file is reported; a service defined in two files, or mtls set in
// two, is refused and the last good config stays.
func TestSourceDirectory(t *testing.T) {
	dir := t.TempDir()
	svc := func(name, addr string) string {
		return "services:\n  - name: " + name + "\n    ports: [{port: 80}]\n    endpoints: [{address: " + addr + "}]\n"
	}
	writeFile(t, filepath.Join(dir, "a.yaml"), svc("a", "10.0.0.1"))
	writeFile(t, filepath.Join(dir, "b.yml"), svc("b", "10.0.0.2"))
	writeFile(t, filepath.Join(dir, "notes.txt"), "not a mesh file")
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "not: valid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, done := newSink(), make(chan error, 1)
	go func() { done <- New(Options{Path: dir}).Run(ctx, s) }()
	defer func() { cancel(); <-done }()
	names := func(svcs []discovery.Service) string {
		var out []string
		for _, sv := range svcs {
			out = append(out, sv.Name+"="+sv.Endpoints[0].Address.String())
		}
		return strings.Join(out, " ")
	}
	if got := names(recv(t, s.updates)); got != "a=10.0.0.1 b=10.0.0.2" {
		t.Fatalf("got %q, want both files' services", got)
	}
	writeFile(t, filepath.Join(dir, "b.yml"), svc("b", "10.0.0.3"))
	if got := names(recv(t, s.updates)); got != "a=10.0.0.1 b=10.0.0.3" {
		t.Fatalf("after b.yml changed: got %q", got)
	}
	writeFile(t, filepath.Join(dir, "c.yaml"), svc("a", "10.0.0.9"))
	if err := recv(t, s.errs); !strings.Contains(err.Error(), "service default/a is defined in") {
		t.Fatalf("a service in two files: got %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	if got := names(recv(t, s.updates)); got != "a=10.0.0.1 b=10.0.0.3" {
		t.Fatalf("after the duplicate went: got %q", got)
	}
	mtls := "mtls: {mode: STRICT}\n"
	writeFile(t, filepath.Join(dir, "m1.yaml"), mtls)
	recv(t, s.updates)
	writeFile(t, filepath.Join(dir, "m2.yaml"), mtls)
	if err := recv(t, s.errs); !strings.Contains(err.Error(), "mtls is set in") {
		t.Fatalf("mtls in two files: got %v", err)
	}
}

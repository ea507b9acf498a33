package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// process is a binary under test; its output is kept and printed if the
// test fails.
type process struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex // guards out and lines
	out bytes.Buffer
	// lines receives each JSON log line, for waitLog.
	lines []map[string]any
}

// start runs bin from binDir with args; it is killed when the test ends.
func start(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, done: make(chan struct{})}
	path := bin
	if !filepath.IsAbs(bin) {
		path = binPath(bin)
	}
	p.cmd = exec.Command(path, args...)
	// Die with the test process, even when it is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go p.collect(pr)
	go func() {
		p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("--- %s output ---\n%s", name, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

func (p *process) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var m map[string]any
		json.Unmarshal(line, &m) //nolint:errcheck // non-JSON lines are kept as text only
		p.mu.Lock()
		p.out.Write(line)
		p.out.WriteByte('\n')
		if m != nil {
			p.lines = append(p.lines, m)
		}
		p.mu.Unlock()
	}
}

// waitLog waits for a JSON log line with msg and returns it.
func (p *process) waitLog(ctx context.Context, msg string) map[string]any {
	p.t.Helper()
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if l["msg"] == msg {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.t.Fatalf("%s: no log line %q", p.name, msg)
		case <-p.done:
			p.t.Fatalf("%s exited before logging %q", p.name, msg)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// output returns what the process printed so far.
func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// kill stops the process with SIGKILL and waits for it.
func (p *process) kill() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// waitHTTP polls url until it answers want or ctx ends.
func waitHTTP(ctx context.Context, t *testing.T, url string, want int) []byte {
	t.Helper()
	return pollHTTP(ctx, t, http.DefaultClient, url, want)
}

// pollHTTP polls url with c until it answers want or ctx ends.
func pollHTTP(ctx context.Context, t *testing.T, c *http.Client, url string, want int) []byte {
	t.Helper()
	var last string
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return body
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s: got %s, want %d", url, last, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

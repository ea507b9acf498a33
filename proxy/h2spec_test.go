package proxy

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestH2spec runs h2spec against the relay in front of net/http's
// HTTP/2 server and against that server directly: the relay fails no
// case the server passes.
func TestH2spec(t *testing.T) {
	bin, err := filepath.Abs("../.tools/h2spec")
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		t.Fatalf("h2spec not built (make tools): %v", err)
	}
	cl := upstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // the test's upstream
		io.WriteString(w, "ok")     //nolint:errcheck // the test's upstream
	}))
	up := cl.Endpoints[0].Addr.String()
	tp := startProxy(t, cl)
	run := func(addr string) (string, map[string]string) {
		host, port, _ := strings.Cut(addr, ":")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, _ := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "--timeout", "3").CombinedOutput()
		sm := h2specSummary.FindString(string(out))
		if sm == "" {
			t.Fatalf("h2spec against %s printed no summary:\n%s", addr, out)
		}
		failed := map[string]string{}
		lines := strings.Split(string(out), "\n")
		for i, l := range lines {
			if _, c, ok := strings.Cut(l, "× "); ok {
				failed[strings.TrimSpace(c)] = strings.Join(lines[i:min(i+4, len(lines))], "\n")
			}
		}
		return sm, failed
	}
	var extra map[string]string
	direct, directFailed := run(up)
	for round := range 3 {
		relayed, relayFailed := run(tp.addr)
		t.Logf("round %d: direct %s; through the relay %s", round+1, direct, relayed)
		extra = map[string]string{}
		for c, detail := range relayFailed {
			if _, ok := directFailed[c]; !ok {
				extra[c] = detail
			}
		}
		if len(extra) == 0 {
			return
		}
	}
	for _, detail := range extra {
		t.Errorf("fails through the relay only:\n%s", detail)
	}
}

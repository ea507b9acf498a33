package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const demoPrefix = "tender-demo-e2e"

// rootRules is the root namespace's iptables rules without counters.
func rootRules(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		keep = append(keep, regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(l, ""))
	}
	return strings.Join(keep, "\n")
}

func demoNamespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], demoPrefix+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// TestDemo runs `make demo`'s script for a short while: the lab comes up,
// the live summary shows traffic to all three greeters with 100% success,
// a second demo refuses to start beside it, and the teardown leaves no
// namespace, iptables rule or process behind.
func TestDemo(t *testing.T) {
	requireLab(t)
	tool(t, "jaeger")
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Fatal("prometheus not installed (Debian package prometheus)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rulesBefore := rootRules(t)
	env := append(os.Environ(), "DEMO_DURATION=25s", "DEMO_BIN="+binDir, "DEMO_PREFIX="+demoPrefix)

	demo := exec.CommandContext(ctx, "bash", "../hack/demo.sh")
	demo.Env = env
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A test that fails midway stops the demo as Ctrl-C would.
	demo.Cancel = func() error { return syscall.Kill(-demo.Process.Pid, syscall.SIGINT) }
	demo.WaitDelay = 30 * time.Second
	stdout, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	demo.Stderr = demo.Stdout
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	up := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "Ctrl-C stops the demo") {
				once.Do(func() { close(up) })
			}
		}
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
	select {
	case <-up:
	case <-done:
		demo.Wait() //nolint:errcheck // its output says why
		t.Fatalf("the demo ended before it was up:\n%s", output())
	case <-ctx.Done():
		t.Fatalf("the demo did not come up:\n%s", output())
	}

	// What runs in the lab now, to check it is gone afterwards.
	var pids []int
	for _, ns := range demoNamespaces(t) {
		b, _ := exec.Command("ip", "netns", "pids", ns).Output() //nolint:errcheck // an empty list is checked below
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) < 10 {
		t.Errorf("only %d processes in the demo's namespaces, want the control plane, Jaeger, Prometheus, apps and sidecars", len(pids))
	}

	second := exec.CommandContext(ctx, "bash", "../hack/demo.sh")
	second.Env = env
	b, err := second.CombinedOutput()
	if code := second.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(b), "another 'make demo' is running") {
		t.Errorf("a second demo: exit %d (%v), output %q; want it refused", code, err, b)
	}

	<-done
	if err := demo.Wait(); err != nil {
		t.Errorf("demo: %v\n%s", err, output())
	}
	text := output()
	// The last summary: every greeter pod and the frontend served, with
	// no failure.
	summaries := strings.Split(text, "inbound requests over the last")
	if len(summaries) < 3 {
		t.Fatalf("the demo printed %d summaries, want several:\n%s", len(summaries)-1, text)
	}
	last := summaries[len(summaries)-1]
	for _, pod := range []string{"greeter-1", "greeter-2", "greeter-3", "frontend"} {
		row := regexp.MustCompile(`(?m)^\S+\s+\S+\s+` + pod + `\s+([0-9.]+)\s+(\S+)`).FindStringSubmatch(last)
		if row == nil {
			t.Errorf("the last summary has no row for %s:\n%s", pod, last)
			continue
		}
		if rps, _ := strconv.ParseFloat(row[1], 64); rps <= 0 || row[2] != "100.00%" {
			t.Errorf("%s: %s rps, %s success; want traffic, all of it successful:\n%s", pod, row[1], row[2], last)
		}
	}
	if !regexp.MustCompile(`api/traces/[0-9a-f]{32}`).MatchString(text) {
		t.Errorf("the demo did not print an example trace id:\n%s", text)
	}

	if left := demoNamespaces(t); len(left) > 0 {
		t.Errorf("namespaces left after the demo: %v", left)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline") //nolint:errcheck // for the message only
			t.Errorf("process %d (%s) still runs after the demo", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	if after := rootRules(t); after != rulesBefore {
		t.Errorf("the root namespace's iptables rules changed:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
}

package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// tenderRules returns the TENDER lines of a pod's nat table.
func tenderRules(t *testing.T, p *pod, save string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", p.ns, save, "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", save, err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "TENDER") && strings.HasPrefix(l, "-A") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestSidecarInit: the rules land in the pod, running init twice leaves
// one set, --cleanup removes them, with both iptables backends.
func TestSidecarInit(t *testing.T) {
	l := newLab(t)
	p := l.addPod("init", 30)
	for _, mode := range []string{"nft", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			save := "iptables-" + mode + "-save"
			if _, err := exec.LookPath(save); err != nil {
				t.Skipf("%s not installed", save)
			}
			args := []string{"init", "--iptables-mode", mode, "--exclude-outbound-ports", "5432"}
			p.run(t, "sidecar", args...)
			first := tenderRules(t, p, save)
			if len(first) == 0 {
				t.Fatal("no TENDER rules after sidecar init")
			}
			p.run(t, "sidecar", args...)
			if again := tenderRules(t, p, save); len(again) != len(first) {
				t.Errorf("after a second init: %d rules, want %d (idempotent)", len(again), len(first))
			}
			joined := strings.Join(first, "\n")
			for _, want := range []string{"--to-ports 15001", "--to-ports 15006", "--uid-owner 1337", "--dport 5432 -j RETURN"} {
				if !strings.Contains(joined, want) {
					t.Errorf("rules lack %q:\n%s", want, joined)
				}
			}
			p.run(t, "sidecar", "init", "--iptables-mode", mode, "--cleanup")
			if left := tenderRules(t, p, save); len(left) != 0 {
				t.Errorf("after --cleanup %d rules are left: %v", len(left), left)
			}
		})
	}
}

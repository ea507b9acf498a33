package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Mode is the iptables backend of a node.
type Mode string

// Backends. ModeAuto picks the one the node already uses.
const (
	ModeAuto   Mode = "auto"
	ModeNFT    Mode = "nft"
	ModeLegacy Mode = "legacy"
)

// Runner runs a command with stdin and returns its combined output.
type Runner func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)

// ExecRunner runs real binaries.
func ExecRunner(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

// Tables applies and removes capture rules with one iptables backend.
type Tables struct {
	Mode Mode
	run  Runner
}

// DetectMode returns the backend the node uses: the one whose tables hold
// more rules (kube-proxy and the CNI will have written some), nft when
// neither does and it is installed.
func DetectMode(ctx context.Context, run Runner) (Mode, error) {
	count := func(bin string) (int, bool) {
		if _, err := exec.LookPath(bin); err != nil {
			return 0, false
		}
		out, err := run(ctx, nil, bin)
		if err != nil {
			return 0, true
		}
		return strings.Count(string(out), "\n-A "), true
	}
	nft, hasNFT := count("iptables-nft-save")
	legacy, hasLegacy := count("iptables-legacy-save")
	switch {
	case hasLegacy && legacy > nft:
		return ModeLegacy, nil
	case hasNFT:
		return ModeNFT, nil
	case hasLegacy:
		return ModeLegacy, nil
	}
	return "", errors.New("neither iptables-nft nor iptables-legacy is installed")
}

// NewTables returns Tables for mode; ModeAuto detects it.
func NewTables(ctx context.Context, mode Mode, run Runner) (*Tables, error) {
	if run == nil {
		run = ExecRunner
	}
	switch mode {
	case ModeNFT, ModeLegacy:
	case ModeAuto, "":
		m, err := DetectMode(ctx, run)
		if err != nil {
			return nil, err
		}
		mode = m
	default:
		return nil, fmt.Errorf("iptables mode %q: want auto, nft or legacy", mode)
	}
	return &Tables{Mode: mode, run: run}, nil
}

// binary returns e.g. iptables-nft, ip6tables-legacy-restore.
func (t *Tables) binary(ipv6 bool, tool string) string {
	name := "iptables"
	if ipv6 {
		name = "ip6tables"
	}
	name += "-" + string(t.Mode)
	if tool != "" {
		name += "-" + tool
	}
	return name
}

// Cleanup removes tender's chains and jumps; it is a no-op when there are
// none.
func (t *Tables) Cleanup(ctx context.Context, ipv6 bool) {
	for _, args := range CleanupCommands() {
		t.run(ctx, nil, t.binary(ipv6, ""), args...) //nolint:errcheck // "does not exist" is the expected outcome when clean
	}
}

var failedLine = regexp.MustCompile(`line (\d+) failed`)

// Apply replaces tender's rules with o's: running it twice leaves one set.
func (t *Tables) Apply(ctx context.Context, o CaptureOptions, ipv6 bool) error {
	if err := o.Validate(); err != nil {
		return err
	}
	t.Cleanup(ctx, ipv6)
	rules := Rules(o, ipv6)
	bin := t.binary(ipv6, "restore")
	out, err := t.run(ctx, []byte(rules), bin, "--noflush")
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if m := failedLine.FindStringSubmatch(msg); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= 1 {
				if lines := strings.Split(rules, "\n"); n <= len(lines) {
					return fmt.Errorf("%s: rule %q failed: %s: %w", bin, lines[n-1], msg, err)
				}
			}
		}
		return fmt.Errorf("%s: %s: %w", bin, msg, err)
	}
	return nil
}

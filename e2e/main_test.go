package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the binaries built for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tender-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	// The binaries under test carry the race detector too.
	sweepLabs()
	// The sidecar with the Makefile's SIDECAR_TAGS, as it ships.
	for _, args := range [][]string{
		{"../cmd/controlplane", "../cmd/tenderctl", "../examples/greeter/cmd/greeter", "../examples/greeter/cmd/greeter-client"},
		{"-tags", "disable_pgv,grpcnotrace", "../cmd/sidecar"},
	} {
		cmd := exec.Command("go", append([]string{"build", "-race", "-o", dir + string(filepath.Separator)}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build:", err)
			return 1
		}
	}
	// Goroutines from before the tests (the runtime's, klog's flush
	// daemon) are not leaks; any the tests leave behind are.
	before := goleak.IgnoreCurrent()
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(before); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
			return 1
		}
	}
	return code
}

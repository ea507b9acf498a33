package e2e

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeFlags returns the flags named in the first column of the first
// table after heading in the README.
func readmeFlags(t *testing.T, readme, heading string) []string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no heading %q", heading)
	}
	var flags []string
	inTable := false
	for _, line := range strings.Split(readme[i+len(heading)+2:], "\n") {
		if strings.HasPrefix(line, "#") {
			break
		}
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range regexp.MustCompile("`--([a-z0-9-]+)`").FindAllStringSubmatch(first, -1) {
			flags = append(flags, m[1])
		}
	}
	if len(flags) == 0 {
		t.Fatalf("README: no flag table under %q", heading)
	}
	slices.Sort(flags)
	return slices.Compact(flags)
}

// binaryFlags returns the flags a binary's -h lists.
func binaryFlags(t *testing.T, args ...string) []string {
	t.Helper()
	out, _ := exec.Command(binPath(args[0]), append(args[1:], "-h")...).CombinedOutput() //nolint:errcheck // -h may exit 0 or 2
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) == 0 {
		t.Fatalf("%s -h lists no flags:\n%s", strings.Join(args, " "), out)
	}
	slices.Sort(flags)
	return flags
}

// TestReadmeFlags keeps the README's flag tables true: every flag they
// name exists, and every flag the binaries have is in them.
func TestReadmeFlags(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, c := range []struct {
		heading string
		cmd     []string
	}{
		{"## Control plane flags", []string{"controlplane"}},
		{"### `sidecar init`", []string{"sidecar", "init"}},
		{"### `sidecar run`", []string{"sidecar", "run"}},
	} {
		documented := readmeFlags(t, readme, c.heading)
		actual := binaryFlags(t, c.cmd...)
		for _, f := range documented {
			if !slices.Contains(actual, f) {
				t.Errorf("README %q names --%s, which `%s` does not have", c.heading, f, strings.Join(c.cmd, " "))
			}
		}
		for _, f := range actual {
			if !slices.Contains(documented, f) {
				t.Errorf("`%s` has --%s, which the README table under %q does not document", strings.Join(c.cmd, " "), f, c.heading)
			}
		}
	}
}

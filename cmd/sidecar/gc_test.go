package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestGCSettings runs the test binary again with the environment a pod
// gives the sidecar and checks what the runtime collects with: GOGC and
// GOMEMLIMIT (the injector's, from the memory limit, in bytes) as set;
// otherwise GOGC=50, the sidecar's default, and no limit.
func TestGCSettings(t *testing.T) {
	if os.Getenv("TENDER_GC_HELPER") == "1" {
		applyGCDefault()
		s := currentGC()
		fmt.Printf("gogc=%d limit=%s\n", s.Percent, s.limitString())
		return
	}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "gogc=50 limit=none"},
		{[]string{"GOGC=200"}, "gogc=200 limit=none"},
		{[]string{"GOGC=off"}, "gogc=-1 limit=none"},
		{[]string{"GOMEMLIMIT=134217728"}, "gogc=50 limit=134217728"},
		{[]string{"GOMEMLIMIT=64MiB", "GOGC=50"}, "gogc=50 limit=67108864"},
	} {
		name := strings.Join(tc.env, ",")
		if name == "" {
			name = "unset"
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestGCSettings$")
			env := []string{"TENDER_GC_HELPER=1"}
			for _, e := range os.Environ() {
				if !strings.HasPrefix(e, "GOGC=") && !strings.HasPrefix(e, "GOMEMLIMIT=") {
					env = append(env, e)
				}
			}
			cmd.Env = append(env, tc.env...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			if got := strings.SplitN(string(out), "\n", 2)[0]; got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

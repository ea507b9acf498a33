package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The lab: pods are network namespaces joined by a bridge that lives in a
// namespace of its own. Nothing is connected to the root namespace, and
// pods only have routes to the lab subnet and the VIP range, so traffic
// cannot leave the lab. Everything is removed when the test ends.
const (
	labSubnet = "10.77.0"      // pods get labSubnet.N/24
	vipRange  = "10.96.0.0/16" // service VIPs, captured by the sidecars
	// IPv6: pods get labSubnet6N/64 too, VIPs come from vipRange6.
	labSubnet6 = "fd77::"
	vipRange6  = "fd96::/64"
)

// lab is one test's set of namespaces.
type lab struct {
	t      *testing.T
	prefix string
	bridge string
	pods   []*pod
}

// pod is one network namespace with an address.
type pod struct {
	lab  *lab
	name string
	ns   string
	ip   string
	ip6  string
	// nsPath, when set, is the namespace to enter instead of ns's (a
	// container's /proc/PID/ns/net in the one-node cluster).
	nsPath string
}

func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces, iptables)")
	}
	for _, bin := range []string{"ip", "iptables-nft-restore", "setpriv"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("the lab needs %s (make test installs it through .ci/run)", bin)
		}
	}
}

var labCount int

// newLab creates the bridge namespace; pods are added with addPod.
func newLab(t *testing.T) *lab {
	t.Helper()
	requireLab(t)
	labCount++
	l := &lab{t: t, prefix: fmt.Sprintf("tlab%d-%d", os.Getpid(), labCount)}
	l.bridge = l.prefix + "-br"
	t.Cleanup(l.teardown)
	l.ip("netns", "add", l.bridge)
	l.ip("-n", l.bridge, "link", "set", "lo", "up")
	l.ip("-n", l.bridge, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.bridge, "link", "set", "br0", "up")
	return l
}

func (l *lab) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addPod creates a pod namespace at labSubnet.n.
func (l *lab) addPod(name string, n int) *pod {
	l.t.Helper()
	p := &pod{lab: l, name: name, ns: l.prefix + "-" + name, ip: fmt.Sprintf("%s.%d", labSubnet, n), ip6: fmt.Sprintf("%s%x", labSubnet6, n)}
	l.pods = append(l.pods, p)
	veth := fmt.Sprintf("v%d", n)
	l.ip("netns", "add", p.ns)
	l.ip("-n", p.ns, "link", "set", "lo", "up")
	l.ip("-n", l.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
	l.ip("-n", l.bridge, "link", "set", veth, "master", "br0", "up")
	l.ip("-n", p.ns, "addr", "add", p.ip+"/24", "dev", "eth0")
	l.ip("-n", p.ns, "link", "set", "eth0", "up")
	l.ip("-n", p.ns, "route", "add", vipRange, "dev", "eth0")
	l.ip("-n", p.ns, "addr", "add", p.ip6+"/64", "dev", "eth0", "nodad")
	l.ip("-n", p.ns, "route", "add", vipRange6, "dev", "eth0")
	return p
}

func (l *lab) teardown() {
	for _, p := range l.pods {
		exec.Command("ip", "netns", "del", p.ns).Run() //nolint:errcheck // best effort; the next run's sweep retries
	}
	exec.Command("ip", "netns", "del", l.bridge).Run() //nolint:errcheck // best effort
}

// sweepLabs removes namespaces (and one-node clusters) left by earlier
// runs whose process is gone.
func sweepLabs() {
	sweepClusters()
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		var pid, n int
		if _, err := fmt.Sscanf(e.Name(), "tlab%d-%d", &pid, &n); err != nil {
			continue
		}
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		exec.Command("ip", "netns", "del", e.Name()).Run() //nolint:errcheck // best effort
	}
}

// start runs a binary from binDir inside the pod, as root.
func (p *pod) start(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	return p.startPath(t, name, binPath(bin), args...)
}

// startPath runs the program at path inside the pod, as root.
func (p *pod) startPath(t *testing.T, name, path string, args ...string) *process {
	t.Helper()
	return start(t, p.name+"/"+name, "/usr/sbin/ip", append([]string{"netns", "exec", p.ns, path}, args...)...)
}

// startAs runs a binary inside the pod as uid.
func (p *pod) startAs(t *testing.T, uid int, name, bin string, args ...string) *process {
	t.Helper()
	return p.startPathAs(t, uid, name, binPath(bin), args...)
}

// startPathAs runs the program at path inside the pod as uid.
func (p *pod) startPathAs(t *testing.T, uid int, name, path string, args ...string) *process {
	t.Helper()
	id := fmt.Sprint(uid)
	return start(t, p.name+"/"+name, "/usr/sbin/ip", append([]string{"netns", "exec", p.ns,
		"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", "--pdeathsig", "SIGKILL", path}, args...)...)
}

// run runs a binary inside the pod to completion.
func (p *pod) run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", p.ns, binPath(bin)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s %s: %v\n%s", p.name, bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dial opens a TCP connection from inside the pod: the socket is created
// in the pod's namespace, so the pod's iptables rules apply to it as to an
// app's.
func (p *pod) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	path := p.nsPath
	if path == "" {
		path = "/run/netns/" + p.ns
	}
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", p.ns, err)
	}
	var d net.Dialer
	c, dialErr := d.DialContext(ctx, network, addr)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: Go ends it with this goroutine instead
		// of reusing a thread in the wrong namespace.
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("restore network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return c, dialErr
}

// binPath is a binary built for this run.
func binPath(bin string) string { return filepath.Join(binDir, bin) }

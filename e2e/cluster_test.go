package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The one-node cluster: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd (with runc and the CNI bridge plugin),
// kubelet, kube-proxy and CoreDNS, every one the real component, run in a
// network namespace of its own (the node) and a mount namespace of their
// own (what kubelet and containerd mount goes when the test ends). Pods
// get 10.244.0.0/24 on a CNI bridge inside the node; the node has one
// address, nodeIP, on a link to nowhere: nothing leaves it. Images come
// from `make images`, imported into containerd; nothing is pulled.
const (
	nodeIP    = "10.79.0.1"
	podSubnet = "10.244.0.0/24"
	nodeName  = "tender-node"
	// imageTag is the chart's appVersion, what make images tags with.
	imageTag = "0.1.0"
)

// kubeletTunables are the kernel settings kubelet checks (and, without
// protectKernelDefaults, sets) in /proc/sys, with the values it wants.
var kubeletTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

type cluster struct {
	*apiServer
	node   *pod   // the node's network namespace, for dialing into it
	dir    string // every file of the cluster
	holder *process
	cgroup string // kubelet's cgroup root, under every hierarchy
	sock   string // containerd's socket
	// madeDirs are host directories the mount namespace needed that did
	// not exist (removed again, empty, at the end).
	madeDirs []string
}

// clusterTools are what the cluster runs, from .tools (make tools) and
// Debian's packages.
func clusterTools(t *testing.T) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, n := range []string{"kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl", "coredns"} {
		paths[n] = tool(t, n)
	}
	for _, n := range []string{"etcd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare"} {
		p, err := exec.LookPath(n)
		if err != nil {
			t.Fatalf("the one-node cluster needs %s (Debian packages etcd-server, containerd, runc, util-linux; .ci/run installs them)", n)
		}
		paths[n] = p
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatal("the one-node cluster needs the CNI plugins in /usr/lib/cni (Debian package containernetworking-plugins)")
	}
	return paths
}

// clusterImages are make images' archives.
func clusterImages(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range []string{"controlplane", "sidecar", "greeter", "pause"} {
		p, err := filepath.Abs(filepath.Join("..", "bin", "images", n+".tar"))
		if err == nil {
			_, err = os.Stat(p)
		}
		if err != nil {
			t.Fatalf("image %s not built (make images): %v", n, err)
		}
		out = append(out, p)
	}
	return out
}

// newCluster starts the one-node cluster and waits for the node to be
// Ready, its DNS to answer and kube-proxy to serve the API server's VIP.
func newCluster(t *testing.T, ctx context.Context) *cluster {
	t.Helper()
	requireLab(t)
	bins := clusterTools(t)
	images := clusterImages(t)
	// Short: containerd's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", fmt.Sprintf("tkc-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	labCount++
	prefix := fmt.Sprintf("tlab%d-%d", os.Getpid(), labCount)
	c := &cluster{dir: dir, cgroup: "/" + prefix, sock: filepath.Join(dir, "containerd.sock")}
	c.node = &pod{name: "node", ns: prefix + "-node", ip: nodeIP}
	t.Cleanup(func() { c.teardown(t) })

	// The node: one address on a veth pair whose peer stays inside, a
	// default route into it (so kubelet and kube-proxy find their
	// address), forwarding for the pods, bridged pod traffic through
	// iptables (kube-proxy's rules for pods on the one bridge).
	ns := c.node.ns
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "node0", "type", "veth", "peer", "name", "node0p"},
		{"-n", ns, "addr", "add", nodeIP + "/24", "dev", "node0"},
		{"-n", ns, "link", "set", "node0p", "up"},
		{"-n", ns, "link", "set", "node0", "up"},
		{"-n", ns, "route", "add", "default", "dev", "node0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", s).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s in the node: %v: %s", s, err, out)
		}
	}
	c.makeCgroups(t)

	// The mount namespace: private, kubelet and containerd share it. What
	// they write to fixed host paths lands in tmpfs of its own there: the
	// pods' network namespaces (/run/netns), the shims' sockets
	// (/run/containerd), kubelet's log links (/var/log/containers) and
	// plugin directory. kubelet's kernel tunables (not namespaced: a
	// kernel that panics on an oops, overcommit) are files of the test's
	// own, holding what kubelet wants, so protectKernelDefaults finds them
	// set and writes nothing.
	script := []string{"mount --make-rshared /"}
	for _, d := range []string{"/run/netns", "/run/containerd", "/var/log/containers", "/usr/libexec/kubernetes"} {
		if _, err := os.Stat(d); err != nil {
			c.madeDirs = append(c.madeDirs, d)
		}
		script = append(script, "mkdir -p "+d, "mount -t tmpfs tmpfs "+d, "mount --make-rshared "+d)
	}
	for name, v := range kubeletTunables {
		f := filepath.Join(dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, f, v+"\n")
		script = append(script, "mount --bind "+f+" /proc/sys/"+name)
	}
	ready := filepath.Join(dir, "mounts-ready")
	script = append(script, "touch "+ready, "exec sleep infinity")
	c.holder = start(t, "node mounts", bins["nsenter"], "--net=/run/netns/"+ns, bins["unshare"], "-m", "--propagation", "private",
		"sh", "-ec", strings.Join(script, "\n"))
	waitUntil(ctx, t, "node mount namespace", func() bool { _, err := os.Stat(ready); return err == nil })

	// etcd and the API server, on the node's address.
	c.run(t, "etcd", bins["etcd"], "--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", "http://127.0.0.1:2379",
		"--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--initial-cluster", "default=http://127.0.0.1:2380")
	token := apiServerSecrets(t, dir)
	c.run(t, "kube-apiserver", bins["kube-apiserver"], "--etcd-servers", "http://127.0.0.1:2379", "--bind-address", "0.0.0.0",
		"--advertise-address", nodeIP, "--secure-port", "6443", "--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"), "--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "Node,RBAC", "--service-cluster-ip-range", "10.96.0.0/16",
		"--kubelet-preferred-address-types", "InternalIP")
	c.apiServer = &apiServer{dir: dir, kubeconfig: filepath.Join(dir, "kubeconfig"), token: token, netns: ns}
	c.kubeconfigText = fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: tender-node, cluster: {server: "https://%s:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %s}}]
contexts: [{name: tender-node, context: {cluster: tender-node, user: admin}}]
current-context: tender-node
`, nodeIP, token)
	writeFile(t, c.kubeconfig, c.kubeconfigText)
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Dial = c.node.dial
	c.rest = rc
	if c.client, err = kubernetes.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	waitUntil(ctx, t, "kube-apiserver ready", func() bool {
		body, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok"
	})

	// The controllers (service accounts and their tokens, the root CA
	// ConfigMap every projected token volume reads, Deployments,
	// EndpointSlices) and the scheduler.
	c.run(t, "kube-controller-manager", bins["kube-controller-manager"], "--kubeconfig", c.kubeconfig, "--leader-elect=false",
		"--service-account-private-key-file", filepath.Join(dir, "sa.key"), "--root-ca-file", filepath.Join(dir, "certs", "apiserver.crt"),
		"--use-service-account-credentials=false", "--bind-address", "127.0.0.1", "--secure-port", "10257")
	c.run(t, "kube-scheduler", bins["kube-scheduler"], "--kubeconfig", c.kubeconfig, "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", "10259")

	// containerd: its own root, state and socket; runc's state beside it;
	// the pause image built here; the CNI bridge. restrict_oom_score_adj:
	// this machine does not give root CAP_SYS_RESOURCE, so the scores
	// kubelet asks for (-997 and below) would fail every container;
	// containerd caps them at its own.
	writeFile(t, filepath.Join(dir, "containerd.toml"), fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "ghcr.io/tender-mesh/pause:%[4]s"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[5]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = %[6]q
`, filepath.Join(dir, "containerd"), filepath.Join(dir, "containerd-state"), c.sock, imageTag,
		filepath.Join(dir, "cni"), filepath.Join(dir, "runc")))
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "cni", "10-tender-node.conflist"), fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "tender-node", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
`, podSubnet, filepath.Join(dir, "cni-ipam")))
	c.run(t, "containerd", bins["containerd"], "--config", filepath.Join(dir, "containerd.toml"))
	waitUntil(ctx, t, "containerd socket", func() bool { _, err := os.Stat(c.sock); return err == nil })
	for _, img := range images {
		if out, err := exec.CommandContext(ctx, bins["ctr"], "--address", c.sock, "-n", "k8s.io", "images", "import", img).CombinedOutput(); err != nil {
			t.Fatalf("ctr images import %s: %v: %s", img, err, out)
		}
	}

	// kubelet, with what this machine takes (see README "Kubernetes e2e"):
	// cgroup v1 (failCgroupV1: false), cgroupfs under a root of its own,
	// no swap check, its own oom_score_adj left alone, no disk eviction
	// (the disk is shared), logs and state in dir.
	writeFile(t, filepath.Join(dir, "resolv.conf"), "nameserver "+nodeIP+"\n")
	writeFile(t, filepath.Join(dir, "kubelet.yaml"), fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%[1]s
cgroupDriver: cgroupfs
cgroupRoot: %[2]s
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
podLogsDir: %[3]s
resolvConf: %[4]s
clusterDNS: [%[5]s]
clusterDomain: cluster.local
address: %[5]s
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "1Mi", nodefs.available: "0%%", imagefs.available: "0%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
enforceNodeAllocatable: []
protectKernelDefaults: true
localStorageCapacityIsolation: false
syncFrequency: 10s
`, c.sock, c.cgroup, filepath.Join(dir, "pod-logs"), filepath.Join(dir, "resolv.conf"), nodeIP))
	c.run(t, "kubelet", bins["kubelet"], "--config", filepath.Join(dir, "kubelet.yaml"), "--kubeconfig", c.kubeconfig,
		"--root-dir", filepath.Join(dir, "kubelet"), "--hostname-override", nodeName, "--node-ip", nodeIP)

	// kube-proxy (the VIPs of the API server, the control plane and DNS)
	// and CoreDNS on the node's address.
	c.run(t, "kube-proxy", bins["kube-proxy"], "--kubeconfig", c.kubeconfig, "--hostname-override", nodeName,
		"--proxy-mode", "iptables", "--cluster-cidr", podSubnet, "--conntrack-max-per-core", "0",
		"--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0",
		"--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256", "--nodeport-addresses", "primary")
	writeFile(t, filepath.Join(dir, "Corefile"), fmt.Sprintf(`.:53 {
    errors
    health 127.0.0.1:8081
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
`, c.kubeconfig))
	c.run(t, "coredns", bins["coredns"], "-conf", filepath.Join(dir, "Corefile"))

	waitUntil(ctx, t, "node Ready", func() bool {
		n, err := c.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	})
	return c
}

// run starts a component inside the node (its network and mount
// namespaces).
func (c *cluster) run(t *testing.T, name, path string, args ...string) *process {
	t.Helper()
	pid := strconv.Itoa(c.holder.cmd.Process.Pid)
	return start(t, name, "/usr/bin/nsenter", append([]string{"--mount=/proc/" + pid + "/ns/mnt", "--net=/proc/" + pid + "/ns/net", path}, args...)...)
}

// kubectl runs kubectl against the cluster and returns its output.
func (c *cluster) kubectl(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.command(ctx, tool(t, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hierarchies are the cgroup directories kubelet's root goes under: the
// v1 hierarchies, or the one v2 tree.
func hierarchies() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	var out []string
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (c *cluster) makeCgroups(t *testing.T) {
	t.Helper()
	for _, h := range hierarchies() {
		if err := os.MkdirAll(h+c.cgroup, 0o755); err != nil {
			t.Fatalf("cgroup %s: %v", h+c.cgroup, err)
		}
	}
}

// teardown kills what the components leave running (the containers and
// their shims, which containerd detaches), removes the cgroups, the
// node's namespace and the files. The components themselves are killed
// by their own cleanups, which run before this one.
func (c *cluster) teardown(t *testing.T) {
	t.Helper()
	for range 3 {
		for _, h := range hierarchies() {
			killCgroup(h + c.cgroup)
		}
		killMatching(c.sock)
		time.Sleep(100 * time.Millisecond)
	}
	if c.holder != nil {
		c.holder.kill()
	}
	for _, h := range hierarchies() {
		removeCgroup(h + c.cgroup)
	}
	exec.Command("ip", "netns", "del", c.node.ns).Run() //nolint:errcheck // best effort; the next run's sweep retries
	for _, d := range c.madeDirs {
		os.Remove(d) //nolint:errcheck // only if empty; best effort
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Logf("cluster files: %v", err)
	}
}

// sweepClusters removes what clusters of earlier runs whose process is
// gone left: their containers (by cgroup), containerd shims (by the
// socket path they name) and cgroups. Their namespaces go with the lab's.
func sweepClusters() {
	dead := func(name, format string) bool {
		var pid, n int
		if _, err := fmt.Sscanf(name, format, &pid, &n); err != nil {
			return false
		}
		return pid != os.Getpid() && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}
	for _, h := range hierarchies() {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() && dead(e.Name(), "tlab%d-%d") {
				killCgroup(filepath.Join(h, e.Name()))
			}
		}
	}
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		if e.IsDir() && dead(e.Name(), "tkc-%d-%d") {
			killMatching(filepath.Join(os.TempDir(), e.Name()) + "/")
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name())) //nolint:errcheck // best effort
		}
	}
	time.Sleep(100 * time.Millisecond)
	for _, h := range hierarchies() {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() && dead(e.Name(), "tlab%d-%d") {
				removeCgroup(filepath.Join(h, e.Name()))
			}
		}
	}
}

// killCgroup kills every process in a cgroup tree.
func killCgroup(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // best effort
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // it may be gone
			}
		}
		return nil
	})
}

// removeCgroup removes a cgroup tree, leaves first.
func removeCgroup(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // best effort
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) //nolint:errcheck // best effort
	}
}

// killMatching kills the processes whose command line contains s (the
// containerd shims of this cluster name its socket).
func killMatching(s string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // it may be gone
		}
	}
}

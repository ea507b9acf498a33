// Command dataplane compares, in one run and in the lab, a request's cost
// through tender with the physical limit and with nginx and HAProxy: a
// client pod runs fortio against a server pod directly, through one proxy
// (tender's sidecar capturing the client's traffic, nginx, HAProxy, each
// with one worker and keep-alive to the server), and through the mesh
// path (client sidecar → server sidecar), for HTTP/1.1 with a 1 KiB body,
// gRPC unary and TCP echo, at a fixed 1,000 QPS (latency) and flat out
// (throughput). It writes a markdown table with ratios.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tender-mesh/tender/bench/internal/procstat"
)

const (
	subnet   = "10.77.0"
	serverIP = subnet + ".11" // fortio server, no sidecar
	meshIP   = subnet + ".12" // fortio server with a sidecar
	proxyIP  = subnet + ".5"  // nginx and HAProxy
	cpIP     = subnet + ".2"
	clientIP = subnet + ".20"
	vip      = "10.96.0.10" // the plain server through the client's sidecar
	meshVIP  = "10.96.0.11" // the meshed server
	mtlsVIP  = "10.96.0.12" // the meshed server, over mutual TLS
	proxyUID = "1337"
)

type config struct {
	bin, fortio, out string
	profile          string
	sidecarEnv       []string // extra NAME=VALUE for the sidecars
	duration         time.Duration
	prefix           string
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory of tender's binaries")
	flag.StringVar(&c.fortio, "fortio", ".tools/fortio", "fortio binary")
	flag.StringVar(&c.out, "out", "bench/RESULTS.md", "markdown file to write")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of each load run")
	flag.StringVar(&c.prefix, "prefix", "tbench", "lab namespace prefix")
	flag.Func("sidecar-env", "NAME=VALUE for the sidecars' environment (repeatable), e.g. GOGC=50 to measure a GC setting", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("%q is not NAME=VALUE", v)
		}
		c.sidecarEnv = append(c.sidecarEnv, v)
		return nil
	})
	flag.StringVar(&c.profile, "profile", "", "directory to write CPU profiles of the client's sidecar during its flat-out runs (pprof)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l := &lab{prefix: c.prefix}
	err := run(ctx, c, l)
	l.teardown()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// lab is a set of network namespaces on one bridge, as in the e2e tests.
type lab struct {
	prefix string
	pods   []string
	procs  []*exec.Cmd
}

func (l *lab) ns(pod string) string { return l.prefix + "-" + pod }

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (l *lab) up(pods map[string]int) error {
	br := l.ns("br")
	l.pods = append(l.pods, "br")
	for _, c := range [][]string{{"ip", "netns", "add", br}, {"ip", "-n", br, "link", "set", "lo", "up"},
		{"ip", "-n", br, "link", "add", "br0", "type", "bridge"}, {"ip", "-n", br, "link", "set", "br0", "up"}} {
		if err := sh(c...); err != nil {
			return err
		}
	}
	for name, n := range pods {
		ns := l.ns(name)
		l.pods = append(l.pods, name)
		veth := fmt.Sprintf("v%d", n)
		for _, c := range [][]string{
			{"ip", "netns", "add", ns}, {"ip", "-n", ns, "link", "set", "lo", "up"},
			{"ip", "-n", br, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"ip", "-n", br, "link", "set", veth, "master", "br0", "up"},
			{"ip", "-n", ns, "addr", "add", fmt.Sprintf("%s.%d/24", subnet, n), "dev", "eth0"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", ns, "route", "add", "10.96.0.0/16", "dev", "eth0"},
		} {
			if err := sh(c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// start runs a long-lived process in a pod; cpu pins it to one core.
func (l *lab) start(pod string, cpu int, env []string, args ...string) (*exec.Cmd, error) {
	full := []string{"netns", "exec", l.ns(pod), "taskset", "-c", strconv.Itoa(cpu)}
	if len(env) > 0 {
		full = append(append(full, "env"), env...)
	}
	cmd := exec.Command("ip", append(full, args...)...)
	logf, err := os.Create(filepath.Join(os.TempDir(), l.prefix+"-"+pod+"-"+filepath.Base(args[0])+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l.procs = append(l.procs, cmd)
	return cmd, nil
}

func (l *lab) teardown() {
	for _, p := range l.procs {
		p.Process.Kill() //nolint:errcheck // may be gone
		p.Wait()         //nolint:errcheck // killed
	}
	for _, p := range l.pods {
		if out, err := exec.Command("ip", "netns", "pids", l.ns(p)).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // best effort
				}
			}
		}
		exec.Command("ip", "netns", "del", l.ns(p)).Run() //nolint:errcheck // best effort
	}
}

// waitTCP waits until addr accepts connections from inside pod.
func (l *lab) waitTCP(ctx context.Context, pod, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(pod), "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(addr, ":", "/", 1)).Run()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s in %s: not listening", addr, pod)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitReady waits until the sidecar in pod answers /ready with 200 (its
// first config applied, its certificate in hand).
func (l *lab) waitReady(ctx context.Context, pod string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(pod), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
			"http://127.0.0.1:15000/ready").Output()
		if err == nil && string(out) == "200" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the sidecar in %s: not ready", pod)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fortioResult is the part of fortio's JSON output we read.
type fortioResult struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64
		}
	}
	ErrorsDurationHistogram struct {
		Count int64
	}
}

func (r fortioResult) pct(p float64) float64 {
	for _, x := range r.DurationHistogram.Percentiles {
		if x.Percentile == p {
			return x.Value
		}
	}
	return 0
}

type measure struct {
	qps                   float64
	p50, p90, p99, p999   float64 // seconds
	errors                int64
	proxyCPU, proxyRSSMiB float64 // CPU seconds per 1,000 requests; RSS under load
	wrkQPS                float64 // HTTP only
}

func (l *lab) fortio(ctx context.Context, c config, qps, conns int, proto, target string) (fortioResult, error) {
	var r fortioResult
	ctx, cancel := context.WithTimeout(ctx, c.duration+time.Minute)
	defer cancel()
	out := filepath.Join(os.TempDir(), l.prefix+"-fortio.json")
	args := []string{"netns", "exec", l.ns("client"), "taskset", "-c", "0", c.fortio, "load", "-quiet", "-qps", strconv.Itoa(qps),
		"-c", strconv.Itoa(conns), "-t", c.duration.String(), "-json", out, "-p", "50,90,99,99.9", "-uniform", "-nocatchup"}
	switch proto {
	case "http":
		args = append(args, "-payload-size", "1024", "http://"+target+"/echo")
	case "grpc":
		args = append(args, "-grpc", "-ping", target)
	case "tcp":
		args = append(args, "-payload-size", "1024", "tcp://"+target)
	}
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return r, fmt.Errorf("fortio %s %s: %w: %s", proto, target, err, out)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, err
	}
	return r, nil
}

// wrk runs wrk (one thread, 32 connections) with a 1 KiB POST body
// against target and returns its requests per second: a second load
// generator's view of HTTP/1.1 throughput.
func (l *lab) wrk(ctx context.Context, c config, dir, target string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.duration+time.Minute)
	defer cancel()
	script := filepath.Join(dir, "post.lua")
	body := strings.Repeat("x", 1024)
	if err := os.WriteFile(script, []byte("wrk.method = \"POST\"\nwrk.body = \""+body+"\"\n"), 0o600); err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns("client"), "taskset", "-c", "0", "wrk", "-t1", "-c32",
		"-d"+c.duration.String(), "-s", script, "http://"+target+"/echo").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk %s: %w: %s", target, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Requests/sec:" {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("wrk %s: no Requests/sec in %s", target, out)
}

// procStat is a process's CPU seconds and RSS in MiB (zero when gone).
func procStat(pid int) (cpu float64, rssMiB float64) {
	c, rss, _ := procstat.Read(pid) //nolint:errcheck // a process gone counts as zero
	return c.Seconds(), float64(rss) / (1 << 20)
}

// pidsIn finds the processes named name running in pod (nginx's
// master and worker, for one).
func (l *lab) pidsIn(pod, name string) []int {
	var pids []int
	out, _ := exec.Command("ip", "netns", "pids", l.ns(pod)).Output() //nolint:errcheck // none found is handled
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)) //nolint:errcheck // raced exits
		if strings.TrimSpace(string(comm)) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

type topology struct {
	name   string
	target map[string]string // protocol → host:port
	proxy  func() []int      // the proxy processes whose CPU and RSS count
}

func run(ctx context.Context, c config, l *lab) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, iptables)")
	}
	if runtime.NumCPU() < 2 {
		return errors.New("needs 2 cores: one for the load generator, one for the proxy")
	}
	for _, b := range []string{"nginx", "haproxy", "wrk", "taskset", "setpriv"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("needs %s (apt-get install nginx haproxy wrk util-linux)", b)
		}
	}
	if err := l.up(map[string]int{"cp": 2, "proxy": 5, "server": 11, "mesh": 12, "client": 20}); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tender-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory
	bin := func(b string) string { return filepath.Join(c.bin, b) }

	// Servers: fortio on core 1 (sharing with the proxy: the proxy's time
	// is what differs between topologies).
	for _, pod := range []string{"server", "mesh"} {
		if _, err := l.start(pod, 1, nil, c.fortio, "server", "-http-port", "8080", "-grpc-port", "8079", "-tcp-port", "8078",
			"-redirect-port", "disabled", "-udp-port", "disabled", "-loglevel", "Warning"); err != nil {
			return err
		}
	}
	mesh := fmt.Sprintf(`services:
  - name: server
    vip: %s
    ports: [{name: http, port: 8080, protocol: HTTP}, {name: grpc, port: 8079, protocol: GRPC}, {name: tcp, port: 8078, protocol: TCP}]
    endpoints: [{address: %s}]
  - name: mesh
    vip: %s
    ports: [{name: http, port: 8080, protocol: HTTP}, {name: grpc, port: 8079, protocol: GRPC}, {name: tcp, port: 8078, protocol: TCP}]
    endpoints: [{address: %s}]
  - name: meshtls
    vip: %s
    meshed: true
    ports: [{name: http, port: 8080, protocol: HTTP}, {name: grpc, port: 8079, protocol: GRPC}, {name: tcp, port: 8078, protocol: TCP}]
    endpoints: [{address: %s}]
`, vip, serverIP, meshVIP, meshIP, mtlsVIP, meshIP)
	meshFile := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(meshFile, []byte(mesh), 0o600); err != nil {
		return err
	}
	// The sidecars (UID 1337) read their bootstrap token and the CA's root
	// from dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("bench-token default bench\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("bench-token\n"), 0o644); err != nil {
		return err
	}
	if _, err := l.start("cp", 1, nil, bin("controlplane"), "--config-file", meshFile, "--xds-addr", "0.0.0.0:15010",
		"--xds-tls-addr", "0.0.0.0:15012", "--ca-dir", filepath.Join(dir, "ca"), "--bootstrap-tokens-file", tokens,
		"--metrics-addr", "0.0.0.0:15014", "--kubernetes", "off", "--log-level", "warn"); err != nil {
		return err
	}
	rootPEM, err := waitFile(filepath.Join(dir, "ca", "root-cert.pem"), 10*time.Second)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "root.pem"), rootPEM, 0o644); err != nil {
		return err
	}
	// Sidecars: one core each (GOMAXPROCS=1), as the per-hop targets say.
	for _, pod := range []string{"client", "mesh"} {
		if out, err := exec.Command("ip", "netns", "exec", l.ns(pod), bin("sidecar"), "init").CombinedOutput(); err != nil {
			return fmt.Errorf("sidecar init: %w: %s", err, out)
		}
		if _, err := l.start(pod, 1, append([]string{"GOMAXPROCS=1"}, c.sidecarEnv...), "setpriv", "--reuid="+proxyUID, "--regid="+proxyUID, "--clear-groups",
			bin("sidecar"), "run", "--xds-addr", cpIP+":15012", "--xds-tls", "--ca-root-file", filepath.Join(dir, "root.pem"),
			"--controlplane-identity", "spiffe://cluster.local/ns/tender-system/sa/tender-controlplane", "--token-file", filepath.Join(dir, "token"), "--pod-name", pod, "--pod-namespace", "default", "--log-level", "warn"); err != nil {
			return err
		}
	}
	nginxConf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(nginxConf, []byte(fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  upstream server { server %[2]s:8080; keepalive 64; }
  upstream grpcserver { server %[2]s:8079; keepalive 64; }
  server { listen 8080; location / { proxy_pass http://server; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 8079 http2; location / { grpc_pass grpc://grpcserver; } }
}
`, dir, serverIP)), 0o600); err != nil {
		return err
	}
	if _, err := l.start("proxy", 1, nil, "nginx", "-c", nginxConf, "-e", "stderr"); err != nil {
		return err
	}
	haproxyConf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(haproxyConf, []byte(fmt.Sprintf(`global
  nbthread 1
  maxconn 4000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend http
  mode http
  bind :9080
  default_backend http
backend http
  mode http
  http-reuse always
  server s1 %[1]s:8080
frontend grpc
  mode http
  bind :9079 proto h2
  default_backend grpc
backend grpc
  mode http
  server s1 %[1]s:8079 proto h2
frontend tcp
  mode tcp
  bind :9078
  default_backend tcp
backend tcp
  mode tcp
  server s1 %[1]s:8078
`, serverIP)), 0o600); err != nil {
		return err
	}
	if _, err := l.start("proxy", 1, nil, "haproxy", "-f", haproxyConf, "-db"); err != nil {
		return err
	}
	for pod, addr := range map[string]string{"client": serverIP + ":8080", "proxy": "127.0.0.1:9080", "cp": "127.0.0.1:15010"} {
		if err := l.waitTCP(ctx, pod, addr); err != nil {
			return err
		}
	}
	if err := l.waitTCP(ctx, "client", meshIP+":8080"); err != nil { // through the mesh sidecar's inbound capture
		return err
	}
	for _, pod := range []string{"client", "mesh"} {
		if err := l.waitReady(ctx, pod); err != nil {
			return err
		}
	}
	time.Sleep(2 * time.Second) // the sidecars hand their start-up pages back a second after they are ready
	var idleRSS float64
	var loadSplit []string // the one sidecar's RssAnon / RssFile at the end of each flat-out run
	for _, p := range l.pidsIn("client", "sidecar") {
		_, idleRSS = procStat(p)
	}

	topologies := []topology{
		{"direct", map[string]string{"http": serverIP + ":8080", "grpc": serverIP + ":8079", "tcp": serverIP + ":8078"}, nil},
		{"tender (one sidecar)", map[string]string{"http": vip + ":8080", "grpc": vip + ":8079", "tcp": vip + ":8078"},
			func() []int { return l.pidsIn("client", "sidecar") }},
		{"nginx", map[string]string{"http": proxyIP + ":8080", "grpc": proxyIP + ":8079"},
			func() []int { return l.pidsIn("proxy", "nginx") }},
		{"HAProxy", map[string]string{"http": proxyIP + ":9080", "grpc": proxyIP + ":9079", "tcp": proxyIP + ":9078"},
			func() []int { return l.pidsIn("proxy", "haproxy") }},
		{"tender mesh (two sidecars)", map[string]string{"http": meshVIP + ":8080", "grpc": meshVIP + ":8079", "tcp": meshVIP + ":8078"},
			func() []int { return append(l.pidsIn("client", "sidecar"), l.pidsIn("mesh", "sidecar")...) }},
		{"tender mesh, mutual TLS", map[string]string{"http": mtlsVIP + ":8080", "grpc": mtlsVIP + ":8079", "tcp": mtlsVIP + ":8078"},
			func() []int { return append(l.pidsIn("client", "sidecar"), l.pidsIn("mesh", "sidecar")...) }},
	}
	type key struct{ topo, proto, load string }
	results := map[key]measure{}
	for _, proto := range []string{"http", "grpc", "tcp"} {
		for _, t := range topologies {
			target, ok := t.target[proto]
			if !ok {
				continue
			}
			for _, load := range []struct {
				name       string
				qps, conns int
			}{{"latency", 1000, 16}, {"throughput", 0, 32}} {
				var pids []int
				if t.proxy != nil {
					pids = t.proxy()
				}
				var cpu0 float64
				for _, p := range pids {
					c, _ := procStat(p)
					cpu0 += c
				}
				fmt.Fprintf(os.Stderr, "bench: %s %s %s...\n", t.name, proto, load.name)
				var profiled chan struct{}
				if c.profile != "" && t.name == "tender (one sidecar)" && load.qps == 0 {
					profiled = make(chan struct{})
					go func() {
						defer close(profiled)
						secs := strconv.Itoa(max(1, int(c.duration.Seconds())-2))
						out := filepath.Join(c.profile, "sidecar-"+proto+".pprof")
						if b, err := exec.Command("ip", "netns", "exec", l.ns("client"), "curl", "-sf", "-o", out,
							"http://127.0.0.1:15000/debug/pprof/profile?seconds="+secs).CombinedOutput(); err != nil {
							fmt.Fprintf(os.Stderr, "bench: profile: %v: %s\n", err, b)
						}
					}()
				}
				r, err := l.fortio(ctx, c, load.qps, load.conns, proto, target)
				if profiled != nil {
					<-profiled
					// Where the memory under load is: the heap, and the
					// process's own pages against its executable's.
					heap := filepath.Join(c.profile, "sidecar-"+proto+"-heap.pprof")
					if b, err := exec.Command("ip", "netns", "exec", l.ns("client"), "curl", "-sf", "-o", heap,
						"http://127.0.0.1:15000/debug/pprof/heap").CombinedOutput(); err != nil {
						fmt.Fprintf(os.Stderr, "bench: heap profile: %v: %s\n", err, b)
					}
					metrics := filepath.Join(c.profile, "sidecar-"+proto+"-metrics.txt")
					if b, err := exec.Command("ip", "netns", "exec", l.ns("client"), "curl", "-sf", "-o", metrics,
						"http://127.0.0.1:15090/metrics").CombinedOutput(); err != nil {
						fmt.Fprintf(os.Stderr, "bench: metrics: %v: %s\n", err, b)
					}
					for _, p := range pids {
						if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p)); err == nil {
							os.WriteFile(filepath.Join(c.profile, "sidecar-"+proto+"-status.txt"), st, 0o644) //nolint:errcheck,gosec // a profile aid
						}
					}
				}
				if err != nil {
					return err
				}
				m := measure{qps: r.ActualQPS, p50: r.pct(50), p90: r.pct(90), p99: r.pct(99), p999: r.pct(99.9)}
				m.errors = r.ErrorsDurationHistogram.Count
				if t.name == "tender (one sidecar)" && load.qps == 0 {
					for _, p := range pids {
						if anon, file, err := procstat.Split(p); err == nil {
							loadSplit = append(loadSplit, fmt.Sprintf("%s %.1f / %.1f", proto, float64(anon)/(1<<20), float64(file)/(1<<20)))
						}
					}
				}
				var cpu1, rss float64
				for _, p := range pids {
					c, r := procStat(p)
					cpu1 += c
					rss += r
				}
				if n := float64(r.DurationHistogram.Count); n > 0 && pids != nil {
					m.proxyCPU = (cpu1 - cpu0) / n * 1000
					m.proxyRSSMiB = rss
				}
				if proto == "http" && load.qps == 0 {
					fmt.Fprintf(os.Stderr, "bench: %s http throughput (wrk)...\n", t.name)
					if m.wrkQPS, err = l.wrk(ctx, c, dir, target); err != nil {
						return err
					}
				}
				results[key{t.name, proto, load.name}] = m
			}
		}
	}

	var b strings.Builder
	host, _ := os.Hostname()
	cpuModel := ""
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpuModel = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	fmt.Fprintf(&b, "# tender benchmark results\n\nWritten by `make bench` on %s: %s, %d cores (%s), %s, each load run %s. "+
		"fortio (v1.66.1) on core 0 in the client pod; the proxy under test, pinned to core 1 with one worker/thread "+
		"(GOMAXPROCS=1, nginx worker_processes 1, HAProxy nbthread 1) and keep-alive to the server, shares core 1 with the fortio server. "+
		"Ratios are what to read: these machines are shared and noisy.\n\n", time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), cpuModel, runtime.Version(), c.duration)
	fmt.Fprintf(&b, "tender sidecar RSS idle: %.1f MiB. Proxy RSS is under the flat-out load, summed over the proxy's processes (both sidecars on the mesh path, nginx's master and worker). The one sidecar's own pages against its executable's (RssAnon / RssFile, MiB) at the end of each flat-out run: %s.\n\n", idleRSS, strings.Join(loadSplit, "; "))
	ms := func(s float64) string { return fmt.Sprintf("%.3f", s*1000) }
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	for _, proto := range []string{"http", "grpc", "tcp"} {
		title := map[string]string{"http": "HTTP/1.1, 1 KiB POST body", "grpc": "gRPC unary (h2, fortio ping)", "tcp": "TCP echo, 1 KiB"}[proto]
		gen := "fortio"
		if proto == "http" {
			gen = "fortio, and wrk"
		}
		fmt.Fprintf(&b, "## %s\n\nAt 1,000 QPS over 16 connections (latency, ms) and flat out over 32 connections (QPS, %s):\n\n", title, gen)
		b.WriteString("| path | p50 | p90 | p99 | p99.9 | added p50 vs direct | max QPS | QPS / direct | QPS / HAProxy | QPS / nginx | proxy CPU s per 1k req | proxy RSS MiB | errors |")
		if proto == "http" {
			b.WriteString(" wrk QPS | wrk / HAProxy |")
		}
		b.WriteString("\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
		if proto == "http" {
			b.WriteString(" --- | --- |")
		}
		b.WriteString("\n")
		direct := results[key{"direct", proto, "latency"}]
		directT := results[key{"direct", proto, "throughput"}]
		haT := results[key{"HAProxy", proto, "throughput"}]
		ngT := results[key{"nginx", proto, "throughput"}]
		for _, t := range topologies {
			lat, ok := results[key{t.name, proto, "latency"}]
			if !ok {
				fmt.Fprintf(&b, "| %s | n/a |||||||||||\n", t.name)
				continue
			}
			thr := results[key{t.name, proto, "throughput"}]
			cpu, rss := "–", "–"
			if t.proxy != nil {
				cpu, rss = fmt.Sprintf("%.3f", thr.proxyCPU), fmt.Sprintf("%.1f", thr.proxyRSSMiB)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %d |", t.name, ms(lat.p50), ms(lat.p90), ms(lat.p99), ms(lat.p999),
				ms(lat.p50-direct.p50), thr.qps, ratio(thr.qps, directT.qps), ratio(thr.qps, haT.qps), ratio(thr.qps, ngT.qps), cpu, rss, lat.errors+thr.errors)
			if proto == "http" {
				fmt.Fprintf(&b, " %.0f | %s |", thr.wrkQPS, ratio(thr.wrkQPS, haT.wrkQPS))
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	return os.WriteFile(c.out, []byte(b.String()), 0o644) //nolint:gosec // a report for people to read
}

// waitFile returns the content of path once it exists and is not empty.
func waitFile(path string, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			return b, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("empty")
			}
			return nil, fmt.Errorf("%s not written within %s: %w", path, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

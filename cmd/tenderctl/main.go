// Command tenderctl is the operator's tool: which sidecars are in sync
// with the control plane, what a sidecar's config is, whether a mesh.yaml
// or a cluster is sound, and how the injector would change a pod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const usage = `tenderctl: the tender mesh's operator tool

  tenderctl proxy-status [--controlplane URL]
      every sidecar connected to the control plane, SYNCED / STALE / NOT SENT per xDS type
  tenderctl proxy-config clusters|endpoints|listeners|routes ADMIN_ADDR [--cluster NAME] [-o table|json]
      a sidecar's config from its admin port (host[:15000]; in Kubernetes,
      kubectl port-forward POD 15000 first)
  tenderctl stat [--prometheus URL] [--window 30s] [--watch 5s]
      each service's request rate, success rate and p50/p99 latency per workload, from Prometheus
  tenderctl check [--config-file mesh.yaml] [--kubeconfig FILE] [--controlplane URL]
      checks a mesh.yaml, a cluster and a control plane, a line per check
  tenderctl inject -f pod.yaml [--namespace NS] [--sidecar-* flags as the control plane's]
      prints the pods (and pod templates) of the file as the injector would mutate them

Run a command with -h for its flags.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// errFailed reports that the command printed its own failure.
var errFailed = errors.New("failed")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "proxy-status":
		err = proxyStatus(args[1:], stdout, stderr)
	case "proxy-config":
		err = proxyConfig(args[1:], stdout, stderr)
	case "stat":
		err = stat(args[1:], stdout, stderr)
	case "check":
		err = check(args[1:], stdout, stderr)
	case "inject":
		err = injectCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tenderctl: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "tenderctl:", err)
		return 2
	case errors.Is(err, errFailed):
		return 1
	default:
		fmt.Fprintln(stderr, "tenderctl:", err)
		return 1
	}
}

var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tenderctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// controlPlaneFlag is --controlplane: the control plane's metrics
// address (:15014), where /readyz and /debug/proxies live.
func controlPlaneFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("TENDER_CONTROLPLANE")
	if def == "" {
		def = "http://127.0.0.1:15014"
	}
	return fs.String("controlplane", def, "control plane metrics address, URL or host:port (env TENDER_CONTROLPLANE; in Kubernetes, kubectl port-forward deploy/tender-controlplane 15014)")
}

// baseURL makes host[:port] or a URL into a URL without a trailing slash.
func baseURL(addr, defaultPort string) string {
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), defaultPort)
		}
		addr = "http://" + addr
	}
	return strings.TrimSuffix(addr, "/")
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// get fetches url into body, failing on anything but want.
func get(url string, want int) ([]byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != want {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

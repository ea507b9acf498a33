package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// controlPlane is a running controlplane binary.
type controlPlane struct {
	*process
	mesh        string // path of its mesh.yaml
	xdsAddr     string
	metricsAddr string
}

// startControlPlane runs the control plane on mesh.yaml content. Empty
// addresses pick free loopback ports.
func startControlPlane(t *testing.T, ctx context.Context, mesh, xdsAddr, metricsAddr string) *controlPlane {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, path, mesh)
	return startControlPlaneOn(t, ctx, path, xdsAddr, metricsAddr)
}

// startControlPlaneOn runs the control plane on the mesh.yaml at path,
// with extra flags.
func startControlPlaneOn(t *testing.T, ctx context.Context, path, xdsAddr, metricsAddr string, extra ...string) *controlPlane {
	t.Helper()
	if xdsAddr == "" {
		xdsAddr = "127.0.0.1:0"
	}
	if metricsAddr == "" {
		metricsAddr = "127.0.0.1:0"
	}
	p := start(t, "controlplane", "controlplane", append([]string{
		"--config-file", path, "--xds-addr", xdsAddr, "--metrics-addr", metricsAddr,
		"--log-format", "json", "--debounce", "50ms"}, extra...)...)
	l := p.waitLog(ctx, "control plane starting")
	cp := &controlPlane{process: p, mesh: path, xdsAddr: fmt.Sprint(l["xds"]), metricsAddr: fmt.Sprint(l["metrics"])}
	waitHTTP(ctx, t, cp.url("/readyz"), 200)
	return cp
}

func (cp *controlPlane) url(path string) string { return "http://" + cp.metricsAddr + path }

// bootstrap is a grpc-go xDS bootstrap pointing at the control plane.
func (cp *controlPlane) bootstrap(node string) []byte {
	return []byte(fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": %q, "locality": {"zone": "z1"}}
}`, cp.xdsAddr, node))
}

// setMesh rewrites the control plane's mesh.yaml.
func (cp *controlPlane) setMesh(t *testing.T, content string) {
	t.Helper()
	writeFile(t, cp.mesh, content)
}

// meshYAML renders a one-service mesh.yaml for greeter with the given
// policy lines and endpoint ports on 127.0.0.1.
func meshYAML(policy string, ports ...string) string {
	var b strings.Builder
	b.WriteString("services:\n  - name: greeter\n    namespace: default\n")
	if policy != "" {
		b.WriteString(policy)
	}
	b.WriteString("    ports:\n      - {name: grpc, port: 8080, protocol: GRPC}\n    endpoints:\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "      - {address: 127.0.0.1, port: %s, zone: z1}\n", p)
	}
	return b.String()
}

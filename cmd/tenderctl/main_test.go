package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func runCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const workloads = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: batch
  annotations: {tender.dev/inject: "false"}
spec:
  containers: [{name: batch, image: batch:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
`

func TestInject(t *testing.T) {
	out, errOut, code := runCmd(t, "inject", "-f", write(t, "app.yaml", workloads), "--sidecar-image", "reg/sidecar:1", "--native-sidecar=false", "--sidecar-mtls=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 3 {
		t.Fatalf("got %d documents, want 3:\n%s", len(docs), out)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "tender-init" || len(spec.Containers) != 2 ||
		spec.Containers[0].Name != "tender-proxy" || spec.Containers[0].Image != "reg/sidecar:1" {
		t.Errorf("Deployment template not injected as a classic sidecar: %+v", spec)
	}
	if !strings.Contains(strings.Join(spec.Containers[0].Args, " "), "--xds-addr=tender-controlplane.tender-system.svc:15010") {
		t.Errorf("sidecar args %v", spec.Containers[0].Args)
	}
	var p corev1.Pod
	if err := yaml.Unmarshal([]byte(docs[1]), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.Containers) != 1 || len(p.Spec.InitContainers) != 0 {
		t.Errorf("opted-out pod was injected: %+v", p.Spec)
	}
	if !strings.Contains(docs[2], "kind: Service") {
		t.Errorf("Service not passed through: %s", docs[2])
	}

	// Injecting the output again changes nothing.
	again, _, code := runCmd(t, "inject", "-f", write(t, "injected.yaml", out), "--sidecar-image", "reg/sidecar:1", "--native-sidecar=false", "--sidecar-mtls=false")
	if code != 0 || again != out {
		t.Errorf("second injection changed the output (exit %d)", code)
	}

	// With mutual TLS (the default) the sidecar needs the CA's root.
	_, errOut, code = runCmd(t, "inject", "-f", write(t, "app.yaml", workloads))
	if code != 1 || !strings.Contains(errOut, "--sidecar-ca-root-file") {
		t.Errorf("mTLS without a root: exit %d, %q", code, errOut)
	}
	root := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	out, errOut, code = runCmd(t, "inject", "-f", write(t, "app.yaml", workloads), "--sidecar-ca-root-file", write(t, "root.pem", root))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var md appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(strings.Split(out, "\n---\n")[0]), &md); err != nil {
		t.Fatal(err)
	}
	ms := md.Spec.Template.Spec
	proxy := ms.InitContainers[1]
	args := strings.Join(proxy.Args, " ")
	if !strings.Contains(args, "--xds-addr=tender-controlplane.tender-system.svc:15012 --xds-tls") || !strings.Contains(args, "--token-file=/var/run/secrets/tokens/tender-token") {
		t.Errorf("mTLS sidecar args %v", proxy.Args)
	}
	rootEnv := ""
	for _, e := range proxy.Env {
		if e.Name == "TENDER_CA_ROOT" {
			rootEnv = e.Value
		}
	}
	if rootEnv != root {
		t.Errorf("TENDER_CA_ROOT %q, want the root file's content", rootEnv)
	}
	if len(ms.Volumes) != 2 || ms.Volumes[0].Projected == nil || ms.Volumes[0].Projected.Sources[0].ServiceAccountToken.Audience != "tender" ||
		ms.Volumes[1].EmptyDir == nil {
		t.Errorf("want a projected token volume of audience tender and an emptyDir for the bundle: %+v", ms.Volumes)
	}
	if !strings.Contains(args, "--bundle-file=/var/run/tender/bundle.pem") {
		t.Errorf("mTLS sidecar keeps no trust bundle: %v", proxy.Args)
	}

	// A misspelt field or a bad annotation is an error naming it.
	_, errOut, code = runCmd(t, "inject", "-f", write(t, "bad.yaml", "kind: Pod\nmetadata: {name: x}\nspec: {containerz: []}\n"))
	if code != 1 || !strings.Contains(errOut, "containerz") {
		t.Errorf("misspelt field: exit %d, %q", code, errOut)
	}
	_, errOut, code = runCmd(t, "inject", "-f", write(t, "bad.yaml",
		"kind: Pod\nmetadata: {name: x, annotations: {tender.dev/exclude-inbound-ports: http}}\nspec: {containers: [{name: a, image: a}]}\n"))
	if code != 1 || !strings.Contains(errOut, "tender.dev/exclude-inbound-ports") {
		t.Errorf("bad annotation: exit %d, %q", code, errOut)
	}
	if _, _, code := runCmd(t, "inject"); code != 2 {
		t.Errorf("inject without -f: exit %d, want 2", code)
	}
}

func TestCheckMeshFile(t *testing.T) {
	good := write(t, "mesh.yaml", "services:\n  - name: greeter\n    vip: 10.96.0.10\n    ports: [{name: http, port: 80}]\n    endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2}]\n")
	// No control plane listens on this port.
	out, _, code := runCmd(t, "check", "--config-file", good, "--controlplane", "127.0.0.1:1")
	if code != 1 || !strings.Contains(out, "[ok]   mesh.yaml "+good+": 1 services with 2 endpoints") ||
		!strings.Contains(out, "[FAIL] control plane http://127.0.0.1:1") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	bad := write(t, "mesh.yaml", "services:\n  - name: greeter\n    portz: []\n")
	out, _, _ = runCmd(t, "check", "--config-file", bad, "--controlplane", "127.0.0.1:1")
	if !strings.Contains(out, "[FAIL] mesh.yaml") || !strings.Contains(out, "portz") {
		t.Errorf("bad mesh.yaml:\n%s", out)
	}
}

// TestCheckRoutes: check reports a route whose backend is unknown, and
// passes one that resolves.
func TestCheckRoutes(t *testing.T) {
	mesh := `services:
  - {name: greeter, ports: [{name: http, port: 80}]}
  - {name: greeter-v2, ports: [{name: http, port: 80}]}
routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: canary}
    spec:
      parentRefs: [{group: "", kind: Service, name: greeter}]
      rules:
        - backendRefs: [{name: greeter, port: 80, weight: 90}, {name: BACKEND, port: 80, weight: 10}]
`
	out, _, _ := runCmd(t, "check", "--config-file", write(t, "mesh.yaml", strings.Replace(mesh, "BACKEND", "greeter-v2", 1)), "--controlplane", "127.0.0.1:1")
	if !strings.Contains(out, "[ok]   mesh.yaml: 1 routes, every one accepted with its backends resolved") {
		t.Errorf("good route:\n%s", out)
	}
	out, _, _ = runCmd(t, "check", "--config-file", write(t, "mesh.yaml", strings.Replace(mesh, "BACKEND", "greeter-v3", 1)), "--controlplane", "127.0.0.1:1")
	if !strings.Contains(out, "[FAIL] mesh.yaml: HTTPRoute/default/canary, parent greeter: references not resolved (BackendNotFound): rule 0 backendRef 1: Service default/greeter-v3 not found") {
		t.Errorf("route with an unknown backend:\n%s", out)
	}
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":              "http://10.0.0.1:15000",
		"10.0.0.1:9000":         "http://10.0.0.1:9000",
		"[fd00::1]":             "http://[fd00::1]:15000",
		"fd00::1":               "http://[fd00::1]:15000",
		"https://cp.example/x/": "https://cp.example/x",
	} {
		if got := baseURL(in, "15000"); got != want {
			t.Errorf("baseURL(%q) = %q, want %q", in, got, want)
		}
	}
}

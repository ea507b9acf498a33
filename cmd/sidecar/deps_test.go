package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildTags are the tags the sidecar is built with (the Makefile's
// SIDECAR_TAGS, build/sidecar.Dockerfile, e2e): disable_pgv leaves out
// go-control-plane's generated validation code, which the sidecar never
// calls; grpcnotrace leaves out grpc-go's x/net/trace support, whose
// html/template makes the linker keep every exported method.
const buildTags = "disable_pgv,grpcnotrace"

// forbidden are import path prefixes the sidecar must not link: the
// control plane's side of xDS, the registry and its sources, Kubernetes'
// clients, and the proto types of resources the sidecar never reads. Each
// costs memory in every pod of the mesh (their code and the descriptors
// their init registers). The HTTP connection manager's types are not on
// the list: HttpProtocolOptions, which the translator puts in every
// cluster and /config_dump must render (types.go), imports them.
var forbidden = []string{
	"github.com/tender-mesh/tender/discovery",
	"github.com/tender-mesh/tender/xds", // but xds/xdsclient, below
	"github.com/tender-mesh/tender/inject/webhook",
	"github.com/tender-mesh/tender/security/ca",
	"github.com/envoyproxy/go-control-plane/pkg/cache/",
	"github.com/envoyproxy/go-control-plane/pkg/server/",
	"github.com/envoyproxy/go-control-plane/pkg/resource/",
	"github.com/envoyproxy/go-control-plane/envoy/config/listener/",
	"github.com/envoyproxy/go-control-plane/envoy/service/cluster/",
	"github.com/envoyproxy/go-control-plane/envoy/service/listener/",
	"k8s.io/",
	"sigs.k8s.io/",
	"testing",
	"golang.org/x/net/trace",
	"text/template",
	"html/template",
}

// allowed are exceptions to forbidden.
var allowed = []string{
	"github.com/tender-mesh/tender/xds/xdsclient",
}

// TestDependencies keeps the sidecar lean: `go list -deps` of the sidecar
// names none of the forbidden packages, and with buildTags no
// go-control-plane package compiles a protoc-gen-validate file.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-tags", buildTags,
		"-f", `{{.ImportPath}}{{range .GoFiles}} {{.}}{{end}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg := fields[0]
		if bad := forbiddenPrefix(pkg); bad != "" {
			t.Errorf("got the sidecar linking %s (under %s), want it absent", pkg, bad)
		}
		for _, f := range fields[1:] {
			// go-control-plane's validation files carry
			// //go:build !disable_pgv (cncf/xds's do not).
			if strings.HasPrefix(pkg, "github.com/envoyproxy/go-control-plane/") && strings.HasSuffix(f, ".pb.validate.go") {
				t.Errorf("got %s/%s compiled with -tags %s, want no validation code", pkg, f, buildTags)
			}
		}
	}
}

// forbiddenPrefix returns the entry of forbidden that pkg falls under, or
// "" when it is allowed.
func forbiddenPrefix(pkg string) string {
	for _, a := range allowed {
		if pkg == a || strings.HasPrefix(pkg, a+"/") {
			return ""
		}
	}
	for _, f := range forbidden {
		if strings.HasSuffix(f, "/") && strings.HasPrefix(pkg, f) {
			return f
		}
		if pkg == f || strings.HasPrefix(pkg, f+"/") {
			return f
		}
	}
	return ""
}

// TestBuildTags: every place that builds the sidecar uses buildTags.
func TestBuildTags(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"Makefile", "SIDECAR_TAGS := " + buildTags + "\n"},
		{"build/sidecar.Dockerfile", "-tags " + buildTags + " "},
		{"e2e/main_test.go", `"-tags", "` + buildTags + `", "../cmd/sidecar"`},
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("got %s without %q, want the sidecar built with -tags %s", tc.file, tc.want, buildTags)
		}
	}
}

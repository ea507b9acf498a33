package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// dockerfile is what a Dockerfile's final stage says of its image.
type dockerfile struct {
	From       string
	User       string
	Ports      []string
	Entrypoint []string
	Cmd        []string
	Files      []string // what COPY puts in /
	Installs   string   // the RUN that installs packages, if any
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		arg := strings.TrimSpace(strings.TrimPrefix(line, f[0]))
		switch f[0] {
		case "FROM":
			d = dockerfile{From: f[1]} // only the final stage counts
		case "USER":
			d.User = f[1]
		case "EXPOSE":
			d.Ports = append(d.Ports, f[1:]...)
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(arg), &v); err != nil {
				t.Fatalf("%s: %s is not exec form: %v", path, f[0], err)
			}
			if f[0] == "ENTRYPOINT" {
				d.Entrypoint = v
			} else {
				d.Cmd = v
			}
		case "COPY":
			if !strings.HasPrefix(f[1], "--from=") || f[len(f)-1] != "/" && len(f) != 4 {
				continue
			}
			srcs := f[2 : len(f)-1]
			if f[len(f)-1] != "/" { // COPY --from=build /out/x /x
				srcs = []string{f[len(f)-1]}
			}
			for _, s := range srcs {
				d.Files = append(d.Files, filepath.Base(s))
			}
		case "RUN":
			if strings.Contains(arg, "apt-get install") {
				d.Installs = arg
			}
		}
	}
	return d
}

// The images make images builds are the ones build/*.Dockerfile describe:
// the same base, user, ports, entrypoint, command and files.
func TestDockerfilesDescribeTheImages(t *testing.T) {
	for _, s := range specs {
		path := filepath.Join("..", "..", "build", s.Name+".Dockerfile")
		if s.Name == "pause" {
			// The one-node test cluster's pod sandbox only; users' clusters
			// have their own.
			if _, err := os.Stat(path); err == nil {
				t.Errorf("%s exists: the pause image is the test cluster's own", path)
			}
			continue
		}
		d := parseDockerfile(t, path)
		switch s.Base {
		case static:
			if d.From != "gcr.io/distroless/static-debian12:nonroot" {
				t.Errorf("%s: FROM %s, want distroless static nonroot (what the static base lays out)", path, d.From)
			}
		case debianIPTables:
			if d.From != "debian:bookworm-slim" || !strings.Contains(d.Installs, "iptables") {
				t.Errorf("%s: FROM %s installing %q, want debian:bookworm-slim with iptables", path, d.From, d.Installs)
			}
		}
		if d.User != s.User || !slices.Equal(d.Ports, s.Ports) || !slices.Equal(d.Entrypoint, s.Entrypoint) ||
			!slices.Equal(d.Cmd, s.Cmd) || !slices.Equal(d.Files, s.Files) {
			t.Errorf("%s says user %s ports %v entrypoint %v cmd %v files %v;\nmake images builds user %s ports %v entrypoint %v cmd %v files %v",
				path, d.User, d.Ports, d.Entrypoint, d.Cmd, d.Files, s.User, s.Ports, s.Entrypoint, s.Cmd, s.Files)
		}
	}
}

// make images writes OCI archives that name the image as the chart does,
// with the binaries executable at / and the sidecar's Debian base laid
// out as bookworm does (/usr merged).
func TestBuild(t *testing.T) {
	bin, base, out := t.TempDir(), t.TempDir(), t.TempDir()
	for _, s := range specs {
		for _, f := range s.Files {
			if err := os.WriteFile(filepath.Join(bin, f), []byte("#!"+f), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range []string{"usr/sbin", "lib/x86_64-linux-gnu"} {
		if err := os.MkdirAll(filepath.Join(base, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(base, "usr/sbin/xtables-nft-multi"), []byte("elf"), 0o755)     //nolint:errcheck // checked below
	os.WriteFile(filepath.Join(base, "lib/x86_64-linux-gnu/libc.so.6"), []byte("elf"), 0o644) //nolint:errcheck // checked below
	if err := os.Symlink("xtables-nft-multi", filepath.Join(base, "usr/sbin/iptables-nft-restore")); err != nil {
		t.Fatal(err)
	}
	if err := run(options{bin: bin, sidecarBase: base, registry: "example.test/tender", version: "9.9.9", out: out}); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		dir := filepath.Join(t.TempDir(), s.Name)
		untar(t, filepath.Join(out, s.Name+".tar"), dir)
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 || m.Manifests[0].Annotations["io.containerd.image.name"] != "example.test/tender/"+s.Name+":9.9.9" {
			t.Fatalf("%s: index %+v, want one image named example.test/tender/%s:9.9.9", s.Name, m.Manifests, s.Name)
		}
		img, err := idx.Image(m.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != s.User || !slices.Equal(cf.Config.Entrypoint, s.Entrypoint) || cf.OS != "linux" {
			t.Errorf("%s: config user %s entrypoint %v os %s", s.Name, cf.Config.User, cf.Config.Entrypoint, cf.OS)
		}
		files := map[string]*tar.Header{}
		var users string
		layers, _ := img.Layers()
		for _, l := range layers {
			rc, err := l.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				files[h.Name] = h
				if h.Name == "etc/passwd" {
					b, _ := io.ReadAll(tr)
					users = string(b)
				}
			}
			rc.Close()
		}
		for _, f := range s.Files {
			if h := files[f]; h == nil || h.Mode&0o111 == 0 {
				t.Errorf("%s: /%s missing or not executable", s.Name, f)
			}
		}
		if uid, _, _ := strings.Cut(s.User, ":"); uid != "65535" && !strings.Contains(users, ":x:"+uid+":") {
			t.Errorf("%s: /etc/passwd has no user %s:\n%s", s.Name, uid, users)
		}
		if s.Base == debianIPTables {
			for name, want := range map[string]string{"usr/sbin/xtables-nft-multi": "", "usr/lib/x86_64-linux-gnu/libc.so.6": "",
				"usr/sbin/iptables-nft-restore": "xtables-nft-multi", "sbin": "usr/sbin", "lib": "usr/lib"} {
				if h := files[name]; h == nil || h.Linkname != want {
					t.Errorf("sidecar: %s missing or linking to the wrong place (%v)", name, h)
				}
			}
		}
	}
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755) //nolint:errcheck // the write below fails if it did
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755) //nolint:errcheck // the write below fails if it did
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Command images builds tender's container images without a Docker daemon
// (`make images`): the control plane, the sidecar, the greeter example and
// the pause image the one-node test cluster's pods start with, each written
// as an OCI image-layout archive that `ctr images import` (or `crane push`,
// after unpacking) takes. The images are the ones build/*.Dockerfile
// describe; images_test.go holds the two to the same user, ports,
// entrypoint and files.
//
//	go run ./hack/images --bin bin/static --sidecar-base .tools/sidecar-base --version 0.1.0 --out bin/images
//
// Every layer is reproducible: files sorted, owned by root, stamped with
// one fixed time, so the same binaries give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch stamps every file and image: reproducible builds.
var epoch = time.Unix(0, 0).UTC()

// base is the root filesystem an image starts from.
type base int

const (
	// static is distroless/static-debian12:nonroot's content: users,
	// /tmp, CA certificates.
	static base = iota
	// debianIPTables is debian:bookworm-slim's libc with the iptables
	// package: what `sidecar init` execs.
	debianIPTables
)

// spec is one image: what build/NAME.Dockerfile describes.
type spec struct {
	Name       string
	Base       base
	Files      []string // binaries from --bin, copied to /
	User       string
	Ports      []string
	Entrypoint []string
	Cmd        []string
}

// specs are the images, in the order `make images` lists them.
var specs = []spec{
	{Name: "controlplane", Base: static, Files: []string{"controlplane"}, User: "65532:65532",
		Ports: []string{"15010", "15014", "15017"}, Entrypoint: []string{"/controlplane"}},
	{Name: "sidecar", Base: debianIPTables, Files: []string{"sidecar"}, User: "1337:1337",
		Ports: []string{"15000", "15001", "15006", "15090"}, Entrypoint: []string{"/sidecar"}, Cmd: []string{"run"}},
	{Name: "greeter", Base: static, Files: []string{"greeter", "greeter-client"}, User: "65532:65532",
		Ports: []string{"8080", "9090"}, Entrypoint: []string{"/greeter"}},
	{Name: "pause", Base: static, Files: []string{"pause"}, User: "65535:65535", Entrypoint: []string{"/pause"}},
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/static", "directory of the static binaries the images carry")
	flag.StringVar(&o.sidecarBase, "sidecar-base", ".tools/sidecar-base", "root filesystem of the sidecar's base: Debian bookworm's iptables package and its dependencies, unpacked (make images does it)")
	flag.StringVar(&o.registry, "registry", "ghcr.io/tender-mesh", "repository prefix of the image names (the chart's default)")
	flag.StringVar(&o.version, "version", "", "image tag (the chart's appVersion)")
	flag.StringVar(&o.out, "out", "bin/images", "directory to write NAME.tar OCI archives to")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

type options struct{ bin, sidecarBase, registry, version, out string }

func run(o options) error {
	if o.version == "" {
		return errors.New("--version is required")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	for _, s := range specs {
		img, err := build(s, o)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		ref := o.registry + "/" + s.Name + ":" + o.version
		file := filepath.Join(o.out, s.Name+".tar")
		if err := writeArchive(file, img, ref, o.version); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s %s %s\n", file, ref, d)
	}
	return nil
}

// build assembles one image: its base layer, then its binaries.
func build(s spec, o options) (v1.Image, error) {
	var baseTar []byte
	var err error
	switch s.Base {
	case static:
		baseTar, err = staticBase()
	case debianIPTables:
		baseTar, err = debianBase(o.sidecarBase)
	}
	if err != nil {
		return nil, err
	}
	var files []entry
	for _, f := range s.Files {
		b, err := os.ReadFile(filepath.Join(o.bin, f))
		if err != nil {
			return nil, err
		}
		files = append(files, entry{name: f, mode: 0o755, data: b})
	}
	binTar, err := tarOf(files)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, t := range [][]byte{baseTar, binTar} {
		l, err := tarball.LayerFromOpener(opener(t), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.User = s.User
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if len(s.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range s.Ports {
			cf.Config.ExposedPorts[p+"/tcp"] = struct{}{}
		}
	}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "https://github.com/tender-mesh/tender"}
	return mutate.ConfigFile(img, cf)
}

func opener(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// entry is one file, directory (name ending in /) or symlink of a layer.
type entry struct {
	name string
	mode int64
	data []byte
	link string
}

// tarOf writes entries as a layer, sorted by name.
func tarOf(es []entry) ([]byte, error) {
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag = tar.TypeDir
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Users and groups of the images: distroless's (root, nobody, nonroot
// 65532), the sidecar's tender (1337, the UID capture exempts) and the
// pause image's 65535.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" +
		"tender:x:1337:1337::/nonexistent:/usr/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\ntender:x:1337:\n"
)

// etc is what every image has under /etc and the top directories.
func etc() []entry {
	return []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "tmp/", mode: 0o1777},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700},
	}
}

// caBundle is the machine's CA bundle (Debian's ca-certificates), which
// distroless carries too; absent, the images have none.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

func staticBase() ([]byte, error) {
	es := etc()
	if b, err := os.ReadFile(caBundle); err == nil {
		es = append(es, entry{name: "etc/ssl/", mode: 0o755}, entry{name: "etc/ssl/certs/", mode: 0o755},
			entry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: b})
	}
	return tarOf(es)
}

// debianBase lays out an unpacked set of Debian packages as bookworm
// does, with /bin, /sbin, /lib and /lib64 merged into /usr.
func debianBase(root string) ([]byte, error) {
	es := etc()
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.name] = true
	}
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		es = append(es, entry{name: d, link: "usr/" + d})
		seen[d] = true
	}
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		if top, _, _ := strings.Cut(name, "/"); top == "bin" || top == "sbin" || top == "lib" || top == "lib64" {
			name = "usr/" + name
		}
		if strings.HasPrefix(name, "usr/share/doc") || strings.HasPrefix(name, "usr/share/man") {
			return nil // bookworm-slim leaves these out too
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{name: name, mode: int64(info.Mode().Perm())}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		case d.IsDir():
			e.name += "/"
		default:
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
			n++
		}
		if !seen[e.name] {
			seen[e.name] = true
			es = append(es, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sidecar base: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("sidecar base %s holds no files (make images unpacks Debian's iptables into it)", root)
	}
	return tarOf(es)
}

// writeArchive writes img as an OCI image layout, tarred, its index
// naming it ref (containerd's import reads io.containerd.image.name).
func writeArchive(file string, img v1.Image, ref, tag string) error {
	dir, err := os.MkdirTemp("", "image-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return err
	}
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: path.Clean(filepath.ToSlash(rel)), Mode: 0o644, ModTime: epoch, Typeflag: tar.TypeReg}
		if d.IsDir() {
			h.Name, h.Mode, h.Typeflag = h.Name+"/", 0o755, tar.TypeDir
			return tw.WriteHeader(h)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp) //nolint:errcheck // the write already failed
		return err
	}
	return os.Rename(tmp, file)
}

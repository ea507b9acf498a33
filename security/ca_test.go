package security

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func verifyLeaf(t *testing.T, chain [][]byte, roots *x509.CertPool, at time.Time) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	return leaf
}

func TestSelfGeneratedSign(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ca := mustCA(t, CAOptions{Now: func() time.Time { return now }})
	if got, want := ca.TrustDomain(), "cluster.local"; got != want {
		t.Errorf("TrustDomain() = %q, want %q", got, want)
	}
	roots := ca.Roots()
	if len(roots) != 1 {
		t.Fatalf("got %d roots, want 1", len(roots))
	}
	root := roots[0]
	type rootFields struct {
		CN, O     string
		IsCA      bool
		MaxPath   int
		PubKeyAlg x509.PublicKeyAlgorithm
	}
	want := rootFields{CN: "tender root CA", O: "cluster.local", IsCA: true, MaxPath: 1, PubKeyAlg: x509.ECDSA}
	got := rootFields{CN: root.Subject.CommonName, O: strings.Join(root.Subject.Organization, ","), IsCA: root.IsCA, MaxPath: root.MaxPathLen, PubKeyAlg: root.PublicKeyAlgorithm}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("root (-want +got):\n%s", diff)
	}
	if root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root key usage %v, want certSign|crlSign", root.KeyUsage)
	}
	if got, want := root.NotAfter, now.Add(87600*time.Hour); !got.Equal(want) {
		t.Errorf("root NotAfter %v, want %v", got, want)
	}
	if !bytes.Equal(ca.Bundle(), EncodeCertificates(root)) {
		t.Error("Bundle is not the root")
	}
	id := ID{"cluster.local", "default", "web"}
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{name: "default", ttl: 0, want: 24 * time.Hour},
		{name: "negative is default", ttl: -time.Hour, want: 24 * time.Hour},
		{name: "asked", ttl: time.Hour, want: time.Hour},
		{name: "clamped", ttl: 30 * 24 * time.Hour, want: 168 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ca.Sign(newCSR(t, mustKey(t), nil), id, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 1 {
				t.Fatalf("chain of %d certificates, want 1 (the leaf)", len(chain))
			}
			leaf := verifyLeaf(t, chain, ca.RootPool(), now)
			if got, want := leaf.NotAfter.Sub(now), tt.want; got != want {
				t.Errorf("validity %v, want %v", got, want)
			}
			if got, want := leaf.NotBefore, now.Add(-5*time.Minute); !got.Equal(want) {
				t.Errorf("NotBefore %v, want %v", got, want)
			}
			checkLeaf(t, leaf, id)
		})
	}
}

// checkLeaf checks what every workload certificate carries.
func checkLeaf(t *testing.T, leaf *x509.Certificate, id ID) {
	t.Helper()
	var uris []string
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	if diff := cmp.Diff([]string{id.String()}, uris); diff != "" {
		t.Errorf("URI SANs (-want +got):\n%s", diff)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("other names: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("key usage %v, want digitalSignature|keyEncipherment", leaf.KeyUsage)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage); diff != "" {
		t.Errorf("ext key usage (-want +got):\n%s", diff)
	}
}

func TestSignIgnoresCSRNames(t *testing.T) {
	ca := mustCA(t, CAOptions{TrustDomain: "example.org"})
	evil, _ := url.Parse("spiffe://example.org/ns/kube-system/sa/admin")
	csr := newCSR(t, mustKey(t), &x509.CertificateRequest{
		DNSNames: []string{"kubernetes.default.svc"}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)},
		URIs: []*url.URL{evil}, EmailAddresses: []string{"root@example.org"},
	})
	id := ID{"example.org", "shop", "cart"}
	chain, err := ca.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, verifyLeaf(t, chain, ca.RootPool(), time.Now()), id)
}

func TestSignRefuses(t *testing.T) {
	ca := mustCA(t, CAOptions{})
	good := newCSR(t, mustKey(t), nil)
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0xff
	id := ID{"cluster.local", "default", "web"}
	tests := []struct {
		name    string
		csr     []byte
		id      ID
		wantErr error
	}{
		{name: "bad signature", csr: badSig, id: id, wantErr: ErrBadCSR},
		{name: "not a CSR", csr: []byte("hello"), id: id, wantErr: ErrBadCSR},
		{name: "other trust domain", csr: good, id: ID{"evil.org", "default", "web"}, wantErr: ErrBadID},
		{name: "bad namespace", csr: good, id: ID{"cluster.local", "a/b", "web"}, wantErr: ErrBadID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ca.Sign(tt.csr, tt.id, 0)
			if !errors.Is(err, tt.wantErr) || chain != nil {
				t.Errorf("Sign = %d certs, %v; want an error wrapping %v", len(chain), err, tt.wantErr)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca := mustCA(t, CAOptions{})
	id := ID{"cluster.local", "tender-system", "tender-controlplane"}
	cert, err := ca.Issue(id, []string{"tender-controlplane.tender-system.svc", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyLeaf(t, cert.Certificate, ca.RootPool(), time.Now())
	if err := leaf.VerifyHostname("tender-controlplane.tender-system.svc"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if got, err := IDFromCert(leaf); err != nil || got != id {
		t.Errorf("IDFromCert = %v, %v; want %v", got, err, id)
	}
	if !samePublicKey(cert.PrivateKey.(interface{ Public() crypto.PublicKey }).Public(), leaf.PublicKey) || cert.Leaf == nil {
		t.Error("the key does not match the leaf")
	}
}

// operatorFiles writes a root and an intermediate signed by it to dir and
// returns the file names.
type operatorPKI struct {
	root, inter                  *x509.Certificate
	rootKey, interKey            crypto.Signer
	certFile, keyFile, rootsFile string
}

func newOperatorPKI(t *testing.T, interTTL time.Duration) *operatorPKI {
	t.Helper()
	dir := t.TempDir()
	p := &operatorPKI{certFile: filepath.Join(dir, "ca-cert.pem"), keyFile: filepath.Join(dir, "ca-key.pem"), rootsFile: filepath.Join(dir, "roots.pem")}
	p.root, p.rootKey = testCert(t, caTemplate("operator root", 10*365*24*time.Hour), nil, nil)
	p.inter, p.interKey = testCert(t, caTemplate("operator intermediate", interTTL), p.root, p.rootKey)
	return p
}

func TestOperatorIntermediate(t *testing.T) {
	p := newOperatorPKI(t, 365*24*time.Hour)
	writeFile(t, p.certFile, EncodeCertificates(p.inter, p.root))
	writeFile(t, p.keyFile, keyPEM(t, p.interKey))
	ca := mustCA(t, CAOptions{CertFile: p.certFile, KeyFile: p.keyFile})
	if !bytes.Equal(ca.Bundle(), EncodeCertificates(p.root)) {
		t.Errorf("Bundle:\n%s\nwant the operator's root", ca.Bundle())
	}
	id := ID{"cluster.local", "default", "web"}
	chain, err := ca.Sign(newCSR(t, mustKey(t), nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !bytes.Equal(chain[1], p.inter.Raw) {
		t.Fatalf("chain of %d certificates, want the leaf and the intermediate", len(chain))
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.root)
	checkLeaf(t, verifyLeaf(t, chain, pool, time.Now()), id)
	if err := ca.RotateRoot(context.Background()); !errors.Is(err, ErrOperatorCA) {
		t.Errorf("RotateRoot = %v, want ErrOperatorCA", err)
	}
}

func TestOperatorRootInRootsFile(t *testing.T) {
	p := newOperatorPKI(t, 365*24*time.Hour)
	writeFile(t, p.certFile, EncodeCertificates(p.inter))
	writeFile(t, p.keyFile, keyPEM(t, p.interKey))
	if _, err := NewCA(context.Background(), CAOptions{CertFile: p.certFile, KeyFile: p.keyFile}); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Errorf("without its root: %v, want an error saying it does not chain to a root", err)
	}
	writeFile(t, p.rootsFile, EncodeCertificates(p.root))
	ca := mustCA(t, CAOptions{CertFile: p.certFile, KeyFile: p.keyFile, RootsFile: p.rootsFile})
	if !bytes.Equal(ca.Bundle(), EncodeCertificates(p.root)) {
		t.Error("Bundle is not the root of the roots file")
	}
}

func TestOperatorRootSigning(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	p := newOperatorPKI(t, time.Hour)
	writeFile(t, p.certFile, EncodeCertificates(p.root))
	writeFile(t, p.keyFile, keyPEM(t, p.rootKey))
	ca := mustCA(t, CAOptions{CertFile: p.certFile, KeyFile: p.keyFile})
	chain, err := ca.Sign(newCSR(t, mustKey(t), nil), ID{"cluster.local", "a", "b"}, 0)
	if err != nil || len(chain) != 1 {
		t.Fatalf("Sign = %d certificates, %v; want only the leaf", len(chain), err)
	}

	// A short-lived intermediate: certificates never outlive it.
	writeFile(t, p.certFile, EncodeCertificates(p.inter, p.root))
	writeFile(t, p.keyFile, keyPEM(t, p.interKey))
	ca = mustCA(t, CAOptions{CertFile: p.certFile, KeyFile: p.keyFile, Now: func() time.Time { return now }})
	chain, err = ca.Sign(newCSR(t, mustKey(t), nil), ID{"cluster.local", "a", "b"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if !leaf.NotAfter.Equal(p.inter.NotAfter) {
		t.Errorf("NotAfter %v, want the intermediate's %v", leaf.NotAfter, p.inter.NotAfter)
	}
}

func TestOperatorRefused(t *testing.T) {
	p := newOperatorPKI(t, 365*24*time.Hour)
	otherKey := mustKey(t)
	expired, expiredKey := testCert(t, &x509.Certificate{
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, nil)
	leaf, leafKey := testCert(t, leafTemplate(ID{"cluster.local", "a", "b"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)), p.root, p.rootKey)
	noSign, noSignKey := testCert(t, &x509.Certificate{
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}, nil, nil)
	tests := []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{name: "mismatched key", cert: EncodeCertificates(p.inter, p.root), key: keyPEM(t, otherKey), want: "does not match"},
		{name: "expired", cert: EncodeCertificates(expired), key: keyPEM(t, expiredKey), want: "expired"},
		{name: "not a CA", cert: EncodeCertificates(leaf, p.root), key: keyPEM(t, leafKey), want: "not a CA"},
		{name: "no certSign", cert: EncodeCertificates(noSign), key: keyPEM(t, noSignKey), want: "certSign"},
		{name: "no certificate", cert: []byte("nothing"), key: keyPEM(t, p.interKey), want: "no PEM certificate"},
		{name: "no key", cert: EncodeCertificates(p.inter, p.root), key: EncodeCertificates(p.root), want: "no PEM private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			writeFile(t, p.certFile, tt.cert)
			writeFile(t, p.keyFile, tt.key)
			_, err := NewCA(context.Background(), CAOptions{CertFile: p.certFile, KeyFile: p.keyFile})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewCA: %v; want an error saying %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), p.certFile) && !strings.Contains(err.Error(), p.keyFile) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	if _, err := NewCA(context.Background(), CAOptions{CertFile: p.certFile}); err == nil {
		t.Error("a certificate file without a key file was accepted")
	}
	if _, err := NewCA(context.Background(), CAOptions{CertFile: filepath.Join(t.TempDir(), "missing"), KeyFile: p.keyFile}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

func TestOptionsRefused(t *testing.T) {
	tests := []struct {
		name string
		opts CAOptions
	}{
		{name: "bad trust domain", opts: CAOptions{TrustDomain: "Bad/TD"}},
		{name: "default above maximum", opts: CAOptions{WorkloadTTL: 48 * time.Hour, MaxWorkloadTTL: 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCA(context.Background(), tt.opts); err == nil {
				t.Error("NewCA accepted the options")
			}
		})
	}
}

func TestRotateRoot(t *testing.T) {
	ctx := context.Background()
	store := DirStore{Dir: t.TempDir()}
	ca := mustCA(t, CAOptions{Store: store})
	changed := make(chan struct{}, 1)
	ca.OnBundleChange(func() { changed <- struct{}{} })
	oldRoot := ca.Roots()[0]
	id := ID{"cluster.local", "default", "web"}
	oldChain, err := ca.Sign(newCSR(t, mustKey(t), nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.RotateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("OnBundleChange func not called")
	}
	roots := ca.Roots()
	if len(roots) != 2 || roots[0].Equal(oldRoot) || !roots[1].Equal(oldRoot) {
		t.Fatalf("roots after rotation: %d, want the new one then the old one", len(roots))
	}
	// The overlap: the old root's certificates still verify.
	verifyLeaf(t, oldChain, ca.RootPool(), time.Now())
	newChain, err := ca.Sign(newCSR(t, mustKey(t), nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	verifyLeaf(t, newChain, pool, time.Now())

	// The overlap survives a restart.
	again := mustCA(t, CAOptions{Store: store})
	if diff := cmp.Diff(ca.Bundle(), again.Bundle()); diff != "" {
		t.Errorf("bundle after restart (-want +got):\n%s", diff)
	}
	verifyLeaf(t, oldChain, again.RootPool(), time.Now())
}

func TestRotateRootPrunesExpired(t *testing.T) {
	t0 := time.Now()
	now := t0
	ca := mustCA(t, CAOptions{RootTTL: time.Hour, Now: func() time.Time { return now }})
	first := ca.Roots()[0]
	now = t0.Add(40 * time.Minute)
	if err := ca.RotateRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(50 * time.Minute)
	if err := ca.RotateRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(ca.Roots()); n != 3 {
		t.Fatalf("%d roots, want 3", n)
	}
	if ca.prune() {
		t.Error("prune dropped a root still valid")
	}
	now = t0.Add(70 * time.Minute) // the first root expired
	if !ca.prune() {
		t.Error("prune dropped nothing")
	}
	roots := ca.Roots()
	if len(roots) != 2 || slices.ContainsFunc(roots, first.Equal) {
		t.Errorf("%d roots, want 2 without the expired one", len(roots))
	}
}

func TestWatchOperatorFiles(t *testing.T) {
	p := newOperatorPKI(t, 365*24*time.Hour)
	writeFile(t, p.certFile, EncodeCertificates(p.inter, p.root))
	writeFile(t, p.keyFile, keyPEM(t, p.interKey))
	writeFile(t, p.rootsFile, EncodeCertificates(p.root))
	logs := newLogRecorder()
	ca := mustCA(t, CAOptions{CertFile: p.certFile, KeyFile: p.keyFile, RootsFile: p.rootsFile, Logger: slog.New(logs)})
	changed := make(chan struct{}, 10)
	ca.OnBundleChange(func() { changed <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ca.Watch(ctx, 10*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()

	// A bad file: logged, the CA keeps what it had.
	writeFile(t, p.certFile, []byte("garbage"))
	logs.waitLog(t, "do not load")
	if _, err := ca.Sign(newCSR(t, mustKey(t), nil), ID{"cluster.local", "a", "b"}, 0); err != nil {
		t.Errorf("Sign after a bad reload: %v", err)
	}
	writeFile(t, p.certFile, EncodeCertificates(p.inter, p.root))

	// The next root, added to the roots file for the overlap.
	next, _ := testCert(t, caTemplate("next root", 24*time.Hour), nil, nil)
	writeFile(t, p.rootsFile, EncodeCertificates(p.root, next))
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("OnBundleChange func not called")
	}
	if diff := cmp.Diff(EncodeCertificates(p.root, next), ca.Bundle()); diff != "" {
		t.Errorf("Bundle (-want +got):\n%s", diff)
	}
}

func TestWatchStoreRotatedElsewhere(t *testing.T) {
	store := DirStore{Dir: t.TempDir()}
	first := mustCA(t, CAOptions{Store: store})
	second := mustCA(t, CAOptions{Store: store})
	if !bytes.Equal(first.Bundle(), second.Bundle()) {
		t.Fatal("two CAs on one store have different roots")
	}
	changed := make(chan struct{}, 10)
	second.OnBundleChange(func() { changed <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { second.Watch(ctx, 10*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()

	if err := first.RotateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	// The files of a DirStore are written one after the other: the
	// second CA may see the new root before its previous ones.
	deadline := time.After(10 * time.Second)
	for !bytes.Equal(first.Bundle(), second.Bundle()) {
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the second CA's bundle is not the first's")
		}
	}
	chain, err := second.Sign(newCSR(t, mustKey(t), nil), ID{"cluster.local", "a", "b"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(first.Roots()[0])
	verifyLeaf(t, chain, pool, time.Now())
}

func TestWatchNothing(t *testing.T) {
	ca := mustCA(t, CAOptions{})
	ca.Watch(context.Background(), time.Millisecond) // returns at once
}

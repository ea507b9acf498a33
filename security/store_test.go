package security

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDirStore(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ca")
	store := DirStore{Dir: dir}
	cert, key, err := store.Load(ctx)
	if err != nil || cert != nil || key != nil {
		t.Fatalf("Load of an empty store = %q, %q, %v; want nothing", cert, key, err)
	}
	ca := mustCA(t, CAOptions{Store: store})
	fi, err := os.Stat(filepath.Join(dir, RootKeyKey))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, PreviousRootCertKey)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("previous roots file without a rotation: %v", err)
	}
	again := mustCA(t, CAOptions{Store: store})
	if diff := cmp.Diff(ca.Bundle(), again.Bundle()); diff != "" {
		t.Errorf("second CA on the store made another root (-want +got):\n%s", diff)
	}
	if err := ca.RotateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, PreviousRootCertKey)); err != nil || !bytes.Equal(b, EncodeCertificates(ca.Roots()[1])) {
		t.Errorf("previous roots file %q, %v; want the old root", b, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files in the store, want 3 (no temporary file left)", len(entries))
	}

	// Half a root is refused.
	if err := os.Remove(filepath.Join(dir, RootKeyKey)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Load(ctx); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Load without a key: %v, want an error", err)
	}
}

func TestSplitJoinRoots(t *testing.T) {
	root, _ := testCert(t, caTemplate("root", time.Hour), nil, nil)
	old, _ := testCert(t, caTemplate("old root", time.Hour), nil, nil)
	key := []byte("-----BEGIN EC PRIVATE KEY-----\nk\n-----END EC PRIVATE KEY-----")
	tests := []struct {
		name    string
		certPEM []byte
	}{
		{name: "root alone", certPEM: EncodeCertificates(root)},
		{name: "root and previous", certPEM: EncodeCertificates(root, old)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotRoot, prev, err := SplitRoots(tt.certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if want := EncodeCertificates(root); !bytes.Equal(gotRoot, want) {
				t.Errorf("SplitRoots root = %q, want %q", gotRoot, want)
			}
			certPEM, keyPEM, err := JoinRoots(gotRoot, key, prev)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(certPEM, tt.certPEM) {
				t.Errorf("JoinRoots after SplitRoots = %q, want %q", certPEM, tt.certPEM)
			}
			if want := append(append([]byte{}, key...), '\n'); !bytes.Equal(keyPEM, want) {
				t.Errorf("JoinRoots key = %q, want %q", keyPEM, want)
			}
		})
	}
	if _, _, err := SplitRoots([]byte("not PEM")); err == nil {
		t.Error("SplitRoots of no PEM: no error")
	}
	if c, k, err := JoinRoots(nil, []byte(" \n"), nil); c != nil || k != nil || err != nil {
		t.Errorf("JoinRoots of nothing = %q, %q, %v; want nothing", c, k, err)
	}
	for _, half := range [][2][]byte{{EncodeCertificates(root), nil}, {nil, key}} {
		if _, _, err := JoinRoots(half[0], half[1], nil); err == nil || !strings.Contains(err.Error(), "missing") {
			t.Errorf("JoinRoots of half a root: %v, want an error saying what is missing", err)
		}
	}
}

package security

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrStoreConflict is returned by Store.Save when another writer saved
// since the last Load.
var ErrStoreConflict = errors.New("store: written by another replica")

// Store keeps the CA's self-generated root: its certificate and key, PEM.
// certPEM holds the root first, then the previous roots that stay trusted
// after a RotateRoot (newest first), so the overlap survives restarts.
type Store interface {
	// Load returns what was saved; both nil, and a nil error, when
	// nothing is stored yet.
	Load(ctx context.Context) (certPEM, keyPEM []byte, err error)
	// Save stores the root, replacing what was there. It returns
	// ErrStoreConflict when another writer got there first.
	Save(ctx context.Context, certPEM, keyPEM []byte) error
}

// Names of the files of a DirStore and of the keys of the Secret of a
// kube.SecretStore (package security/kube).
const (
	RootCertKey         = "root-cert.pem"
	RootKeyKey          = "root-key.pem"
	PreviousRootCertKey = "previous-root-cert.pem"
)

// DirStore keeps the root in the directory Dir: root-cert.pem, root-key.pem
// (mode 0600) and previous-root-cert.pem (the previous roots, absent when
// there are none), each written atomically (a temporary file renamed).
// A directory has a single writer: Save overwrites whatever is there.
type DirStore struct{ Dir string }

// Load implements Store.
func (d DirStore) Load(_ context.Context) (certPEM, keyPEM []byte, err error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(d.Dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	cert, err := read(RootCertKey)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", d.Dir, err)
	}
	key, err := read(RootKeyKey)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", d.Dir, err)
	}
	prev, err := read(PreviousRootCertKey)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", d.Dir, err)
	}
	certPEM, keyPEM, err = JoinRoots(cert, key, prev)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", d.Dir, err)
	}
	return certPEM, keyPEM, nil
}

// Save implements Store.
func (d DirStore) Save(_ context.Context, certPEM, keyPEM []byte) error {
	root, prev, err := SplitRoots(certPEM)
	if err != nil {
		return fmt.Errorf("store %s: %w", d.Dir, err)
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return fmt.Errorf("store %s: %w", d.Dir, err)
	}
	// The previous roots first, then the key, then the certificate: a
	// reader in between sees the old root with its old key or a
	// mismatched pair, which it refuses, never a new root without its
	// previous ones.
	prevPath := filepath.Join(d.Dir, PreviousRootCertKey)
	if len(prev) == 0 {
		if err := os.Remove(prevPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store %s: %w", d.Dir, err)
		}
	} else if err := WriteFileAtomic(prevPath, prev, 0o644); err != nil {
		return fmt.Errorf("store %s: %w", d.Dir, err)
	}
	if err := WriteFileAtomic(filepath.Join(d.Dir, RootKeyKey), keyPEM, 0o600); err != nil {
		return fmt.Errorf("store %s: %w", d.Dir, err)
	}
	if err := WriteFileAtomic(filepath.Join(d.Dir, RootCertKey), root, 0o644); err != nil {
		return fmt.Errorf("store %s: %w", d.Dir, err)
	}
	return nil
}

// WriteFileAtomic replaces path with data (mode, synced): a temporary
// file in the same directory renamed over it, so a reader sees the old
// content or the new, never a part.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// JoinRoots is what Store.Load does with what a Store keeps under
// RootCertKey (cert), RootKeyKey (key) and PreviousRootCertKey (prev, the
// previous roots, empty when there are none): it returns certPEM, the
// root then the previous roots, and keyPEM. Nothing stored (cert and key
// empty) gives all nil and no error; a root without its key, or a key
// without its root, is an error. SplitRoots undoes it for Store.Save.
func JoinRoots(cert, key, prev []byte) (certPEM, keyPEM []byte, err error) {
	cert, key = bytes.TrimSpace(cert), bytes.TrimSpace(key)
	switch {
	case len(cert) == 0 && len(key) == 0:
		return nil, nil, nil
	case len(cert) == 0:
		return nil, nil, fmt.Errorf("%s missing while %s is there", RootCertKey, RootKeyKey)
	case len(key) == 0:
		return nil, nil, fmt.Errorf("%s missing while %s is there", RootKeyKey, RootCertKey)
	}
	out := append(append([]byte{}, cert...), '\n')
	if prev = bytes.TrimSpace(prev); len(prev) > 0 {
		out = append(append(out, prev...), '\n')
	}
	return out, append(append([]byte{}, key...), '\n'), nil
}

// SplitRoots splits the certPEM given to Store.Save into what a Store
// keeps under RootCertKey, root (its first PEM block), and under
// PreviousRootCertKey, prev (the rest, the previous roots; empty when
// there are none). It is an error when certPEM holds no PEM block.
func SplitRoots(certPEM []byte) (root, prev []byte, err error) {
	block, rest := pem.Decode(certPEM)
	if block == nil {
		return nil, nil, errors.New("no PEM certificate to save")
	}
	if rest = bytes.TrimSpace(rest); len(rest) > 0 {
		rest = append(rest, '\n')
	}
	return pem.EncodeToMemory(block), rest, nil
}

var _ Store = DirStore{}

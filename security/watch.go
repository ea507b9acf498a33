package security

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"slices"
	"time"
)

// Watch reloads CertFile, KeyFile and RootsFile when they change (their
// size, modification time or inode, checked every interval; 5 s when
// interval <= 0), and, for a self-generated root with a Store, reads the
// Store every interval to pick up a root another replica rotated. A bad
// reload is logged and the CA keeps what it had. Previous roots are
// dropped from Bundle once expired. Watch returns when ctx ends, or at
// once when there is no file and no Store to watch. Run it once, in its own
// goroutine.
func (ca *CA) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	files := ca.files()
	pollStore := ca.opts.CertFile == "" && ca.opts.Store != nil
	if len(files) == 0 && !pollStore {
		return
	}
	stamps := ca.stamps
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed := false
		if now := statFiles(files); !slices.EqualFunc(now, stamps, sameStamp) {
			stamps = now
			changed = ca.reloadFiles() || changed
		}
		if pollStore {
			changed = ca.reloadStore(ctx) || changed
		}
		changed = ca.prune() || changed
		if changed {
			ca.notify()
		}
	}
}

// files returns the files the CA reads.
func (ca *CA) files() []string {
	var files []string
	for _, f := range []string{ca.opts.CertFile, ca.opts.KeyFile, ca.opts.RootsFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}

// reloadFiles rebuilds the state from the files; it reports whether
// Bundle changed.
func (ca *CA) reloadFiles() bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	cur := ca.state.Load()
	var next *caState
	var err error
	if cur.operator {
		next, err = ca.loadOperator()
	} else {
		var extra []*x509.Certificate
		if extra, err = ca.loadRootsFile(); err == nil {
			next = ca.selfState(cur.key, cur.cert, cur.previous, extra)
		}
	}
	if err != nil {
		ca.log.Error("CA files changed but do not load: keeping the previous ones", "error", err)
		return false
	}
	ca.state.Store(next)
	ca.log.Info("CA files reloaded", "signer", next.cert.Subject.String(), "signer_not_after", next.cert.NotAfter, "roots", len(next.roots))
	return !bytes.Equal(cur.bundle, next.bundle)
}

// reloadStore adopts the Store's root when another replica changed it; it
// reports whether Bundle changed.
func (ca *CA) reloadStore(ctx context.Context) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	stored, err := ca.loadStored(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ca.log.Error("cannot read the root store: keeping the current root", "error", err)
		}
		return false
	}
	cur := ca.state.Load()
	if stored == nil {
		return false
	}
	next := ca.selfState(stored.key, stored.cert, stored.previous, cur.extra)
	if next.cert.Equal(cur.cert) && bytes.Equal(next.bundle, cur.bundle) {
		return false
	}
	if !ca.opts.Now().Before(stored.cert.NotAfter) {
		ca.log.Error("the root in the store expired: keeping the current root", "root_not_after", stored.cert.NotAfter)
		return false
	}
	ca.state.Store(next)
	ca.log.Info("root changed in the store (rotated by another replica): using it", "root_not_after", stored.cert.NotAfter, "previous_roots", len(next.previous))
	return !bytes.Equal(cur.bundle, next.bundle)
}

// prune drops expired previous roots; it reports whether Bundle changed.
func (ca *CA) prune() bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	cur := ca.state.Load()
	now := ca.opts.Now()
	if cur.operator || !slices.ContainsFunc(cur.previous, func(c *x509.Certificate) bool { return !now.Before(c.NotAfter) }) {
		return false
	}
	next := ca.selfState(cur.key, cur.cert, cur.previous, cur.extra)
	ca.state.Store(next)
	return !bytes.Equal(cur.bundle, next.bundle)
}

// fileStamp identifies a version of a file.
type fileStamp struct {
	info os.FileInfo // nil when the file could not be read
	err  string
}

func statFiles(files []string) []fileStamp {
	out := make([]fileStamp, len(files))
	for i, f := range files {
		fi, err := os.Stat(f) // follows symlinks: a Secret volume swaps its ..data link
		if err != nil {
			out[i].err = err.Error()
			continue
		}
		out[i].info = fi
	}
	return out
}

func sameStamp(a, b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil && a.err == b.err
	}
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime())
}

package security

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// ErrUnauthenticated is wrapped by every error of an Authenticator.
var ErrUnauthenticated = errors.New("unauthenticated")

// Caller is an authenticated workload.
type Caller struct{ Namespace, ServiceAccount string }

// Authenticator says who a bearer token belongs to.
type Authenticator interface {
	// Authenticate returns the caller the token belongs to, or an error
	// that says why not (it is logged and returned to the client),
	// wrapping ErrUnauthenticated.
	Authenticate(ctx context.Context, token string) (Caller, error)
	// Name names the authenticator in logs: "bootstrap-token",
	// "kubernetes".
	Name() string
}

// authError is a reason to refuse a token: its message is the reason
// alone, and it wraps ErrUnauthenticated and the cause, if any.
type authError struct{ err error }

func (e *authError) Error() string   { return e.err.Error() }
func (e *authError) Unwrap() []error { return []error{ErrUnauthenticated, e.err} }

// Refuse returns the error an Authenticator gives for a token it does
// not accept: it wraps ErrUnauthenticated, and its message is
// fmt.Sprintf(format, args...), the reason alone; %w in format wraps a
// cause too.
func Refuse(format string, args ...any) error {
	return &authError{err: fmt.Errorf(format, args...)}
}

// BootstrapTokens authenticates the tokens of a file of lines "TOKEN
// NAMESPACE SERVICE_ACCOUNT" (blank lines and lines starting with '#'
// ignored). The file is read again when its size, modification time or
// inode change, checked at each call; while it does not load, every token
// is refused. Tokens are compared in constant time.
type BootstrapTokens struct {
	path string

	mu      sync.Mutex // guards stamp, entries and loadErr
	stamp   fileStamp
	entries []tokenEntry
	loadErr error
}

type tokenEntry struct {
	sum    [sha256.Size]byte
	caller Caller
}

// NewBootstrapTokens reads the token file path once to check it.
func NewBootstrapTokens(path string) (*BootstrapTokens, error) {
	b := &BootstrapTokens{path: path}
	b.stamp = statFiles([]string{path})[0]
	b.entries, b.loadErr = readTokens(path)
	if b.loadErr != nil {
		return nil, b.loadErr
	}
	return b, nil
}

// Name implements Authenticator.
func (b *BootstrapTokens) Name() string { return "bootstrap-token" }

// Authenticate implements Authenticator.
func (b *BootstrapTokens) Authenticate(_ context.Context, token string) (Caller, error) {
	entries, err := b.current()
	if err != nil {
		return Caller{}, Refuse("%w", err)
	}
	sum := sha256.Sum256([]byte(token))
	var found Caller
	match := 0
	for _, e := range entries { // all of them, whatever matches: constant time
		eq := subtle.ConstantTimeCompare(sum[:], e.sum[:])
		if eq == 1 {
			found = e.caller
		}
		match |= eq
	}
	if match != 1 || token == "" {
		return Caller{}, Refuse("unknown bootstrap token")
	}
	return found, nil
}

// current returns the entries, reading the file again when it changed.
func (b *BootstrapTokens) current() ([]tokenEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := statFiles([]string{b.path})[0]; !sameStamp(now, b.stamp) {
		b.stamp = now
		b.entries, b.loadErr = readTokens(b.path)
	}
	return b.entries, b.loadErr
}

func readTokens(path string) ([]tokenEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap tokens: %w", err)
	}
	var entries []tokenEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("bootstrap tokens: %s line %d: want TOKEN NAMESPACE SERVICE_ACCOUNT, got %d fields", path, n, len(f))
		}
		for _, s := range f[1:] {
			if err := checkSegment(s); err != nil {
				return nil, fmt.Errorf("bootstrap tokens: %s line %d: %w", path, n, err)
			}
		}
		e := tokenEntry{sum: sha256.Sum256([]byte(f[0])), caller: Caller{Namespace: f[1], ServiceAccount: f[2]}}
		if slices.ContainsFunc(entries, func(o tokenEntry) bool { return o.sum == e.sum }) {
			return nil, fmt.Errorf("bootstrap tokens: %s line %d: the token appears twice", path, n)
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bootstrap tokens: %s: %w", path, err)
	}
	return entries, nil
}

// Chain tries its authenticators in order: the first success wins;
// otherwise its error joins their reasons, each prefixed with the
// authenticator's name.
type Chain []Authenticator

// Name implements Authenticator.
func (c Chain) Name() string {
	names := make([]string, len(c))
	for i, a := range c {
		names[i] = a.Name()
	}
	return strings.Join(names, ",")
}

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, token string) (Caller, error) {
	if len(c) == 0 {
		return Caller{}, Refuse("no authenticator configured")
	}
	var errs []error
	var msgs []string
	for _, a := range c {
		caller, err := a.Authenticate(ctx, token)
		if err == nil {
			return caller, nil
		}
		errs = append(errs, err)
		msgs = append(msgs, a.Name()+": "+err.Error())
	}
	return Caller{}, &chainError{msg: strings.Join(msgs, "; "), errs: errs}
}

// chainError joins the reasons of a Chain on one line.
type chainError struct {
	msg  string
	errs []error
}

func (e *chainError) Error() string { return e.msg }
func (e *chainError) Unwrap() []error {
	return append([]error{ErrUnauthenticated}, e.errs...)
}

var (
	_ Authenticator = (*BootstrapTokens)(nil)
	_ Authenticator = Chain(nil)
)

package security

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBootstrapTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, []byte("# token namespace service-account\n\nabc123 default web\n  xyz789   shop  cart  \n"))
	b, err := NewBootstrapTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != "bootstrap-token" {
		t.Errorf("Name() = %q", b.Name())
	}
	check := func(t *testing.T, token string, want Caller, wantOK bool) {
		t.Helper()
		got, err := b.Authenticate(context.Background(), token)
		if !wantOK {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Authenticate(%q) = %v, %v; want an error wrapping ErrUnauthenticated", token, got, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Authenticate(%q): %v", token, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Authenticate(%q) (-want +got):\n%s", token, diff)
		}
	}
	tests := []struct {
		token  string
		want   Caller
		wantOK bool
	}{
		{token: "abc123", want: Caller{"default", "web"}, wantOK: true},
		{token: "xyz789", want: Caller{"shop", "cart"}, wantOK: true},
		{token: "abc12"},
		{token: "abc1234"},
		{token: ""},
		{token: "default"},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) { check(t, tt.token, tt.want, tt.wantOK) })
	}

	// The file changes: the next call sees it.
	writeFile(t, path, []byte("new456 payments api\n"))
	check(t, "abc123", Caller{}, false)
	check(t, "new456", Caller{"payments", "api"}, true)

	// A broken file refuses every token until it is fixed.
	writeFile(t, path, []byte("new456 payments\n"))
	_, err = b.Authenticate(context.Background(), "new456")
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("with a broken file: %v, want an error naming line 1", err)
	}
	writeFile(t, path, []byte("new456 payments api\n"))
	check(t, "new456", Caller{"payments", "api"}, true)
}

func TestBootstrapTokensMalformed(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{name: "two fields", content: "# c\nabc default\n", want: "line 2"},
		{name: "four fields", content: "abc default web extra\n", want: "line 1"},
		{name: "bad namespace", content: "ok a b\n\nabc de/fault web\n", want: "line 3"},
		{name: "duplicate token", content: "abc a b\nabc c d\n", want: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens")
			writeFile(t, path, []byte(tt.content))
			_, err := NewBootstrapTokens(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewBootstrapTokens: %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := NewBootstrapTokens(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

// refuser is an Authenticator that refuses every token with reason,
// counting the calls.
type refuser struct {
	name, reason string
	calls        atomic.Int32
}

func (r *refuser) Name() string { return r.name }

func (r *refuser) Authenticate(context.Context, string) (Caller, error) {
	r.calls.Add(1)
	return Caller{}, Refuse("%s", r.reason)
}

func TestChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, []byte("boot default web\n"))
	boot, err := NewBootstrapTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	other := &refuser{name: "kubernetes", reason: "token review: not authenticated: invalid bearer token"}
	chain := Chain{boot, other}
	if got, want := chain.Name(), "bootstrap-token,kubernetes"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	got, err := chain.Authenticate(context.Background(), "boot")
	if err != nil || got != (Caller{"default", "web"}) || other.calls.Load() != 0 {
		t.Errorf("Authenticate = %v, %v after %d calls of the second; want the bootstrap token's caller and no call", got, err, other.calls.Load())
	}
	_, err = chain.Authenticate(context.Background(), "nope")
	want := "bootstrap-token: unknown bootstrap token; kubernetes: token review: not authenticated: invalid bearer token"
	if !errors.Is(err, ErrUnauthenticated) || err.Error() != want {
		t.Errorf("Authenticate = %v, want %q wrapping ErrUnauthenticated", err, want)
	}
	if _, err := (Chain{}).Authenticate(context.Background(), "x"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("empty chain: %v, want ErrUnauthenticated", err)
	}
}

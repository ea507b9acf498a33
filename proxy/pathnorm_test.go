package proxy

import (
	"net/http/httptest"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		target, want, app string
		ok                bool
	}{
		{"/greet", "/greet", "/greet", true},
		{"/a/b/", "/a/b/", "/a/b/", true},
		{"//admin", "/admin", "/admin", true},
		{"/./admin", "/admin", "/admin", true},
		{"/x/../admin", "/admin", "/admin", true},
		{"/../../admin", "/admin", "/admin", true},
		{"/public%3F/../admin", "/admin", "/admin", true},
		{"/public%3Fx", "/public%3Fx", "/public?x", true},
		{"/a%2Fb", "", "", false},
		{"/a%5cb", "", "", false},
		{"/%41dmin", "/Admin", "/Admin", true},
		{"/a/.", "/a/", "/a/", true},
	} {
		r := httptest.NewRequest("GET", "http://greeter"+tc.target, nil)
		got, ok := normalizePath(r)
		if ok != tc.ok || got != tc.want || (ok && r.URL.Path != tc.app) {
			t.Errorf("%s: got %q ok=%v (app gets %q), want %q ok=%v (app gets %q)", tc.target, got, ok, r.URL.Path, tc.want, tc.ok, tc.app)
		}
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/greet", "//a/../b", "/a%3F/../b", "/%2e%2e/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r := httptest.NewRequest("GET", "http://greeter/", nil)
		r.URL.Path = target
		got, ok := normalizePath(r)
		if !ok {
			return
		}
		if got == "" || got[0] != '/' {
			t.Fatalf("%q: normalised to %q", target, got)
		}
		if again := cleanPath(r.URL.Path); again != r.URL.Path {
			t.Fatalf("%q: not idempotent: %q then %q", target, r.URL.Path, again)
		}
	})
}

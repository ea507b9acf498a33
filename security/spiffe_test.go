package security

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseID(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr bool
	}{
		{in: "spiffe://cluster.local/ns/default/sa/web", want: ID{"cluster.local", "default", "web"}},
		{in: "spiffe://my-td_1.example/ns/kube-system/sa/default", want: ID{"my-td_1.example", "kube-system", "default"}},
		{in: "spiffe://td/ns/a.b/sa/Web_1", want: ID{"td", "a.b", "Web_1"}},
		{in: "", wantErr: true},
		{in: "https://cluster.local/ns/default/sa/web", wantErr: true},
		{in: "SPIFFE://cluster.local/ns/default/sa/web", wantErr: true},
		{in: "spiffe:///ns/default/sa/web", wantErr: true},
		{in: "spiffe://Cluster.local/ns/default/sa/web", wantErr: true},
		{in: "spiffe://cluster.local:8080/ns/default/sa/web", wantErr: true},
		{in: "spiffe://user@cluster.local/ns/default/sa/web", wantErr: true},
		{in: "spiffe://cluster.local", wantErr: true},
		{in: "spiffe://cluster.local/", wantErr: true},
		{in: "spiffe://cluster.local/ns/default", wantErr: true},
		{in: "spiffe://cluster.local/ns/default/sa/", wantErr: true},
		{in: "spiffe://cluster.local/ns//sa/web", wantErr: true},
		{in: "spiffe://cluster.local/ns/default/sa/web/", wantErr: true},
		{in: "spiffe://cluster.local/ns/default/sa/web/x", wantErr: true},
		{in: "spiffe://cluster.local/sa/web/ns/default", wantErr: true},
		{in: "spiffe://cluster.local/ns/../sa/web", wantErr: true},
		{in: "spiffe://cluster.local/ns/default/sa/web?x=1", wantErr: true},
		{in: "spiffe://cluster.local/ns/default/sa/web#f", wantErr: true},
		{in: "spiffe://cluster.local/ns/def%41ult/sa/web", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseID(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadID) {
					t.Fatalf("ParseID(%q) = %v, %v; want an error wrapping ErrBadID", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseID(%q) (-want +got):\n%s", tt.in, diff)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestIDFromCert(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name    string
		uris    []*url.URL
		want    ID
		wantErr bool
	}{
		{name: "one", uris: []*url.URL{u("spiffe://td/ns/a/sa/b")}, want: ID{"td", "a", "b"}},
		{name: "with another URI", uris: []*url.URL{u("https://example.com/"), u("spiffe://td/ns/a/sa/b")}, want: ID{"td", "a", "b"}},
		{name: "none", wantErr: true},
		{name: "two", uris: []*url.URL{u("spiffe://td/ns/a/sa/b"), u("spiffe://td/ns/a/sa/c")}, wantErr: true},
		{name: "malformed", uris: []*url.URL{u("spiffe://td/x/a")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IDFromCert(&x509.Certificate{URIs: tt.uris})
			if tt.wantErr {
				if !errors.Is(err, ErrBadID) {
					t.Fatalf("got %v, %v; want an error wrapping ErrBadID", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/default/sa/web", "spiffe://td/ns/a/sa/b/c", "spiffe://", "spiffe://a/ns/%2F/sa/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Errorf("ParseID(%q).String() = %q", s, id.String())
		}
		if err := id.check(); err != nil {
			t.Errorf("ParseID(%q) = %v, which check refuses: %v", s, id, err)
		}
		if got := id.url().String(); got != s {
			t.Errorf("ParseID(%q).url() = %q", s, got)
		}
	})
}

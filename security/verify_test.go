package security

import (
	"crypto"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVerifyPeer(t *testing.T) {
	now := time.Now()
	root, rootKey := testCert(t, caTemplate("root", 24*time.Hour), nil, nil)
	inter, interKey := testCert(t, caTemplate("intermediate", 24*time.Hour), root, rootKey)
	foreign, foreignKey := testCert(t, caTemplate("foreign", 24*time.Hour), nil, nil)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	id := ID{"cluster.local", "default", "web"}
	leaf := func(id ID, notBefore, notAfter time.Time, parent *x509.Certificate, key crypto.Signer) []byte {
		c, _ := testCert(t, leafTemplate(id, notBefore, notAfter), parent, key)
		return c.Raw
	}
	valid := func(parent *x509.Certificate, key crypto.Signer) []byte {
		return leaf(id, now.Add(-time.Minute), now.Add(time.Hour), parent, key)
	}
	noID, _ := testCert(t, &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, root, rootKey)
	tests := []struct {
		name    string
		certs   [][]byte
		noRoots bool
		want    ID
		wantErr string
	}{
		{name: "good", certs: [][]byte{valid(root, rootKey)}, want: id},
		{name: "good through an intermediate", certs: [][]byte{valid(inter, interKey), inter.Raw}, want: id},
		{name: "intermediate missing", certs: [][]byte{valid(inter, interKey)}, wantErr: "unknown authority"},
		{name: "expired", certs: [][]byte{leaf(id, now.Add(-2*time.Hour), now.Add(-time.Hour), root, rootKey)}, wantErr: "certificate expired at"},
		{name: "not yet valid", certs: [][]byte{leaf(id, now.Add(time.Hour), now.Add(2*time.Hour), root, rootKey)}, wantErr: "not valid before"},
		{name: "foreign CA", certs: [][]byte{valid(foreign, foreignKey)}, wantErr: "signed by an unknown authority"},
		{name: "wrong trust domain", certs: [][]byte{leaf(ID{"other.org", "default", "web"}, now.Add(-time.Minute), now.Add(time.Hour), root, rootKey)}, wantErr: "trust domain other.org, want cluster.local"},
		{name: "no SPIFFE ID", certs: [][]byte{noID.Raw}, wantErr: "no SPIFFE ID"},
		{name: "no certificate", wantErr: "no peer certificate"},
		{name: "garbage", certs: [][]byte{[]byte("x")}, wantErr: "peer certificate 0"},
		{name: "no roots", certs: [][]byte{valid(root, rootKey)}, noRoots: true, wantErr: "no trusted roots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := roots
			if tt.noRoots {
				pool = nil
			}
			got, err := VerifyPeer(tt.certs, pool, "cluster.local", now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("VerifyPeer = %v, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("VerifyPeer (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := VerifyPeer([][]byte{noID.Raw}, roots, "cluster.local", now); !errors.Is(err, ErrBadID) {
		t.Errorf("no SPIFFE ID: %v, want ErrBadID", err)
	}
}

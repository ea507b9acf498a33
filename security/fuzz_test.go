package security

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// maxCallTime bounds one call of the CA service in the fuzz targets: a
// call takes well under a millisecond; 5 s leaves room for a loaded
// machine and the race detector, not for the RSA key of 262,144 bits
// kept as a seed (3 s before the fix on an idle machine, and far more
// for a bigger key).
const maxCallTime = 5 * time.Second

// staticAuth authenticates every token as caller, counting the calls.
type staticAuth struct {
	caller Caller
	calls  int
	last   string
}

func (a *staticAuth) Name() string { return "static" }
func (a *staticAuth) Authenticate(_ context.Context, token string) (Caller, error) {
	a.calls++
	a.last = token
	return a.caller, nil
}

// fuzzCSR returns a PEM certificate request of type typ for key, asking
// for tmpl's names and extensions.
func fuzzCSR(f *testing.F, typ string, key crypto.Signer, tmpl *x509.CertificateRequest) string {
	f.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		f.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// fuzzService is a CA with opts and its service, whose every caller is
// shop/cart.
func fuzzService(f *testing.F, opts CAOptions) (*CA, *staticAuth, *Service) {
	f.Helper()
	ca, err := NewCA(context.Background(), opts)
	if err != nil {
		f.Fatal(err)
	}
	auth := &staticAuth{caller: Caller{Namespace: "shop", ServiceAccount: "cart"}}
	svc, err := NewService(ServiceOptions{CA: ca, Authenticator: auth})
	if err != nil {
		f.Fatal(err)
	}
	return ca, auth, svc
}

// FuzzCreateCertificate sends the CA's certificate service arbitrary
// bytes as the CSR of an authenticated caller, with any validity. The
// service must never panic nor take long (testdata holds a CSR for a
// 262,144-bit RSA key with the largest exponent, whose signature took
// seconds to check), and it must refuse with InvalidArgument and no
// response, or sign a certificate that: carries exactly the caller's
// SPIFFE ID and no other name, whatever the CSR asks for; is a leaf for
// the CSR's key, not a CA; verifies against the CA's roots; and is valid
// for at most MaxWorkloadTTL (plus the clock skew allowance).
func FuzzCreateCertificate(f *testing.F) {
	const maxTTL = 48 * time.Hour
	ca, auth, svc := fuzzService(f, CAOptions{WorkloadTTL: time.Hour, MaxWorkloadTTL: maxTTL})
	want := ID{TrustDomain: ca.TrustDomain(), Namespace: "shop", ServiceAccount: "cart"}
	roots := ca.RootPool()
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer t"))

	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	// A request that asks for more than it may have: another identity,
	// host names, an address, an e-mail, a subject and CA powers.
	other, _ := url.Parse("spiffe://cluster.local/ns/kube-system/sa/admin")
	ext, err := asn1.Marshal(struct {
		IsCA bool
		Len  int
	}{true, 3})
	if err != nil {
		f.Fatal(err)
	}
	greedy := &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "admin", Organization: []string{"root"}},
		DNSNames:        []string{"evil.example", "*.svc.cluster.local"},
		IPAddresses:     []net.IP{net.IPv4(10, 0, 0, 1)},
		EmailAddresses:  []string{"root@example.com"},
		URIs:            []*url.URL{other},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: ext}},
	}
	valid := fuzzCSR(f, pemCSR, p256, &x509.CertificateRequest{URIs: []*url.URL{want.url()}})
	seeds := []string{
		valid,
		fuzzCSR(f, pemCSR, p256, &x509.CertificateRequest{}),
		fuzzCSR(f, pemCSR, p256, greedy),
		fuzzCSR(f, "NEW CERTIFICATE REQUEST", ed, greedy),
		fuzzCSR(f, pemCSR, rsaKey, &x509.CertificateRequest{URIs: []*url.URL{want.url()}}),
		fuzzCSR(f, pemCSR, p224, &x509.CertificateRequest{}), // too weak
		valid[:len(valid)/2],
		valid[:len(valid)-40] + valid[len(valid)-26:], // the DER cut short
		strings.Replace(valid, pemCSR, pemCertificate, 2),
		"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
		"",
	}
	block, _ := pem.Decode([]byte(valid))
	bad := slices.Clone(block.Bytes)
	bad[len(bad)-1] ^= 0xff // the signature
	seeds = append(seeds, string(pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: bad})), string(block.Bytes))
	for i, s := range seeds {
		f.Add(s, []int64{0, 3600, -1, math.MaxInt64, 10 * 365 * 86400}[i%5])
	}

	f.Fuzz(func(t *testing.T, csr string, validity int64) {
		start := time.Now()
		resp, err := svc.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: validity})
		if d := time.Since(start); d > maxCallTime {
			t.Errorf("CreateCertificate took %v, want at most %v", d, maxCallTime)
		}
		if auth.last != "t" {
			t.Fatalf("authenticator got token %q, want %q", auth.last, "t")
		}
		if err != nil {
			if resp != nil {
				t.Errorf("got a response and the error %v, want no response", err)
			}
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Errorf("got code %v (%v), want %v", got, err, codes.InvalidArgument)
			}
			return
		}
		if resp == nil || len(resp.GetCertChain()) < 2 {
			t.Fatalf("got %d PEM entries and no error, want the leaf and the root", len(resp.GetCertChain()))
		}
		leaf := parseOne(t, resp.GetCertChain()[0])
		if id, err := IDFromCert(leaf); err != nil || id != want {
			t.Errorf("got ID %v (%v), want %v", id, err, want)
		}
		if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) > 0 {
			t.Errorf("got names URIs %v, DNS %v, IPs %v, e-mails %v; want the caller's SPIFFE ID only",
				leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
		if len(leaf.Subject.Names) > 0 {
			t.Errorf("got subject %q, want none", leaf.Subject)
		}
		if leaf.IsCA || !leaf.BasicConstraintsValid || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
			t.Errorf("got IsCA %v, BasicConstraintsValid %v, KeyUsage %b; want a leaf", leaf.IsCA, leaf.BasicConstraintsValid, leaf.KeyUsage)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life <= 0 || life > maxTTL+clockSkew {
			t.Errorf("got a lifetime of %v, want at most %v", life, maxTTL+clockSkew)
		}
		block, _ := pem.Decode([]byte(csr))
		req, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			t.Fatalf("signed a CSR that does not parse: %v", err)
		}
		if !samePublicKey(req.PublicKey, leaf.PublicKey) {
			t.Error("the certificate is not for the CSR's key")
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("the certificate does not verify against the CA's roots: %v", err)
		}
	})
}

func parseOne(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	certs, err := ParseCertificates([]byte(p))
	if err != nil || len(certs) != 1 {
		t.Fatalf("got %d certificates (%v), want one", len(certs), err)
	}
	return certs[0]
}

// FuzzBearerToken sends the CA's certificate service arbitrary
// "authorization" metadata. BearerToken must never panic, and return a
// token only from a "Bearer TOKEN" value (the scheme in any case): the
// token, trimmed and never empty. The service must pass the authenticator
// exactly that token, and without one refuse with Unauthenticated before
// authenticating anything.
func FuzzBearerToken(f *testing.F) {
	_, auth, svc := fuzzService(f, CAOptions{})
	f.Add("Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDpjYXJ0In0.c2ln", "")
	f.Add("bearer abc", "Bearer def")
	f.Add("Basic Zm9vOmJhcg==", "BEARER  tok  ")
	f.Add("Bearer ", "Bearer\t")
	f.Add("Bearer", " Bearer x y ")
	f.Add("Bearer\u00a0abc", "Bearer \x00")
	f.Add("", "")
	f.Add("Bearer "+strings.Repeat("a", 64<<10), "")
	f.Fuzz(func(t *testing.T, v1, v2 string) {
		md := metadata.MD{}
		for _, v := range []string{v1, v2} {
			if v != "" {
				md.Append("authorization", v)
			}
		}
		ctx := metadata.NewIncomingContext(context.Background(), md)
		token, ok := BearerToken(ctx)
		if ok != (token != "") {
			t.Fatalf("BearerToken = %q, %v; want a token exactly when true", token, ok)
		}
		if ok {
			if token != strings.TrimSpace(token) {
				t.Errorf("BearerToken = %q, want it trimmed", token)
			}
			if !slices.ContainsFunc([]string{v1, v2}, func(v string) bool {
				scheme, rest, found := strings.Cut(strings.TrimSpace(v), " ")
				return found && strings.EqualFold(scheme, "bearer") && strings.TrimSpace(rest) == token
			}) {
				t.Errorf("BearerToken = %q, from no \"Bearer TOKEN\" value of %q", token, []string{v1, v2})
			}
		}
		auth.calls, auth.last = 0, ""
		resp, err := svc.CreateCertificate(ctx, &pb.IstioCertificateRequest{})
		if resp != nil {
			t.Fatalf("got a certificate for an empty CSR")
		}
		if !ok {
			if got := status.Code(err); got != codes.Unauthenticated || auth.calls != 0 {
				t.Errorf("without a bearer token: got code %v and %d authentications, want %v and none", got, auth.calls, codes.Unauthenticated)
			}
			return
		}
		if auth.calls != 1 || auth.last != token {
			t.Errorf("got %d authentications of %q, want one of %q", auth.calls, auth.last, token)
		}
		if got := status.Code(err); got != codes.InvalidArgument {
			t.Errorf("got code %v (%v), want %v for the empty CSR", got, err, codes.InvalidArgument)
		}
	})
}

var _ Authenticator = (*staticAuth)(nil)

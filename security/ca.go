package security

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrOperatorCA is returned by RotateRoot when the CA signs with the
// operator's certificate, which only the operator rotates.
var ErrOperatorCA = errors.New("the CA's certificate is the operator's")

// ErrBadCSR is wrapped by Sign's errors about the certificate request
// itself: it does not parse, its signature is wrong, or its key is weak
// or too big.
var ErrBadCSR = errors.New("bad certificate request")

// clockSkew is how far back a certificate's NotBefore goes.
const clockSkew = 5 * time.Minute

// CAOptions configures NewCA.
type CAOptions struct {
	// TrustDomain is the trust domain of the IDs the CA signs; default
	// "cluster.local".
	TrustDomain string
	// CertFile and KeyFile are an operator-supplied signing certificate
	// (a root, or an intermediate whose PEM file holds the chain: the
	// signing certificate first, then its issuers) and its key (PEM: EC,
	// RSA or PKCS #8). Both or neither; without them the CA makes its
	// own root.
	CertFile, KeyFile string
	// RootsFile holds extra trusted roots (a PEM bundle), e.g. the
	// previous root while a rotation overlaps. Optional. When CertFile's
	// chain does not end in its root, the root must be here.
	RootsFile string
	// Store keeps a self-generated root across restarts and shares it
	// between replicas; nil: memory only. Used only without CertFile.
	Store Store
	// RootTTL is the self-generated root's validity; default 10 years.
	RootTTL time.Duration
	// WorkloadTTL is the default validity of workload certificates;
	// default 24h.
	WorkloadTTL time.Duration
	// MaxWorkloadTTL is the longest validity a client may ask for;
	// default 7 days.
	MaxWorkloadTTL time.Duration
	// Logger logs the CA's changes; default: discard.
	Logger *slog.Logger
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
}

// CA is the mesh's certificate authority. Its methods are safe for
// concurrent use: the signing material is an immutable caState swapped
// atomically.
type CA struct {
	opts   CAOptions
	log    *slog.Logger
	stamps []fileStamp // of the files as NewCA read them; Watch starts from there
	state  atomic.Pointer[caState]

	mu sync.Mutex // serialises the changes of state (RotateRoot, Watch); readers do not take it

	lmu       sync.Mutex // guards listeners
	listeners []func()
}

// caState is what the CA signs with and trusts; never modified once
// stored.
type caState struct {
	key      crypto.Signer
	cert     *x509.Certificate // signs
	chain    [][]byte          // DER sent after the leaf: the intermediates
	notAfter time.Time         // the earliest NotAfter of cert and chain
	operator bool              // cert and key come from CertFile and KeyFile

	chainRoots []*x509.Certificate // the signing chain's root (when known)
	previous   []*x509.Certificate // self-generated: earlier roots, still trusted
	extra      []*x509.Certificate // RootsFile's roots

	roots  []*x509.Certificate // chainRoots, previous and extra, without duplicates
	bundle []byte
	pool   *x509.CertPool
}

// NewCA makes the CA: from the operator's files when CertFile is set,
// else from the root in Store, made and saved there when there is none.
func NewCA(ctx context.Context, opts CAOptions) (*CA, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if err := checkTrustDomain(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("ca: a certificate file and a key file go together: set both or neither")
	}
	if opts.RootTTL <= 0 {
		opts.RootTTL = 87600 * time.Hour
	}
	if opts.WorkloadTTL <= 0 {
		opts.WorkloadTTL = 24 * time.Hour
	}
	if opts.MaxWorkloadTTL <= 0 {
		opts.MaxWorkloadTTL = 168 * time.Hour
	}
	if opts.WorkloadTTL > opts.MaxWorkloadTTL {
		return nil, fmt.Errorf("ca: workload TTL %v exceeds the maximum %v", opts.WorkloadTTL, opts.MaxWorkloadTTL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ca := &CA{opts: opts, log: opts.Logger}
	ca.stamps = statFiles(ca.files())
	var st *caState
	var err error
	if opts.CertFile != "" {
		st, err = ca.loadOperator()
	} else {
		st, err = ca.loadSelf(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	ca.state.Store(st)
	ca.log.Info("certificate authority ready", "trust_domain", opts.TrustDomain, "operator", st.operator,
		"signer", st.cert.Subject.String(), "signer_not_after", st.cert.NotAfter, "roots", len(st.roots))
	return ca, nil
}

// TrustDomain returns the trust domain of the IDs the CA signs.
func (ca *CA) TrustDomain() string { return ca.opts.TrustDomain }

// Bundle returns the trusted roots, PEM concatenated: the signing chain's
// root, RootsFile's roots and the previous self-generated roots still
// valid after RotateRoot.
func (ca *CA) Bundle() []byte { return bytes.Clone(ca.state.Load().bundle) }

// Roots returns the certificates of Bundle.
func (ca *CA) Roots() []*x509.Certificate { return slices.Clone(ca.state.Load().roots) }

// RootPool returns the certificates of Bundle as a pool.
func (ca *CA) RootPool() *x509.CertPool { return ca.state.Load().pool.Clone() }

// Sign checks the signature of the certificate request csrDER (DER) and
// returns a certificate for id, whatever names the request asks for: URI
// SAN id and no other name, key usage digital signature and key
// encipherment, extended key usage server and client auth, valid from
// five minutes ago (clock skew) for ttl (WorkloadTTL when ttl <= 0; at
// most MaxWorkloadTTL, and never past the signing chain's expiry). It
// returns the chain as DER: the leaf, then the intermediates (not the
// root). Errors about the request wrap ErrBadCSR.
func (ca *CA) Sign(csrDER []byte, id ID, ttl time.Duration) ([][]byte, error) {
	chain, _, err := ca.signCSR(csrDER, id, ttl)
	return chain, err
}

func (ca *CA) signCSR(csrDER []byte, id ID, ttl time.Duration) ([][]byte, *x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	// The key first: checking the signature of an RSA key of any size
	// costs time quadratic in it.
	if err := checkWorkloadKey(csr.PublicKey); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return ca.sign(csr.PublicKey, id, nil, ttl)
}

// Issue makes a key pair and a certificate for id and hosts (DNS names or
// IP addresses), valid for ttl and otherwise like Sign's: the control
// plane's own serving certificate. The tls.Certificate holds the leaf and
// the intermediates.
func (ca *CA) Issue(id ID, hosts []string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	chain, leaf, err := ca.sign(key.Public(), id, hosts, ttl)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

func (ca *CA) sign(pub crypto.PublicKey, id ID, hosts []string, ttl time.Duration) ([][]byte, *x509.Certificate, error) {
	if err := id.check(); err != nil {
		return nil, nil, fmt.Errorf("ca: sign: %w", err)
	}
	if id.TrustDomain != ca.opts.TrustDomain {
		return nil, nil, fmt.Errorf("ca: sign: %w: trust domain %s, the CA's is %s", ErrBadID, id.TrustDomain, ca.opts.TrustDomain)
	}
	st := ca.state.Load()
	now := ca.opts.Now()
	if !now.Before(st.notAfter) {
		return nil, nil, fmt.Errorf("ca: sign: the CA's certificate chain expired at %s", st.notAfter.UTC().Format(time.RFC3339))
	}
	if ttl <= 0 {
		ttl = ca.opts.WorkloadTTL
	}
	ttl = min(ttl, ca.opts.MaxWorkloadTTL)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              minTime(now.Add(ttl), st.notAfter),
		URIs:                  []*url.URL{id.url()},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, st.cert, pub, st.key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	return append([][]byte{der}, st.chain...), leaf, nil
}

// OnBundleChange registers f, called whenever Bundle changes (RotateRoot,
// a root rotated by another replica and found in the Store by Watch,
// RootsFile's or CertFile's content changed on disk). f is called
// synchronously, after the change is visible through Bundle, in the
// goroutine that made it (RotateRoot's caller or Watch's); it should not
// block for long. f may call the CA's methods.
func (ca *CA) OnBundleChange(f func()) {
	ca.lmu.Lock()
	defer ca.lmu.Unlock()
	ca.listeners = append(ca.listeners, f)
}

func (ca *CA) notify() {
	ca.lmu.Lock()
	fs := slices.Clone(ca.listeners)
	ca.lmu.Unlock()
	for _, f := range fs {
		f()
	}
}

// finish fills roots, bundle and pool from chainRoots, previous and extra.
func (st *caState) finish() *caState {
	st.roots = dedupCerts(slices.Concat(st.chainRoots, st.previous, st.extra))
	st.bundle = EncodeCertificates(st.roots...)
	st.pool = x509.NewCertPool()
	for _, c := range st.roots {
		st.pool.AddCert(c)
	}
	return st
}

// loadRootsFile returns RootsFile's certificates; none without it.
func (ca *CA) loadRootsFile() ([]*x509.Certificate, error) {
	if ca.opts.RootsFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(ca.opts.RootsFile)
	if err != nil {
		return nil, fmt.Errorf("roots file: %w", err)
	}
	certs, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("roots file %s: %w", ca.opts.RootsFile, err)
	}
	return certs, nil
}

// loadOperator reads and checks CertFile, KeyFile and RootsFile.
func (ca *CA) loadOperator() (*caState, error) {
	certFile, keyFile := ca.opts.CertFile, ca.opts.KeyFile
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate file: %w", err)
	}
	certs, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("CA certificate file %s: %w", certFile, err)
	}
	b, err = os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("CA key file: %w", err)
	}
	key, err := parseKey(b)
	if err != nil {
		return nil, fmt.Errorf("CA key file %s: %w", keyFile, err)
	}
	extra, err := ca.loadRootsFile()
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	now := ca.opts.Now()
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return nil, fmt.Errorf("CA certificate file %s: %q is not a CA certificate", certFile, cert.Subject.String())
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("CA certificate file %s: %q may not sign certificates (no certSign key usage)", certFile, cert.Subject.String())
	case now.After(cert.NotAfter):
		return nil, fmt.Errorf("CA certificate file %s: %q expired at %s", certFile, cert.Subject.String(), cert.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(cert.NotBefore):
		return nil, fmt.Errorf("CA certificate file %s: %q is not valid before %s", certFile, cert.Subject.String(), cert.NotBefore.UTC().Format(time.RFC3339))
	case !samePublicKey(key.Public(), cert.PublicKey):
		return nil, fmt.Errorf("CA key file %s does not match the certificate in %s", keyFile, certFile)
	}
	st := &caState{key: key, cert: cert, notAfter: cert.NotAfter, operator: true, extra: extra}
	inter := x509.NewCertPool()
	for _, c := range certs {
		st.notAfter = minTime(st.notAfter, c.NotAfter)
		if selfSigned(c) {
			st.chainRoots = append(st.chainRoots, c)
			continue
		}
		st.chain = append(st.chain, c.Raw) // in the file's order: the signing certificate first
		inter.AddCert(c)
	}
	st.finish()
	if _, err := cert.Verify(x509.VerifyOptions{Roots: st.pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("CA certificate file %s: %q does not chain to a root in the file or in the roots file: %w", certFile, cert.Subject.String(), err)
	}
	return st, nil
}

func dedupCerts(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if !slices.ContainsFunc(out, c.Equal) {
			out = append(out, c)
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) //nolint:errcheck // crypto/rand does not fail
	return n.Add(n, big.NewInt(1))                                      // positive, never zero
}

package workload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/tender-mesh/tender/security"
)

// Options configure a Manager.
type Options struct {
	// CAAddr is the control plane's TLS address (:15012).
	CAAddr string
	// Roots verify the control plane before the first SDS push: PEM, from
	// --ca-root-file or the injector.
	Roots []byte
	// ControlPlaneID is the control plane's expected SPIFFE ID; empty
	// accepts any ID of the trust domain.
	ControlPlaneID string
	TrustDomain    string
	// TokenFile holds the bearer token, re-read for every request (the
	// kubelet rotates projected tokens).
	TokenFile string
	// TTL is the validity asked for; 0 takes the CA's default.
	TTL    time.Duration
	Logger *slog.Logger
	// OnIssued hears of every certificate (renewal: not the first);
	// OnFailure of every failed request. Either may be nil.
	OnIssued  func(notAfter time.Time, renewal bool)
	OnFailure func()
}

// bundle is one trust bundle; immutable.
type bundle struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// Manager keeps the workload's certificate and the trust bundle.
type Manager struct {
	opts  Options
	cert  atomic.Pointer[tls.Certificate] // Leaf set
	roots atomic.Pointer[bundle]
	conn  *grpc.ClientConn

	issueOnce sync.Once
	issued    chan struct{} // closed once the first certificate is in
}

// ErrNoCertificate is returned by a TLS config before the first
// certificate arrived.
var ErrNoCertificate = errors.New("no workload certificate yet")

// New checks opts and prepares the CA connection; Run obtains the
// certificate.
func New(opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.CAAddr == "" {
		return nil, errors.New("workload identity: no CA address")
	}
	m := &Manager{opts: opts, issued: make(chan struct{})}
	if len(opts.Roots) == 0 {
		return nil, errors.New("workload identity: no root certificate to verify the control plane with (--ca-root-file)")
	}
	if err := m.SetRoots(opts.Roots); err != nil {
		return nil, fmt.Errorf("workload identity: root certificates: %w", err)
	}
	if opts.ControlPlaneID != "" {
		if _, err := security.ParseID(opts.ControlPlaneID); err != nil {
			return nil, fmt.Errorf("workload identity: control plane identity: %w", err)
		}
	}
	conn, err := grpc.NewClient(opts.CAAddr, grpc.WithTransportCredentials(m.ControlPlaneCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("workload identity: %w", err)
	}
	m.conn = conn
	return m, nil
}

// Close releases the CA connection.
func (m *Manager) Close() error { return m.conn.Close() }

// SetRoots replaces the trust bundle (PEM): the SDS secret ROOTCA.
func (m *Manager) SetRoots(pemBytes []byte) error {
	var certs []*x509.Certificate
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return errors.New("no certificate in the bundle")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	m.roots.Store(&bundle{pool: pool, certs: certs})
	return nil
}

// Roots returns the trust bundle's pool.
func (m *Manager) Roots() *x509.CertPool { return m.roots.Load().pool }

// RootCerts returns the trust bundle's certificates.
func (m *Manager) RootCerts() []*x509.Certificate { return m.roots.Load().certs }

// Certificate returns the current certificate; nil before the first.
func (m *Manager) Certificate() *tls.Certificate { return m.cert.Load() }

// Ready reports whether the workload has a certificate.
func (m *Manager) Ready() bool { return m.cert.Load() != nil }

// ID returns the workload's SPIFFE ID; zero before the first certificate.
func (m *Manager) ID() security.ID {
	c := m.cert.Load()
	if c == nil {
		return security.ID{}
	}
	id, _ := security.IDFromCert(c.Leaf) //nolint:errcheck // checked when the certificate arrived
	return id
}

// Run obtains the certificate and renews it at half its life until ctx
// ends. A failed request is logged with the CA's reason and retried with
// backoff; the current certificate stays in use meanwhile.
func (m *Manager) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		wait, err := m.renew(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if m.opts.OnFailure != nil {
				m.opts.OnFailure()
			}
			wait = backoff/2 + rand.N(backoff)
			m.opts.Logger.Error("workload certificate request failed", "ca", m.opts.CAAddr, "err", err, "retry_in", wait)
			backoff = min(2*backoff, time.Minute)
			if c := m.cert.Load(); c != nil {
				// Renew before expiry: retry sooner than the backoff
				// would near the end (once expired, the backoff again).
				if left := time.Until(c.Leaf.NotAfter); left > 0 && left < 2*wait {
					wait = max(left/4, 100*time.Millisecond)
				}
			}
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// renew requests a certificate and returns when to renew it.
func (m *Manager) renew(ctx context.Context) (time.Duration, error) {
	token, err := m.token()
	if err != nil {
		return 0, err
	}
	key, err := security.NewKey()
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	chain, _, err := security.RequestCertificate(rctx, m.conn, token, key, m.opts.TTL)
	if err != nil {
		return 0, err
	}
	id, err := security.IDFromCert(chain[0])
	if err != nil {
		return 0, err
	}
	if id.TrustDomain != m.opts.TrustDomain {
		return 0, fmt.Errorf("the CA issued %s, outside trust domain %s", id, m.opts.TrustDomain)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	prev := m.cert.Swap(c)
	leaf := chain[0]
	// Half of the life from now: NotBefore is backdated for clock skew,
	// and counting from it would renew short certificates at once.
	got := time.Now()
	renewAt := got.Add(leaf.NotAfter.Sub(got) / 2)
	if m.opts.OnIssued != nil {
		m.opts.OnIssued(leaf.NotAfter, prev != nil)
	}
	if prev == nil {
		m.opts.Logger.Info("workload certificate issued", "id", id.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
		m.issueOnce.Do(func() { close(m.issued) })
	} else {
		m.opts.Logger.Info("workload certificate renewed", "id", id.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	}
	return max(time.Until(renewAt), 100*time.Millisecond), nil
}

func (m *Manager) token() (string, error) {
	if m.opts.TokenFile == "" {
		return "", errors.New("no token file (--token-file)")
	}
	b, err := os.ReadFile(m.opts.TokenFile)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", m.opts.TokenFile)
	}
	return t, nil
}

// Issued is closed once the first certificate is in.
func (m *Manager) Issued() <-chan struct{} { return m.issued }

// verify checks a peer chain against the bundle of the moment.
func (m *Manager) verify(raw [][]byte) (security.ID, error) {
	return security.VerifyPeer(raw, m.roots.Load().pool, m.opts.TrustDomain, time.Now())
}

// ControlPlaneCredentials verify the control plane's serving certificate
// against the bundle, and its SPIFFE ID.
func (m *Manager) ControlPlaneCredentials() credentials.TransportCredentials {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified below, against the bundle of the moment and by SPIFFE
		// ID rather than host name.
		InsecureSkipVerify: true, //nolint:gosec // VerifyPeerCertificate verifies
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := m.verify(raw)
			if err != nil {
				return fmt.Errorf("control plane certificate: %w", err)
			}
			if want := m.opts.ControlPlaneID; want != "" && id.String() != want {
				return fmt.Errorf("control plane identity %s, want %s", id, want)
			}
			return nil
		},
	}
	return credentials.NewTLS(cfg)
}

// PerRPC returns credentials that send the token with every call.
func (m *Manager) PerRPC() credentials.PerRPCCredentials { return tokenCreds{m} }

type tokenCreds struct{ m *Manager }

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := t.m.token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return true }

// ALPN values of the mesh's mutual TLS: they mark a connection as the
// mesh's, so the inbound side tells it from an app's own TLS, and carry
// the protocol inside.
const (
	ALPNHTTP1 = "tender/http1.1"
	ALPNHTTP2 = "tender/h2"
	ALPNTCP   = "tender/tcp"
)

// ClientConfig is the outbound side's TLS: it presents the workload
// certificate, offers alpn, and verifies the server's SPIFFE ID.
func (m *Manager) ClientConfig(alpn string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := m.cert.Load(); c != nil {
				return c, nil
			}
			return nil, ErrNoCertificate
		},
		InsecureSkipVerify: true, //nolint:gosec // VerifyPeerCertificate verifies
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := m.verify(raw)
			return err
		},
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
}

// ServerConfig is the inbound side's TLS: it requires a client
// certificate of the mesh and agrees on one of the mesh's ALPN values.
func (m *Manager) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPNHTTP2, ALPNHTTP1, ALPNTCP},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := m.cert.Load(); c != nil {
				return c, nil
			}
			return nil, ErrNoCertificate
		},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := m.verify(raw)
			return err
		},
	}
}

package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"

	"github.com/tender-mesh/tender/security"
	seckube "github.com/tender-mesh/tender/security/kube"
	"github.com/tender-mesh/tender/xds"
)

// caConfig holds the flags of the CA and the TLS xDS port.
type caConfig struct {
	Addr            string // TLS xDS and CA; empty: off
	TrustDomain     string
	CertFile        string
	KeyFile         string
	RootsFile       string
	Dir             string
	Secret          string
	WorkloadTTL     time.Duration
	MaxWorkloadTTL  time.Duration
	BootstrapTokens string
	TokenAudiences  []string
	ServiceAccount  string
	Hosts           []string
	// AuthFailureTTL is how long a refused token is refused from memory;
	// PeerRate and PeerBurst bound the calls each peer address makes.
	AuthFailureTTL time.Duration
	PeerRate       float64
	PeerBurst      int
}

// mesh is the CA and what serves it: the authenticator of tokens and the
// control plane's own serving certificate.
type mesh struct {
	cfg     caConfig
	ca      *security.CA
	auth    security.Authenticator
	service *security.Service
	limiter *security.PeerLimiter
	self    security.ID
	logger  *slog.Logger

	mu   sync.Mutex // guards cert
	cert atomic.Pointer[tls.Certificate]
}

// newMesh builds the CA from the flags. Kubernetes (client non-nil)
// authenticates service-account tokens; --bootstrap-tokens-file others.
func newMesh(ctx context.Context, cfg caConfig, namespace string, client kubernetes.Interface, reg prometheus.Registerer, logger *slog.Logger) (*mesh, error) {
	opts := security.CAOptions{
		TrustDomain: cfg.TrustDomain, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, RootsFile: cfg.RootsFile,
		WorkloadTTL: cfg.WorkloadTTL, MaxWorkloadTTL: cfg.MaxWorkloadTTL, Logger: logger,
	}
	switch {
	case cfg.CertFile != "":
	case cfg.Dir != "":
		opts.Store = security.DirStore{Dir: cfg.Dir}
	case cfg.Secret != "" && client != nil:
		opts.Store = &seckube.SecretStore{Client: client, Namespace: namespace, Name: cfg.Secret}
	default:
		logger.Warn("the CA's root is kept in memory only: a restart makes a new one, and replicas do not share it; give --ca-secret, --ca-dir or --ca-cert-file")
	}
	ca, err := security.NewCA(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var chain security.Chain
	if client != nil {
		chain = append(chain, &seckube.TokenReviewer{Client: client, Audiences: cfg.TokenAudiences})
	}
	if cfg.BootstrapTokens != "" {
		bt, err := security.NewBootstrapTokens(cfg.BootstrapTokens)
		if err != nil {
			return nil, fmt.Errorf("--bootstrap-tokens-file: %w", err)
		}
		chain = append(chain, bt)
	}
	if len(chain) == 0 {
		logger.Warn("no way to authenticate sidecars: every certificate request is refused; run with Kubernetes or give --bootstrap-tokens-file")
	}
	// A bad token retried costs one TokenReview per TTL, not one per call.
	auth := security.NewFailureCache(chain, cfg.AuthFailureTTL)
	svc, err := security.NewService(security.ServiceOptions{CA: ca, Authenticator: auth, Logger: logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	m := &mesh{cfg: cfg, ca: ca, auth: auth, service: svc, logger: logger, limiter: security.NewPeerLimiter(cfg.PeerRate, cfg.PeerBurst),
		self: security.ID{TrustDomain: ca.TrustDomain(), Namespace: namespace, ServiceAccount: cfg.ServiceAccount}}
	if _, err := m.certificate(); err != nil {
		return nil, err
	}
	return m, nil
}

// certificate returns the control plane's serving certificate, issued
// anew at half its life.
func (m *mesh) certificate() (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil && time.Now().Before(c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/2)) {
		return c, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.cert.Load(); c != nil && time.Now().Before(c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/2)) {
		return c, nil
	}
	c, err := m.ca.Issue(m.self, m.cfg.Hosts, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("ca: control plane certificate: %w", err)
	}
	m.cert.Store(c)
	return c, nil
}

// caInfo is what /debug/ca shows: the trust domain and the roots.
type caInfo struct {
	TrustDomain string     `json:"trustDomain"`
	Identity    string     `json:"identity"`
	Roots       []rootInfo `json:"roots"`
}

type rootInfo struct {
	Subject  string    `json:"subject"`
	KeyID    string    `json:"keyId"`
	NotAfter time.Time `json:"notAfter"`
}

func (m *mesh) info() caInfo {
	out := caInfo{TrustDomain: m.ca.TrustDomain(), Identity: m.self.String(), Roots: []rootInfo{}}
	for _, r := range m.ca.Roots() {
		out.Roots = append(out.Roots, rootInfo{Subject: r.Subject.String(), KeyID: hex.EncodeToString(r.SubjectKeyId), NotAfter: r.NotAfter})
	}
	return out
}

// resign drops the serving certificate: the next handshake gets one from
// the CA's signer of the moment. Called when the bundle changes (a new
// root), so that sidecars that start with the new root alone trust the
// control plane.
func (m *mesh) resign() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cert.Store(nil)
}

// serve answers xDS and the CA over TLS on lis. xDS streams must carry a
// token the authenticator accepts.
func (m *mesh) serve(ctx context.Context, srv *xds.Server, lis net.Listener) error {
	tlsCfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.certificate() },
	}
	return srv.ServeWith(ctx, lis, m.service.Register,
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.StreamInterceptor(m.authenticateStream),
		grpc.UnaryInterceptor(m.authenticateUnary))
}

// authenticateUnary refuses the unary xDS calls (Fetch*) without a valid
// token; the CA's own call authenticates itself (it needs the caller).
func (m *mesh) authenticateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := m.limit(ctx); err != nil {
		return nil, err
	}
	if strings.HasPrefix(info.FullMethod, "/istio.v1.auth.IstioCertificateService/") {
		return handler(ctx, req)
	}
	if err := m.authenticate(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// authenticateStream refuses xDS streams without a valid token.
func (m *mesh) authenticateStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := m.limit(ss.Context()); err != nil {
		return err
	}
	if err := m.authenticate(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// limit refuses a call from a peer over its rate (--peer-rate-limit).
func (m *mesh) limit(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return nil
	}
	if !m.limiter.Allow(ap.Addr()) {
		return status.Error(codes.ResourceExhausted, "too many calls from this address; retry later")
	}
	return nil
}

// authenticate checks the call's bearer token.
func (m *mesh) authenticate(ctx context.Context, method string) error {
	token, ok := security.BearerToken(ctx)
	if !ok || token == "" {
		return status.Error(codes.Unauthenticated, "no bearer token")
	}
	if _, err := m.auth.Authenticate(ctx, token); err != nil {
		addr := ""
		if p, ok := peer.FromContext(ctx); ok {
			addr = p.Addr.String()
		}
		m.logger.Warn("xds stream refused", "peer", addr, "method", method, "err", err)
		if errors.Is(err, security.ErrUnauthenticated) {
			return status.Error(codes.Unauthenticated, err.Error())
		}
		return status.Error(codes.Unavailable, err.Error())
	}
	return nil
}

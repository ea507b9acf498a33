package security

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// ServiceOptions configures NewService.
type ServiceOptions struct {
	// CA signs the certificates. Required.
	CA *CA
	// Authenticator says who the callers are. Required.
	Authenticator Authenticator
	// Logger logs each certificate issued or refused; default: discard.
	Logger *slog.Logger
	// Registerer gets the metrics tender_ca_certificates_issued_total and
	// tender_ca_requests_refused_total{reason}; nil: no metrics.
	Registerer prometheus.Registerer
}

// Service is the CA's gRPC service: Istio's IstioCertificateService, the
// certificate request API Istio agents and proxyless gRPC clients speak.
// It signs a certificate for the authenticated caller's identity only.
type Service struct {
	pb.UnimplementedIstioCertificateServiceServer

	ca      *CA
	auth    Authenticator
	log     *slog.Logger
	metrics *metrics
}

// NewService returns the service; Register serves it.
func NewService(opts ServiceOptions) (*Service, error) {
	if opts.CA == nil {
		return nil, errors.New("security: service: no CA")
	}
	if opts.Authenticator == nil {
		return nil, errors.New("security: service: no authenticator")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Service{ca: opts.CA, auth: opts.Authenticator, log: opts.Logger, metrics: m}, nil
}

// Register registers the service on g.
func (s *Service) Register(g *grpc.Server) { pb.RegisterIstioCertificateServiceServer(g, s) }

// CreateCertificate implements pb.IstioCertificateServiceServer: it
// authenticates the bearer token of the "authorization" metadata, signs
// the request's CSR for the caller's SPIFFE ID, whatever the CSR asks
// for, and returns the chain as PEM entries: the leaf, the intermediates,
// then each trusted root, the signing chain's root last (Istio agents take
// the last entry as the root).
func (s *Service) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	token, ok := BearerToken(ctx)
	if !ok {
		return nil, s.refuse(reasonUnauthenticated, codes.Unauthenticated, "no bearer token", from)
	}
	caller, err := s.auth.Authenticate(ctx, token)
	if err != nil {
		return nil, s.refuse(reasonUnauthenticated, codes.Unauthenticated, err.Error(), from, "authenticator", s.auth.Name())
	}
	id := ID{TrustDomain: s.ca.TrustDomain(), Namespace: caller.Namespace, ServiceAccount: caller.ServiceAccount}
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil || (block.Type != pemCSR && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, s.refuse(reasonBadRequest, codes.InvalidArgument, "csr: no PEM CERTIFICATE REQUEST", from, "id", id.String())
	}
	chain, leaf, err := s.ca.signCSR(block.Bytes, id, validity(req.GetValidityDuration()))
	switch {
	case errors.Is(err, ErrBadCSR):
		return nil, s.refuse(reasonBadRequest, codes.InvalidArgument, err.Error(), from, "id", id.String())
	case err != nil:
		s.log.Error("certificate not issued", "id", id.String(), "peer", from, "error", err)
		s.metrics.refused.WithLabelValues(reasonInternal).Inc()
		return nil, status.Error(codes.Internal, "certificate not issued: the CA failed, see its log")
	}
	resp := &pb.IstioCertificateResponse{}
	for _, der := range chain {
		resp.CertChain = append(resp.CertChain, string(pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})))
	}
	roots := s.ca.Roots()
	for i := len(roots) - 1; i >= 0; i-- { // the signing chain's root (first in Bundle) last
		resp.CertChain = append(resp.CertChain, string(EncodeCertificates(roots[i])))
	}
	s.metrics.issued.Inc()
	s.log.Info("certificate issued", "id", id.String(), "serial", fmt.Sprintf("%x", leaf.SerialNumber), "not_after", leaf.NotAfter, "peer", from)
	return resp, nil
}

// refuse counts and logs a refused request and returns its status.
func (s *Service) refuse(reason string, code codes.Code, msg, from string, attrs ...any) error {
	s.metrics.refused.WithLabelValues(reason).Inc()
	s.log.Warn("certificate refused", append([]any{"peer", from, "reason", msg}, attrs...)...)
	return status.Error(code, msg)
}

// BearerToken returns the token of the incoming gRPC metadata
// "authorization: Bearer TOKEN" (the scheme in any case); false when there
// is none.
func BearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token, true
			}
		}
	}
	return "", false
}

// validity returns a request's validity_duration (seconds) as a duration;
// 0 (the CA's default) when not positive.
func validity(seconds int64) time.Duration {
	switch {
	case seconds <= 0:
		return 0
	case seconds > int64(math.MaxInt64/time.Second):
		return math.MaxInt64
	}
	return time.Duration(seconds) * time.Second
}

var _ pb.IstioCertificateServiceServer = (*Service)(nil)

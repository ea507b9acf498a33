package security

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"
)

// NewKey returns a fresh ECDSA P-256 key.
func NewKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// RequestCertificate asks the CA at the other end of conn, authenticated
// by the bearer token, for a certificate for key, valid for ttl (0: the
// CA's default). Only a certificate request for the key leaves. It returns
// the chain (the leaf, then the intermediates) and the roots the CA
// trusts, after checking that the leaf is for key, carries a SPIFFE ID
// and verifies against the roots.
func RequestCertificate(ctx context.Context, conn grpc.ClientConnInterface, token string, key crypto.Signer, ttl time.Duration) (chain []*x509.Certificate, roots []*x509.Certificate, err error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	req := &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: csr})),
		ValidityDuration: int64(ttl / time.Second),
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	var certs []*x509.Certificate
	for i, p := range resp.GetCertChain() {
		cs, err := ParseCertificates([]byte(p))
		if err != nil {
			return nil, nil, fmt.Errorf("certificate response: entry %d: %w", i, err)
		}
		certs = append(certs, cs...)
	}
	chain, roots = splitRoots(certs)
	if len(chain) == 0 {
		return nil, nil, errors.New("certificate response: no certificate")
	}
	if len(roots) == 0 {
		return nil, nil, errors.New("certificate response: no root certificate")
	}
	leaf := chain[0]
	if !samePublicKey(key.Public(), leaf.PublicKey) {
		return nil, nil, errors.New("certificate response: the certificate is not for this key")
	}
	if _, err := IDFromCert(leaf); err != nil {
		return nil, nil, fmt.Errorf("certificate response: %w", err)
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: leaf.NotBefore.Add(clockSkew), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, fmt.Errorf("certificate response: the certificate does not verify against the returned roots: %w", err)
	}
	return chain, roots, nil
}

// splitRoots splits a response's certificates into the chain and the
// roots: the self-signed ones at the end.
func splitRoots(certs []*x509.Certificate) (chain, roots []*x509.Certificate) {
	i := len(certs)
	for i > 1 && selfSigned(certs[i-1]) {
		i--
	}
	return certs[:i], certs[i:]
}

// TLSCertificate returns chain (the leaf first) and its key as a
// tls.Certificate, for a tls.Config.
func TLSCertificate(chain []*x509.Certificate, key crypto.Signer) tls.Certificate {
	c := tls.Certificate{PrivateKey: key}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	if len(chain) > 0 {
		c.Leaf = chain[0]
	}
	return c
}

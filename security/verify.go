package security

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// VerifyPeer checks a peer's certificate chain (DER, leaf first, as
// crypto/tls gives it to VerifyPeerCertificate or in ConnectionState)
// against roots at now: the chain must be valid (any extended key usage)
// and the leaf must carry a SPIFFE ID in trustDomain. It returns the ID.
// Its errors read well in a log line: "certificate expired at ...",
// "certificate signed by an unknown authority", "no SPIFFE ID in the
// certificate", "trust domain x, want y".
func VerifyPeer(rawCerts [][]byte, roots *x509.CertPool, trustDomain string, now time.Time) (ID, error) {
	if len(rawCerts) == 0 {
		return ID{}, errors.New("no peer certificate")
	}
	if roots == nil {
		return ID{}, errors.New("no trusted roots to verify the peer certificate with")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return ID{}, fmt.Errorf("peer certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	switch {
	case now.After(leaf.NotAfter):
		return ID{}, fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return ID{}, fmt.Errorf("certificate not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return ID{}, fmt.Errorf("certificate signed by an unknown authority (issuer %q)", leaf.Issuer.String())
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return ID{}, fmt.Errorf("certificate chain: %q expired or not yet valid: %w", invalid.Cert.Subject.String(), err)
	case err != nil:
		return ID{}, fmt.Errorf("certificate chain: %w", err)
	}
	id, err := IDFromCert(leaf)
	if err != nil {
		return ID{}, err
	}
	if id.TrustDomain != trustDomain {
		return ID{}, fmt.Errorf("%w: %s: trust domain %s, want %s", ErrBadID, id, id.TrustDomain, trustDomain)
	}
	return id, nil
}

package security

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
)

// RotateRoot makes a new self-generated root, which signs from now on.
// The old root stays in Bundle until it expires, so the certificates it
// signed stay valid (the overlap). The new root and the previous ones are
// saved to the Store; when another replica saved meanwhile, its roots are
// kept as previous ones too. It returns an error wrapping ErrOperatorCA
// when the CA signs with the operator's certificate. The OnBundleChange
// funcs are called before it returns.
func (ca *CA) RotateRoot(ctx context.Context) error {
	if err := ca.rotateRoot(ctx); err != nil {
		return err
	}
	ca.notify()
	return nil
}

func (ca *CA) rotateRoot(ctx context.Context) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	cur := ca.state.Load()
	if cur.operator {
		return fmt.Errorf("ca: rotate root: %w", ErrOperatorCA)
	}
	previous := append([]*x509.Certificate{cur.cert}, cur.previous...)
	for range 5 {
		key, root, err := ca.newRoot()
		if err != nil {
			return fmt.Errorf("ca: rotate root: %w", err)
		}
		st := ca.selfState(key, root, previous, cur.extra)
		if ca.opts.Store == nil {
			ca.state.Store(st)
			ca.log.Info("root rotated", "root_not_after", root.NotAfter, "previous_roots", len(st.previous))
			return nil
		}
		err = ca.save(ctx, st)
		if err == nil {
			ca.state.Store(st)
			ca.log.Info("root rotated and saved", "root_not_after", root.NotAfter, "previous_roots", len(st.previous))
			return nil
		}
		if !errors.Is(err, ErrStoreConflict) {
			return fmt.Errorf("ca: rotate root: %w", err)
		}
		// Another replica saved: keep its roots trusted, rotate again.
		stored, err := ca.loadStored(ctx)
		if err != nil {
			return fmt.Errorf("ca: rotate root: %w", err)
		}
		if stored != nil {
			previous = dedupCerts(append(append([]*x509.Certificate{stored.cert}, stored.previous...), previous...))
		}
	}
	return errors.New("ca: rotate root: the store changed under us repeatedly")
}

// newRoot makes a self-signed root: ECDSA P-256, CN "tender root CA",
// O the trust domain, a CA for one level of intermediates.
func (ca *CA) newRoot() (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := ca.opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tender root CA", Organization: []string{ca.opts.TrustDomain}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ca.opts.RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

// selfState is the state of a self-generated root.
func (ca *CA) selfState(key crypto.Signer, root *x509.Certificate, previous, extra []*x509.Certificate) *caState {
	now := ca.opts.Now()
	var prev []*x509.Certificate
	for _, c := range dedupCerts(previous) {
		if now.Before(c.NotAfter) && !c.Equal(root) {
			prev = append(prev, c)
		}
	}
	st := &caState{key: key, cert: root, notAfter: root.NotAfter, chainRoots: []*x509.Certificate{root}, previous: prev, extra: extra}
	return st.finish()
}

// loadSelf returns the self-generated root: the Store's, or a new one
// saved there.
func (ca *CA) loadSelf(ctx context.Context) (*caState, error) {
	extra, err := ca.loadRootsFile()
	if err != nil {
		return nil, err
	}
	if ca.opts.Store == nil {
		key, root, err := ca.newRoot()
		if err != nil {
			return nil, err
		}
		ca.log.Info("made a root certificate, kept in memory only", "root_not_after", root.NotAfter)
		return ca.selfState(key, root, nil, extra), nil
	}
	for range 5 {
		stored, err := ca.loadStored(ctx)
		if err != nil {
			return nil, err
		}
		var previous []*x509.Certificate
		if stored != nil {
			if ca.opts.Now().Before(stored.cert.NotAfter) {
				ca.log.Info("root certificate loaded from the store", "root_not_after", stored.cert.NotAfter, "previous_roots", len(stored.previous))
				return ca.selfState(stored.key, stored.cert, stored.previous, extra), nil
			}
			ca.log.Warn("the stored root certificate expired: making a new one", "root_not_after", stored.cert.NotAfter)
			previous = stored.previous
		}
		key, root, err := ca.newRoot()
		if err != nil {
			return nil, err
		}
		st := ca.selfState(key, root, previous, extra)
		err = ca.save(ctx, st)
		if err == nil {
			ca.log.Info("made a root certificate and saved it", "root_not_after", root.NotAfter)
			return st, nil
		}
		if !errors.Is(err, ErrStoreConflict) {
			return nil, err
		}
		ca.log.Info("another replica saved a root first: loading it")
	}
	return nil, errors.New("the store changed under us repeatedly")
}

// storedRoot is a root read from the Store.
type storedRoot struct {
	key      crypto.Signer
	cert     *x509.Certificate
	previous []*x509.Certificate
}

// loadStored reads the Store; nil when it is empty.
func (ca *CA) loadStored(ctx context.Context) (*storedRoot, error) {
	certPEM, keyPEM, err := ca.opts.Store.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load root: %w", err)
	}
	if certPEM == nil && keyPEM == nil {
		return nil, nil
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("stored root certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("stored root key: %w", err)
	}
	root := certs[0]
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("stored root certificate: not a CA certificate that may sign certificates")
	}
	if !samePublicKey(key.Public(), root.PublicKey) {
		return nil, errors.New("stored root key does not match the stored root certificate")
	}
	return &storedRoot{key: key, cert: root, previous: certs[1:]}, nil
}

func (ca *CA) save(ctx context.Context, st *caState) error {
	keyPEM, err := encodeKey(st.key)
	if err != nil {
		return err
	}
	return ca.opts.Store.Save(ctx, EncodeCertificates(append([]*x509.Certificate{st.cert}, st.previous...)...), keyPEM)
}

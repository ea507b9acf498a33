package inject

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ServingCert is the webhook's TLS certificate and the CA the API server
// verifies it with.
type ServingCert struct {
	CertPEM, KeyPEM, CAPEM []byte
}

// TLS returns the certificate for a tls.Config.
func (s *ServingCert) TLS() (tls.Certificate, error) { return tls.X509KeyPair(s.CertPEM, s.KeyPEM) }

// NewServingCert makes a CA and a serving certificate signed by it for
// hosts (DNS names or IP addresses), valid for validity.
func NewServingCert(hosts []string, validity time.Duration) (*ServingCert, error) {
	now := time.Now().Add(-time.Hour) // some clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "tender-webhook-ca"},
		NotBefore: now, NotAfter: now.Add(validity + 24*time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: now, NotAfter: now.Add(validity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &ServingCert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) //nolint:errcheck // crypto/rand does not fail
	return n
}

// SecretServingCert returns the certificate kept in the Secret
// namespace/name, creating it (for hosts) when it is missing, unusable,
// or expiring within a month. Several control-plane replicas starting at
// once agree on one: the first to create it wins, the others read it.
func SecretServingCert(ctx context.Context, client kubernetes.Interface, namespace, name string, hosts []string) (*ServingCert, error) {
	secrets := client.CoreV1().Secrets(namespace)
	for range 5 {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			if c := fromSecret(s); c != nil {
				return c, nil
			}
			// Unusable or expiring: replace it, if nobody did meanwhile.
			fresh, err := NewServingCert(hosts, 5*365*24*time.Hour)
			if err != nil {
				return nil, err
			}
			s.Data = secretData(fresh)
			if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err == nil {
				return fresh, nil
			} else if !apierrors.IsConflict(err) {
				return nil, fmt.Errorf("webhook secret %s/%s: %w", namespace, name, err)
			}
		case apierrors.IsNotFound(err):
			fresh, err := NewServingCert(hosts, 5*365*24*time.Hour)
			if err != nil {
				return nil, err
			}
			s := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
					Labels: map[string]string{"app.kubernetes.io/part-of": "tender", "app.kubernetes.io/managed-by": "tender-controlplane"}},
				Type: corev1.SecretTypeTLS, Data: secretData(fresh),
			}
			if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err == nil {
				return fresh, nil
			} else if !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("webhook secret %s/%s: %w", namespace, name, err)
			}
		default:
			return nil, fmt.Errorf("webhook secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, fmt.Errorf("webhook secret %s/%s: changed under us repeatedly", namespace, name)
}

func secretData(c *ServingCert) map[string][]byte {
	return map[string][]byte{corev1.TLSCertKey: c.CertPEM, corev1.TLSPrivateKeyKey: c.KeyPEM, "ca.crt": c.CAPEM}
}

func fromSecret(s *corev1.Secret) *ServingCert {
	c := &ServingCert{CertPEM: s.Data[corev1.TLSCertKey], KeyPEM: s.Data[corev1.TLSPrivateKeyKey], CAPEM: s.Data["ca.crt"]}
	pair, err := c.TLS()
	if err != nil || len(c.CAPEM) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || time.Until(leaf.NotAfter) < 30*24*time.Hour {
		return nil
	}
	return c
}

// PatchCABundle sets caBundle in every webhook of the
// MutatingWebhookConfiguration name, as Linkerd's and Istio's control
// planes do, so the API server trusts the certificate. It reports whether
// it changed anything.
func PatchCABundle(ctx context.Context, client kubernetes.Interface, name string, ca []byte) (bool, error) {
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	for range 5 {
		cfg, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("webhook configuration %s: %w", name, err)
		}
		changed := false
		for i := range cfg.Webhooks {
			if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, ca) {
				cfg.Webhooks[i].ClientConfig.CABundle = ca
				changed = true
			}
		}
		if !changed {
			return false, nil
		}
		if _, err := api.Update(ctx, cfg, metav1.UpdateOptions{}); err == nil {
			return true, nil
		} else if !apierrors.IsConflict(err) {
			return false, fmt.Errorf("webhook configuration %s: %w", name, err)
		}
	}
	return false, fmt.Errorf("webhook configuration %s: changed under us repeatedly", name)
}

package kube

import (
	"context"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tender-mesh/tender/security"
)

// SecretStore keeps the root in the Kubernetes Secret Namespace/Name,
// under the keys root-cert.pem, root-key.pem and previous-root-cert.pem
// (the previous roots; absent or empty when there are none). The Secret
// must exist (the Helm chart creates it empty, type Opaque); the store
// fills it. Save updates the Secret with the resourceVersion of the last
// Load, so of several replicas saving at once only the first succeeds;
// the others get security.ErrStoreConflict. Use it as a pointer: it
// remembers that resourceVersion.
type SecretStore struct {
	Client          kubernetes.Interface
	Namespace, Name string

	mu              sync.Mutex // guards resourceVersion
	resourceVersion string     // of the Secret last read by Load
}

// Load implements security.Store. A missing Secret is an error.
func (s *SecretStore) Load(ctx context.Context) (certPEM, keyPEM []byte, err error) {
	sec, err := s.Client.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("%s: the secret does not exist (the Helm chart creates it, empty): %w", s.where(), err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.where(), err)
	}
	s.mu.Lock()
	s.resourceVersion = sec.ResourceVersion
	s.mu.Unlock()
	certPEM, keyPEM, err = security.JoinRoots(sec.Data[security.RootCertKey], sec.Data[security.RootKeyKey], sec.Data[security.PreviousRootCertKey])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.where(), err)
	}
	return certPEM, keyPEM, nil
}

// Save implements security.Store.
func (s *SecretStore) Save(ctx context.Context, certPEM, keyPEM []byte) error {
	root, prev, err := security.SplitRoots(certPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", s.where(), err)
	}
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", s.where(), err)
	}
	s.mu.Lock()
	if s.resourceVersion != "" {
		sec.ResourceVersion = s.resourceVersion
	}
	s.mu.Unlock()
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[security.RootCertKey] = root
	sec.Data[security.RootKeyKey] = keyPEM
	if len(prev) > 0 {
		sec.Data[security.PreviousRootCertKey] = prev
	} else {
		delete(sec.Data, security.PreviousRootCertKey)
	}
	updated, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("%s: %w", s.where(), security.ErrStoreConflict)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.where(), err)
	}
	s.mu.Lock()
	s.resourceVersion = updated.ResourceVersion
	s.mu.Unlock()
	return nil
}

func (s *SecretStore) where() string { return fmt.Sprintf("secret %s/%s", s.Namespace, s.Name) }

var _ security.Store = (*SecretStore)(nil)

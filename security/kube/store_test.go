package kube

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tender-mesh/tender/security"
)

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

func emptySecret() *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "tender-system", Name: "tender-ca"}, Type: corev1.SecretTypeOpaque}
}

func getSecret(t *testing.T, client *fake.Clientset) *corev1.Secret {
	t.Helper()
	sec, err := client.CoreV1().Secrets("tender-system").Get(context.Background(), "tender-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

func TestSecretStore(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(emptySecret())
	store := &SecretStore{Client: client, Namespace: "tender-system", Name: "tender-ca"}
	ca := mustCA(t, security.CAOptions{Store: store})
	sec := getSecret(t, client)
	if !bytes.Equal(sec.Data[security.RootCertKey], ca.Bundle()) || len(sec.Data[security.RootKeyKey]) == 0 {
		t.Errorf("secret data keys %v: want the root and its key", slices.Sorted(maps.Keys(sec.Data)))
	}
	other := mustCA(t, security.CAOptions{Store: &SecretStore{Client: client, Namespace: "tender-system", Name: "tender-ca"}})
	if !bytes.Equal(ca.Bundle(), other.Bundle()) {
		t.Error("a second replica made another root")
	}
	if err := ca.RotateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	sec = getSecret(t, client)
	if !bytes.Equal(sec.Data[security.PreviousRootCertKey], security.EncodeCertificates(ca.Roots()[1])) {
		t.Error("the previous root is not in the secret after a rotation")
	}
}

func TestSecretStoreMissing(t *testing.T) {
	store := &SecretStore{Client: fake.NewClientset(), Namespace: "tender-system", Name: "tender-ca"}
	_, err := security.NewCA(context.Background(), security.CAOptions{Store: store})
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !apierrors.IsNotFound(err) {
		t.Errorf("NewCA with no secret: %v, want an error saying it does not exist", err)
	}
}

func TestSecretStoreHalfRoot(t *testing.T) {
	s := emptySecret()
	s.Data = map[string][]byte{security.RootKeyKey: []byte("key")}
	store := &SecretStore{Client: fake.NewClientset(s), Namespace: "tender-system", Name: "tender-ca"}
	_, _, err := store.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "secret tender-system/tender-ca: root-cert.pem missing") {
		t.Errorf("Load without a root: %v, want an error saying it is missing", err)
	}
}

func TestSecretStoreConflict(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(emptySecret())
	client.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(secretsGVR.GroupResource(), "tender-ca", errors.New("the object has been modified"))
	})
	store := &SecretStore{Client: client, Namespace: "tender-system", Name: "tender-ca"}
	if _, _, err := store.Load(ctx); err != nil {
		t.Fatal(err)
	}
	certPEM := security.EncodeCertificates(mustCA(t, security.CAOptions{}).Roots()...)
	if err := store.Save(ctx, certPEM, []byte("key")); !errors.Is(err, security.ErrStoreConflict) {
		t.Errorf("Save = %v, want ErrStoreConflict", err)
	}
}

// TestSecretStoreRace has another replica fill the secret between this
// one's Load and Save: this one uses the other's root.
func TestSecretStoreRace(t *testing.T) {
	// The winner's root and key, as its own store saved them.
	winnerClient := fake.NewClientset(emptySecret())
	winner := mustCA(t, security.CAOptions{Store: &SecretStore{Client: winnerClient, Namespace: "tender-system", Name: "tender-ca"}})
	won := getSecret(t, winnerClient).Data

	client := fake.NewClientset(emptySecret())
	var updates atomic.Int32
	client.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if updates.Add(1) > 1 {
			return false, nil, nil
		}
		s := emptySecret()
		s.Data = maps.Clone(won)
		if err := client.Tracker().Update(secretsGVR, s, s.Namespace); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewConflict(secretsGVR.GroupResource(), "tender-ca", errors.New("the object has been modified"))
	})
	ca := mustCA(t, security.CAOptions{Store: &SecretStore{Client: client, Namespace: "tender-system", Name: "tender-ca"}})
	if !bytes.Equal(ca.Bundle(), winner.Bundle()) {
		t.Error("the CA did not take the root the other replica saved")
	}
	if n := updates.Load(); n != 1 {
		t.Errorf("%d updates, want 1", n)
	}
}

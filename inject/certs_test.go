package inject

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestServingCertInSecret(t *testing.T) {
	ctx := context.Background()
	hosts := []string{"tender-controlplane.tender-system.svc", "127.0.0.1"}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "tender-sidecar-injector"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "inject.tender.dev"}, {Name: "inject2.tender.dev"}},
	}
	client := fake.NewClientset(cfg)
	first, err := SecretServingCert(ctx, client, "tender-system", "tender-webhook-tls", hosts)
	if err != nil {
		t.Fatal(err)
	}
	// Another replica gets the same certificate.
	second, err := SecretServingCert(ctx, client, "tender-system", "tender-webhook-tls", hosts)
	if err != nil || !bytes.Equal(first.CertPEM, second.CertPEM) || !bytes.Equal(first.CAPEM, second.CAPEM) {
		t.Fatalf("second replica got another certificate (err %v)", err)
	}
	changed, err := PatchCABundle(ctx, client, "tender-sidecar-injector", first.CAPEM)
	if err != nil || !changed {
		t.Fatalf("patch: changed %v err %v", changed, err)
	}
	if changed, _ := PatchCABundle(ctx, client, "tender-sidecar-injector", first.CAPEM); changed {
		t.Error("patching the same CA again changed the configuration")
	}
	got, _ := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "tender-sidecar-injector", metav1.GetOptions{})
	for _, w := range got.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, first.CAPEM) {
			t.Errorf("webhook %s caBundle not set", w.Name)
		}
	}
	if _, err := PatchCABundle(ctx, client, "missing", first.CAPEM); err == nil {
		t.Error("patching a missing configuration did not fail")
	}

	// A client trusting the CA reaches a server with the certificate by
	// both of its names.
	pair, err := first.TLS()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(first.CAPEM)
	for _, name := range hosts {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}}}
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Errorf("TLS as %s: %v", name, err)
			continue
		}
		resp.Body.Close()
	}
}

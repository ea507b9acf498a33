package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/tender-mesh/tender/inject"
	"github.com/tender-mesh/tender/telemetry"
)

// webhookConfig is the injector's part of the flags.
type webhookConfig struct {
	Addr       string
	CertFile   string
	KeyFile    string
	Secret     string
	ConfigName string
	Service    string
	Namespace  string
	Hosts      []string
	Inject     inject.Config
	// MaxRequestBytes, MaxConcurrent and Timeout bound the requests.
	MaxRequestBytes int64
	MaxConcurrent   int
	Timeout         time.Duration
}

// hosts are the names the webhook's certificate is for.
func (w *webhookConfig) hosts() []string {
	svc, ns := w.Service, w.Namespace
	return append([]string{svc + "." + ns + ".svc", svc, svc + "." + ns, svc + "." + ns + ".svc.cluster.local"}, w.Hosts...)
}

// webhook serves the injector over TLS until ctx ends: with the
// certificate files when given (cert-manager; reread when they change),
// else with a certificate kept in a Secret, whose CA it keeps in the
// MutatingWebhookConfiguration's caBundle.
func serveWebhook(ctx context.Context, cfg webhookConfig, client kubernetes.Interface, lis net.Listener, metrics *telemetry.ControlPlane,
	logger *slog.Logger) error {
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	nsInformer := factory.Core().V1().Namespaces()
	nsLister := nsInformer.Lister()
	nsInformer.Informer() // registers it before Start
	var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if cfg.CertFile != "" {
		getCert = fileCert(cfg.CertFile, cfg.KeyFile, logger)
	} else {
		sc, err := inject.SecretServingCert(ctx, client, cfg.Namespace, cfg.Secret, cfg.hosts())
		if err != nil {
			return err
		}
		pair, err := sc.TLS()
		if err != nil {
			return fmt.Errorf("webhook certificate: %w", err)
		}
		getCert = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }
		if err := keepCABundle(ctx, client, cfg.ConfigName, sc.CAPEM, logger); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	wh := &inject.Webhook{
		Config: cfg.Inject,
		NamespaceLabels: func(ctx context.Context, name string) (map[string]string, error) {
			ns, err := nsLister.Get(name)
			if apierrors.IsNotFound(err) {
				// Created a moment ago, not in the cache yet: ask.
				ns, err = client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return nil, err
			}
			return ns.Labels, nil
		},
		Observe:        func(result string) { metrics.Injections.WithLabelValues(result).Inc() },
		Logger:         logger,
		MaxReviewBytes: cfg.MaxRequestBytes,
	}
	mux := http.NewServeMux()
	// The API server waits timeoutSeconds (at most 30 s) for an answer:
	// a review is read, decided and written within --webhook-timeout, and
	// at most --webhook-max-concurrent are decided at once.
	mux.Handle("/inject", http.TimeoutHandler(limitConcurrency(wh, cfg.MaxConcurrent), cfg.Timeout, "tender injector: timed out"))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }) //nolint:errcheck // client gone
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: webhookHeaderTimeout,
		ReadTimeout:       cfg.Timeout,
		WriteTimeout:      cfg.Timeout + 5*time.Second,
		IdleTimeout:       webhookIdleTimeout,
		MaxHeaderBytes:    webhookMaxHeader,
		TLSConfig:         &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12},
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck // best effort on the way out
	}()
	logger.Info("sidecar injector serving", "addr", lis.Addr().String(), "native_sidecar", cfg.Inject.NativeSidecar, "image", cfg.Inject.Image)
	if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook server: %w", err)
	}
	return nil
}

// keepCABundle watches the MutatingWebhookConfiguration and sets its
// caBundle to ca whenever it differs (a helm upgrade rewrites it).
func keepCABundle(ctx context.Context, client kubernetes.Interface, name string, ca []byte, logger *slog.Logger) error {
	inf := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	})).Admissionregistration().V1().MutatingWebhookConfigurations().Informer()
	patch := func(obj any) {
		if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); !ok {
			return
		}
		changed, err := inject.PatchCABundle(ctx, client, name, ca)
		switch {
		case err != nil:
			logger.Warn("webhook caBundle not set; pods are created without a sidecar until it is", "config", name, "err", err)
		case changed:
			logger.Info("webhook caBundle set", "config", name)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    patch,
		UpdateFunc: func(_, obj any) { patch(obj) },
	}); err != nil {
		return err
	}
	go inf.Run(ctx.Done())
	return nil
}

// fileCert serves the certificate in certFile and keyFile, reloading it
// when the files change (cert-manager renews them in place).
func fileCert(certFile, keyFile string, logger *slog.Logger) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var mu sync.Mutex
	var cur *tls.Certificate
	var stamp time.Time
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		fi, err := os.Stat(certFile)
		if err == nil && (cur == nil || fi.ModTime() != stamp) {
			pair, lerr := tls.LoadX509KeyPair(certFile, keyFile)
			if lerr == nil {
				cur, stamp = &pair, fi.ModTime()
			} else if cur == nil {
				return nil, fmt.Errorf("webhook certificate: %w", lerr)
			} else {
				logger.Warn("webhook certificate not reloaded; serving the previous one", "err", lerr)
			}
		}
		if cur == nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		return cur, nil
	}
}

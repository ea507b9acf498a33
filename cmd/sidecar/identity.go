package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/tender-mesh/tender/security"
	"github.com/tender-mesh/tender/security/workload"
	"github.com/tender-mesh/tender/telemetry"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// newIdentity prepares the workload identity; nil without --ca-addr.
func newIdentity(c *runConfig, logger *slog.Logger, health *telemetry.Sidecar) (*workload.Manager, error) {
	id := c.Identity
	if id.CAAddr == "" {
		return nil, nil
	}
	roots := []byte(os.Getenv("TENDER_CA_ROOT"))
	if id.RootFile != "" {
		var err error
		if roots, err = os.ReadFile(id.RootFile); err != nil {
			return nil, fmt.Errorf("--ca-root-file: %w", err)
		}
	}
	if id.BundleFile != "" {
		// The bundle a previous run of this sidecar got over SDS: it
		// holds a root rotated in since the pod was made.
		if b, err := os.ReadFile(id.BundleFile); err == nil {
			roots = append(append(roots, '\n'), b...)
		} else if !errors.Is(err, fs.ErrNotExist) {
			logger.Warn("cannot read the kept trust bundle", "file", id.BundleFile, "err", err)
		}
	}
	return workload.New(workload.Options{
		CAAddr:         id.CAAddr,
		Roots:          roots,
		ControlPlaneID: id.ControlPlaneID,
		TrustDomain:    id.TrustDomain,
		TokenFile:      id.TokenFile,
		TTL:            id.CertTTL,
		Logger:         logger,
		OnIssued: func(notAfter time.Time, renewal bool) {
			health.CertExpiry.Set(float64(notAfter.Unix()))
			if renewal {
				health.CertRenewals.Inc()
			}
		},
		OnFailure: func() { health.CertFailures.Inc() },
	})
}

// applyTrustBundle installs the trust bundle of an accepted config, the
// SDS secret ROOTCA, and keeps it in file (when given) for the next start;
// a config without it keeps the bundle in use.
func applyTrustBundle(cfg *xdsclient.Config, ident *workload.Manager, file string, logger *slog.Logger) error {
	sec := cfg.Secrets[xdsclient.RootCAName]
	if sec == nil {
		return nil
	}
	pem := sec.GetValidationContext().GetTrustedCa().GetInlineBytes()
	if len(pem) == 0 {
		return errors.New("secret ROOTCA: no inline trusted CA")
	}
	if err := ident.SetRoots(pem); err != nil {
		return fmt.Errorf("secret ROOTCA: %w", err)
	}
	if file != "" {
		if err := security.WriteFileAtomic(file, pem, 0o644); err != nil {
			logger.Warn("cannot keep the trust bundle", "file", file, "err", err)
		}
	}
	return nil
}

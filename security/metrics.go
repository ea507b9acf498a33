package security

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tender-mesh/tender/telemetry"
)

// Reasons a certificate request is refused, the values of the reason
// label of tender_ca_requests_refused_total.
const (
	reasonUnauthenticated = "unauthenticated"
	reasonBadRequest      = "bad_request"
	reasonInternal        = "internal"
)

// metrics are the CA service's metrics.
type metrics struct {
	issued  prometheus.Counter
	refused *prometheus.CounterVec
}

// newMetrics makes the metrics and registers them on reg, unless reg is
// nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		issued:  telemetry.CACertificatesIssued.Counter(),
		refused: telemetry.CARequestsRefused.CounterVec(),
	}
	for _, r := range []string{reasonUnauthenticated, reasonBadRequest, reasonInternal} {
		m.refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.issued, m.refused} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("security: register CA metrics: %w", err)
	}
	return m, nil
}

package telemetry

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// ControlPlane holds the control plane's own metrics.
type ControlPlane struct {
	// ConnectedProxies counts open xDS streams by mode (sotw, delta).
	ConnectedProxies *prometheus.GaugeVec
	// Pushes counts responses sent, by resource type.
	Pushes *prometheus.CounterVec
	// PushSeconds is the time from a registry change to its response on
	// the wire, by resource type.
	PushSeconds *prometheus.HistogramVec
	// NACKs counts responses a client rejected, by resource type.
	NACKs *prometheus.CounterVec
	// Services is the number of services in the current snapshot.
	Services prometheus.Gauge
	// Conflicts counts services reported by more than one source.
	Conflicts prometheus.Counter
	// Injections counts the injector's decisions by result (injected,
	// skipped, refused).
	Injections *prometheus.CounterVec
	// SourceErrors counts errors reported by discovery sources.
	SourceErrors *prometheus.CounterVec
	// SnapshotVersion is the registry snapshot the xDS cache serves.
	SnapshotVersion prometheus.Gauge
	// SourceHealthy is 1 while a source's last attempt succeeded.
	SourceHealthy *prometheus.GaugeVec
}

// NewControlPlane creates the control plane metrics and registers them
// on reg.
func NewControlPlane(reg prometheus.Registerer) (*ControlPlane, error) {
	m := &ControlPlane{
		ConnectedProxies: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tender_xds_connected_proxies",
			Help: "xDS streams open to this control plane, by mode (sotw or delta).",
		}, []string{"mode"}),
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tender_xds_pushes_total",
			Help: "xDS responses sent to proxies, by resource type.",
		}, []string{"type"}),
		PushSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tender_xds_push_duration_seconds",
			Help:    "Time from a registry snapshot to the xDS response that carries it, by resource type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
		NACKs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tender_xds_nacks_total",
			Help: "xDS responses rejected by proxies, by resource type.",
		}, []string{"type"}),
		Services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_registry_services",
			Help: "Services in the current registry snapshot.",
		}),
		Injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tender_injector_requests_total",
			Help: "Pods the sidecar injector saw, by result: injected, skipped, refused.",
		}, []string{"result"}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tender_registry_conflicts_total",
			Help: "Services reported by more than one discovery source; the higher-precedence source wins.",
		}),
		SourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tender_discovery_source_errors_total",
			Help: "Errors reported by discovery sources, by source.",
		}, []string{"source"}),
		SnapshotVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_xds_snapshot_version",
			Help: "Registry snapshot version currently served over xDS.",
		}),
		SourceHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tender_discovery_source_healthy",
			Help: "1 while a discovery source's last attempt succeeded, 0 while it fails (its last good services are still served).",
		}, []string{"source"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.ConnectedProxies, m.Pushes, m.PushSeconds, m.NACKs, m.Services, m.Conflicts, m.Injections, m.SourceErrors, m.SnapshotVersion, m.SourceHealthy} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("telemetry: register control plane metrics: %w", err)
	}
	return m, nil
}

package telemetry

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Sidecar holds the sidecar's health metrics: its xDS connection and the
// config it runs.
type Sidecar struct {
	// XDSConnected is 1 while the ADS stream is up.
	XDSConnected prometheus.Gauge
	// ConfigRejected counts configs the sidecar NACKed.
	ConfigRejected prometheus.Counter
	// LastUpdate is when the sidecar last applied a config.
	LastUpdate prometheus.Gauge
	// Clusters is the number of clusters in the applied config.
	Clusters prometheus.Gauge
	// CertExpiry is when the workload certificate expires; CertRenewals
	// counts renewals, CertFailures failed certificate requests.
	CertExpiry   prometheus.Gauge
	CertRenewals prometheus.Counter
	CertFailures prometheus.Counter
	versions     *prometheus.GaugeVec
}

// NewSidecar registers the sidecar's health metrics and the Go and process
// collectors on reg.
func NewSidecar(reg prometheus.Registerer) (*Sidecar, error) {
	m := &Sidecar{
		XDSConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_sidecar_xds_connected",
			Help: "1 while the sidecar's ADS stream to the control plane is up, else 0.",
		}),
		ConfigRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tender_sidecar_config_rejected_total",
			Help: "Configs from the control plane the sidecar rejected (NACKed).",
		}),
		LastUpdate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_sidecar_config_last_update_timestamp_seconds",
			Help: "Unix time of the last config the sidecar applied.",
		}),
		Clusters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_sidecar_clusters",
			Help: "Clusters in the config the sidecar runs.",
		}),
		CertExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tender_workload_cert_expiry_timestamp_seconds",
			Help: "Unix time the workload certificate expires (0: none yet, or no mutual TLS).",
		}),
		CertRenewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tender_workload_cert_renewals_total",
			Help: "Workload certificates renewed (not counting the first).",
		}),
		CertFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tender_workload_cert_request_failures_total",
			Help: "Certificate requests to the CA that failed (refused token, CA unreachable).",
		}),
		versions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tender_sidecar_config_version_info",
			Help: "The xDS version the sidecar runs, per resource type (always 1).",
		}, []string{"type", "version"}),
	}
	for _, c := range []prometheus.Collector{m.XDSConnected, m.ConfigRejected, m.LastUpdate, m.Clusters, m.versions,
		m.CertExpiry, m.CertRenewals, m.CertFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("sidecar metrics: %w", err)
		}
	}
	return m, nil
}

// Applied records an applied config: its versions by type URL and the
// number of clusters.
func (m *Sidecar) Applied(versions map[string]string, clusters int) {
	m.versions.Reset()
	for _, typeURL := range slices.Sorted(maps.Keys(versions)) {
		// type.googleapis.com/envoy.config.cluster.v3.Cluster → Cluster
		name := path.Ext(typeURL)
		if len(name) > 1 {
			name = name[1:]
		}
		m.versions.WithLabelValues(name, versions[typeURL]).Set(1)
	}
	m.Clusters.Set(float64(clusters))
	m.LastUpdate.Set(float64(time.Now().UnixNano()) / 1e9)
}

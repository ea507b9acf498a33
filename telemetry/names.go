package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Metric is what users see of a metric: its name, help text and labels.
// The packages that count (interceptor, security) make their collectors
// from these, so every name is declared here, once.
type Metric struct {
	Name, Help string
	Labels     []string
}

// CounterVec makes the metric as a counter.
func (m Metric) CounterVec() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: m.Name, Help: m.Help}, m.Labels)
}

// Counter makes the metric, which has no labels, as a counter.
func (m Metric) Counter() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: m.Name, Help: m.Help})
}

// HistogramVec makes the metric as a histogram with buckets.
func (m Metric) HistogramVec(buckets []float64) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: m.Name, Help: m.Help, Buckets: buckets}, m.Labels)
}

// Label sets of the request and TCP metrics. Cardinality is bounded by the
// mesh's workloads and services: no paths, no pod addresses. The peers'
// SPIFFE IDs and connection_security_policy (mutual_tls or none) come from
// the mesh's mutual TLS, as in Istio's metrics.
var (
	TCPLabels = []string{"direction", "source_workload", "source_namespace", "destination_service",
		"destination_workload", "source_principal", "destination_principal", "connection_security_policy"}
	RequestLabels = append(TCPLabels[:len(TCPLabels):len(TCPLabels)], "response_code", "grpc_status")
)

// The sidecar's request and connection metrics.
var (
	Requests        = Metric{"tender_requests_total", "HTTP and gRPC requests through the sidecar.", RequestLabels}
	RequestDuration = Metric{"tender_request_duration_seconds", "Time from the request's arrival at the sidecar to the end of its response.", RequestLabels}
	RequestBytes    = Metric{"tender_request_bytes", "Request body sizes.", RequestLabels}
	ResponseBytes   = Metric{"tender_response_bytes", "Response body sizes.", RequestLabels}
	TCPOpened       = Metric{"tender_tcp_connections_opened_total", "Opaque TCP connections opened through the sidecar.", TCPLabels}
	TCPClosed       = Metric{"tender_tcp_connections_closed_total", "Opaque TCP connections closed.", TCPLabels}
	TCPSent         = Metric{"tender_tcp_sent_bytes_total", "Bytes sent to the client of opaque TCP connections (the response direction).", TCPLabels}
	TCPReceived     = Metric{"tender_tcp_received_bytes_total", "Bytes received from the client of opaque TCP connections (the request direction).", TCPLabels}
)

// The sidecar's resilience decisions, per destination service.
var (
	UpstreamRetries   = Metric{"tender_upstream_retries_total", "Requests sent again after a failed try.", []string{"destination_service"}}
	UpstreamOverflows = Metric{"tender_upstream_overflows_total",
		"Requests (limit=requests) and retries (limit=retries) refused by a circuit breaker or the retry budget.", []string{"destination_service", "limit"}}
	OutlierEjections = Metric{"tender_outlier_ejections_total", "Endpoints ejected by outlier detection.", []string{"destination_service"}}
	UpstreamTimeouts = Metric{"tender_upstream_timeouts_total",
		"Requests that ran out of their timeout (or gRPC deadline) before their response.", []string{"destination_service"}}
)

// What the mesh's security refused (the sidecar), and what its CA did
// (the control plane).
var (
	MTLSHandshakeFailures = Metric{"tender_mtls_handshake_failures_total",
		"Mutual TLS handshakes that failed: a peer certificate expired, of another CA or trust domain, or none.", []string{"direction"}}
	MTLSPlaintextRefused = Metric{"tender_mtls_plaintext_refused_total",
		"Plaintext connections refused because the destination is STRICT.", []string{"destination_service"}}
	AuthzDenied = Metric{"tender_authz_denied_total",
		"Requests and TCP connections an authorization policy denied, by the policy that decided (\"\" when no ALLOW policy matched).",
		[]string{"destination_service", "policy"}}
	CACertificatesIssued = Metric{"tender_ca_certificates_issued_total", "Workload certificates the CA issued.", nil}
	CARequestsRefused    = Metric{"tender_ca_requests_refused_total",
		"Certificate requests the CA refused, by reason: unauthenticated, bad_request, internal.", []string{"reason"}}
)

// Span attribute keys: OpenTelemetry's semantic conventions, then the
// mesh's own.
const (
	AttrMethod       = "http.request.method"
	AttrStatus       = "http.response.status_code"
	AttrPath         = "url.path"
	AttrServerAddr   = "server.address"
	AttrServerPort   = "server.port"
	AttrPeerAddr     = "network.peer.address"
	AttrProtoVersion = "network.protocol.version"
	AttrRPCSystem    = "rpc.system"
	AttrRPCService   = "rpc.service"
	AttrRPCMethod    = "rpc.method"
	AttrGRPCStatus   = "rpc.grpc.status_code"
	AttrPeerService  = "peer.service"
	AttrSrcWorkload  = "tender.source.workload"
	AttrSrcNS        = "tender.source.namespace"
	AttrDstWorkload  = "tender.destination.workload"
	AttrDstNS        = "tender.destination.namespace"
	AttrDstService   = "tender.destination.service"
	AttrUpstream     = "tender.upstream.endpoint"
	AttrRetries      = "tender.retry.count"
	AttrFlags        = "tender.response_flags"
	AttrDirection    = "tender.direction"
	AttrSrcPrincipal = "tender.source.principal"
	AttrDstPrincipal = "tender.destination.principal"
	AttrSecurity     = "tender.connection_security_policy"
)

package interceptor

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tender-mesh/tender/telemetry"
)

// Metrics holds the sidecar's request and connection metrics.
type Metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reqBytes  *prometheus.HistogramVec
	respBytes *prometheus.HistogramVec
	tcpOpen   *prometheus.CounterVec
	tcpClose  *prometheus.CounterVec
	tcpSent   *prometheus.CounterVec
	tcpRecv   *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	sizes := prometheus.ExponentialBuckets(64, 4, 9) // 64 B to 4 MiB
	m := &Metrics{
		requests:  telemetry.Requests.CounterVec(),
		duration:  telemetry.RequestDuration.HistogramVec([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		reqBytes:  telemetry.RequestBytes.HistogramVec(sizes),
		respBytes: telemetry.ResponseBytes.HistogramVec(sizes),
		tcpOpen:   telemetry.TCPOpened.CounterVec(),
		tcpClose:  telemetry.TCPClosed.CounterVec(),
		tcpSent:   telemetry.TCPSent.CounterVec(),
		tcpRecv:   telemetry.TCPReceived.CounterVec(),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.reqBytes, m.respBytes,
		m.tcpOpen, m.tcpClose, m.tcpSent, m.tcpRecv} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("request metrics: %w", err)
		}
	}
	return m, nil
}

// Middleware records every exchange once it is done. Exemplars carry the
// trace id of sampled requests.
func (m *Metrics) Middleware() Middleware {
	record := m.record
	return func(next Handler) Handler {
		return HandlerFunc(func(e *Exchange) (Response, error) {
			e.Defer(record)
			return next.Handle(e)
		})
	}
}

func (m *Metrics) record(e *Exchange) {
	lv := [...]string{e.Direction.String(), e.Source.Workload, e.Source.Namespace, orUnknown(e.Service),
		e.Destination.Workload, orUnknown(e.SourcePrincipal), orUnknown(e.DestinationPrincipal), e.SecurityPolicy(),
		statusLabel(e.Status), e.GRPCStatus}
	labels := lv[:]
	var ex prometheus.Labels
	if e.Trace.IsSampled() {
		ex = prometheus.Labels{"trace_id": e.Trace.TraceID().String()}
	}
	c := m.requests.WithLabelValues(labels...)
	d := m.duration.WithLabelValues(labels...)
	if ex != nil {
		c.(prometheus.ExemplarAdder).AddWithExemplar(1, ex)
		d.(prometheus.ExemplarObserver).ObserveWithExemplar(e.Duration.Seconds(), ex)
	} else {
		c.Inc()
		d.Observe(e.Duration.Seconds())
	}
	m.reqBytes.WithLabelValues(labels...).Observe(float64(e.RequestBytes()))
	m.respBytes.WithLabelValues(labels...).Observe(float64(e.ResponseBytes))
}

// TCPOpen counts an opened connection.
func (m *Metrics) TCPOpen(e *Exchange) {
	m.tcpOpen.WithLabelValues(tcpLabelValues(e)...).Inc()
}

// TCPClose counts a closed connection and its bytes.
func (m *Metrics) TCPClose(e *Exchange) {
	lv := tcpLabelValues(e)
	m.tcpClose.WithLabelValues(lv...).Inc()
	m.tcpSent.WithLabelValues(lv...).Add(float64(e.ResponseBytes))
	m.tcpRecv.WithLabelValues(lv...).Add(float64(e.RequestBytes()))
}

func tcpLabelValues(e *Exchange) []string {
	return []string{e.Direction.String(), e.Source.Workload, e.Source.Namespace, orUnknown(e.Service), e.Destination.Workload,
		orUnknown(e.SourcePrincipal), orUnknown(e.DestinationPrincipal), e.SecurityPolicy()}
}

// TCPObserver is told about opaque TCP connections: when they open, and
// when they close with their byte counts in the Exchange.
type TCPObserver interface {
	TCPOpen(e *Exchange)
	TCPClose(e *Exchange)
}

var _ TCPObserver = (*Metrics)(nil)

// ResilienceMetrics count the sidecar's resilience decisions per
// destination service. A nil *ResilienceMetrics counts nothing.
type ResilienceMetrics struct {
	retries   *prometheus.CounterVec
	overflows *prometheus.CounterVec
	ejections *prometheus.CounterVec
	timeouts  *prometheus.CounterVec
}

// NewResilienceMetrics registers the metrics with reg.
func NewResilienceMetrics(reg prometheus.Registerer) (*ResilienceMetrics, error) {
	m := &ResilienceMetrics{
		retries:   telemetry.UpstreamRetries.CounterVec(),
		overflows: telemetry.UpstreamOverflows.CounterVec(),
		ejections: telemetry.OutlierEjections.CounterVec(),
		timeouts:  telemetry.UpstreamTimeouts.CounterVec(),
	}
	for _, c := range []prometheus.Collector{m.retries, m.overflows, m.ejections, m.timeouts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("resilience metrics: %w", err)
		}
	}
	return m, nil
}

func (m *ResilienceMetrics) retry(svc string) {
	if m != nil {
		m.retries.WithLabelValues(orUnknown(svc)).Inc()
	}
}

func (m *ResilienceMetrics) overflow(svc, limit string) {
	if m != nil {
		m.overflows.WithLabelValues(orUnknown(svc), limit).Inc()
	}
}

// Ejection counts an endpoint ejected from svc.
func (m *ResilienceMetrics) Ejection(svc string) {
	if m != nil {
		m.ejections.WithLabelValues(orUnknown(svc)).Inc()
	}
}

// Timeout counts a request of svc that timed out.
func (m *ResilienceMetrics) Timeout(svc string) {
	if m != nil {
		m.timeouts.WithLabelValues(orUnknown(svc)).Inc()
	}
}

// SecurityMetrics count what the mesh's security refused. A nil
// *SecurityMetrics counts nothing.
type SecurityMetrics struct {
	handshakes *prometheus.CounterVec
	plaintext  *prometheus.CounterVec
	denied     *prometheus.CounterVec
}

// NewSecurityMetrics registers the metrics with reg.
func NewSecurityMetrics(reg prometheus.Registerer) (*SecurityMetrics, error) {
	m := &SecurityMetrics{
		handshakes: telemetry.MTLSHandshakeFailures.CounterVec(),
		plaintext:  telemetry.MTLSPlaintextRefused.CounterVec(),
		denied:     telemetry.AuthzDenied.CounterVec(),
	}
	for _, c := range []prometheus.Collector{m.handshakes, m.plaintext, m.denied} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("security metrics: %w", err)
		}
	}
	return m, nil
}

// HandshakeFailed counts a failed mutual TLS handshake.
func (m *SecurityMetrics) HandshakeFailed(d Direction) {
	if m != nil {
		m.handshakes.WithLabelValues(d.String()).Inc()
	}
}

// PlaintextRefused counts a plaintext connection refused by STRICT mode.
func (m *SecurityMetrics) PlaintextRefused(svc string) {
	if m != nil {
		m.plaintext.WithLabelValues(orUnknown(svc)).Inc()
	}
}

// Denied counts a request or connection denied by policy.
func (m *SecurityMetrics) Denied(svc, policy string) {
	if m != nil {
		m.denied.WithLabelValues(orUnknown(svc), policy).Inc()
	}
}

// statusLabels holds the response_code label of every status, so a
// request's labels cost no allocation.
var statusLabels = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return strconv.Itoa(code)
}

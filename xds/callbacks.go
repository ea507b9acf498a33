package xds

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// Stream modes.
const (
	modeSotW  = "sotw"
	modeDelta = "delta"
)

// stream is what the server knows of one connected proxy; guarded by
// Server.mu.
type stream struct {
	id     int64
	mode   string
	node   string
	opened time.Time
	// sent and acked hold, per type URL, the version last sent and the
	// version last acknowledged; sentNonce and ackedNonce the nonces of
	// the last response and of the last one acknowledged.
	sent, acked           map[string]string
	sentNonce, ackedNonce map[string]string
	sentAt                map[string]time.Time
	// nacked holds the last rejection per type URL.
	nacked map[string]string
}

// ProxyStatus describes one connected proxy for debugging.
type ProxyStatus struct {
	Node   string            `json:"node"`
	Mode   string            `json:"mode"`
	Opened time.Time         `json:"opened"`
	Sent   map[string]string `json:"sent"`
	Acked  map[string]string `json:"acked"`
	NACKed map[string]string `json:"nacked,omitempty"`
	// Status is, per type URL the control plane serves: SYNCED (the
	// proxy acknowledged the last response sent to it: it holds the
	// current version of everything it subscribed to), STALE (it has
	// not: the push is in flight or was rejected) or NOT SENT (nothing
	// of the type was sent to it).
	Status map[string]string `json:"status"`
}

// Proxy sync states, as istioctl proxy-status names them.
const (
	Synced  = "SYNCED"
	Stale   = "STALE"
	NotSent = "NOT SENT"
)

// Proxies lists the connected proxies, sorted by node id.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	out := make([]ProxyStatus, 0, len(s.streams))
	for _, st := range s.streams {
		p := ProxyStatus{
			Node: st.node, Mode: st.mode, Opened: st.opened,
			Sent: clone(st.sent), Acked: clone(st.acked), NACKed: clone(st.nacked), Status: map[string]string{},
		}
		for _, typ := range typeOrder {
			_, sent := st.sent[typ]
			switch {
			case !sent:
				p.Status[typ] = NotSent
			case st.nacked[typ] == "" && st.ackedNonce[typ] == st.sentNonce[typ]:
				p.Status[typ] = Synced
			default:
				p.Status[typ] = Stale
			}
		}
		out = append(out, p)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ProxyStatus) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// callbacks feeds metrics, NACK logs and proxy status from the
// go-control-plane server.
type callbacks struct {
	s *Server
}

func (c *callbacks) open(id int64, mode string) error {
	c.s.mu.Lock()
	c.s.streams[id] = &stream{id: id, mode: mode, opened: time.Now(),
		sent: map[string]string{}, acked: map[string]string{}, nacked: map[string]string{},
		sentNonce: map[string]string{}, ackedNonce: map[string]string{}, sentAt: map[string]time.Time{}}
	c.s.mu.Unlock()
	if m := c.s.opts.Metrics; m != nil {
		m.ConnectedProxies.WithLabelValues(mode).Inc()
	}
	return nil
}

func (c *callbacks) closed(id int64, mode string) {
	c.s.mu.Lock()
	st := c.s.streams[id]
	delete(c.s.streams, id)
	c.s.mu.Unlock()
	if m := c.s.opts.Metrics; m != nil {
		m.ConnectedProxies.WithLabelValues(mode).Dec()
	}
	if st != nil {
		c.s.opts.Logger.Debug("xds stream closed", "node", st.node, "mode", mode)
	}
}

// request records the node, an ACK or a NACK.
func (c *callbacks) request(id int64, node *corev3.Node, typeURL, version, nonce string, errMsg string, isNACK bool) {
	c.s.mu.Lock()
	st := c.s.streams[id]
	var nodeID string
	if st != nil {
		if node.GetId() != "" && st.node == "" {
			st.node = node.GetId()
		}
		nodeID = st.node
		switch {
		case isNACK:
			st.nacked[typeURL] = errMsg
		case nonce != "":
			if version != "" {
				st.acked[typeURL] = version
			}
			st.ackedNonce[typeURL] = nonce
			delete(st.nacked, typeURL)
		}
	}
	c.s.mu.Unlock()
	if isNACK {
		c.s.opts.Logger.Warn("proxy rejected config (NACK)", "node", nodeID, "type", typeURL, "version", version, "error", errMsg)
		if m := c.s.opts.Metrics; m != nil {
			m.NACKs.WithLabelValues(shortType(typeURL)).Inc()
		}
	}
}

// response counts a push and, when it replaced an earlier version on the
// stream, observes how long the change took to reach the wire.
func (c *callbacks) response(id int64, typeURL, version, nonce string) {
	cur := c.s.state.Load()
	now := time.Now()
	c.s.mu.Lock()
	var push bool
	if st := c.s.streams[id]; st != nil {
		_, had := st.sent[typeURL]
		// The stream's first response of the type since the last apply
		// changed the type: the push of that change (an on-demand answer
		// after it is no push).
		push = had && cur != nil && cur.changed[typeURL] && st.sentAt[typeURL].Before(cur.applied)
		st.sent[typeURL] = version
		st.sentNonce[typeURL] = nonce
		st.sentAt[typeURL] = now
	}
	c.s.mu.Unlock()
	m := c.s.opts.Metrics
	if m == nil {
		return
	}
	typ := shortType(typeURL)
	m.Pushes.WithLabelValues(typ).Inc()
	if push {
		m.PushSeconds.WithLabelValues(typ).Observe(now.Sub(cur.snapshot.Created).Seconds())
	}
}

func (c *callbacks) OnStreamOpen(_ context.Context, id int64, _ string) error {
	return c.open(id, modeSotW)
}

func (c *callbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.closed(id, modeSotW) }

// errStopping ends a stream that waited for the first config while the
// server stopped.
var errStopping = errors.New("xds: server stopping")

func (c *callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if !c.s.wait() {
		return errStopping
	}
	c.request(id, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.response(id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	return c.open(id, modeDelta)
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.s.closedStream(id)
	c.closed(id, modeDelta)
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	if !c.s.wait() {
		return errStopping
	}
	if req.GetTypeUrl() == resource.RouteType {
		c.s.subscribed(id, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	// A delta ACK carries the nonce, not the version; the version it
	// acknowledges is the one last sent.
	var version string
	if req.GetResponseNonce() != "" && req.GetErrorDetail() == nil {
		c.s.mu.Lock()
		if st := c.s.streams[id]; st != nil {
			version = st.sent[req.GetTypeUrl()]
		}
		c.s.mu.Unlock()
	}
	c.request(id, req.GetNode(), req.GetTypeUrl(), version, req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.response(id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
}

func (c *callbacks) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

func (c *callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// shortType is the resource type's message name, for metric labels:
// envoy.config.cluster.v3.Cluster → Cluster.
func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

var _ serverv3.Callbacks = (*callbacks)(nil)

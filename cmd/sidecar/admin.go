package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tender-mesh/tender/proxy"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/security/workload"
	"github.com/tender-mesh/tender/telemetry"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// newAdmin serves the sidecar's admin endpoints.
func newAdmin(px *proxy.Proxy, client *xdsclient.Client, ready, connected *atomic.Bool, ident *workload.Manager, node *nodeInfo) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: no complete config applied yet (or draining)", http.StatusServiceUnavailable)
			return
		}
		if ident != nil && !ident.Ready() {
			http.Error(w, "not ready: no workload certificate yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n")) //nolint:errcheck // the client went away
	})
	// /certs: the workload certificate and the trust bundle, as Envoy's
	// admin /certs shows them.
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) {
		type certInfo struct {
			Subject   string    `json:"subject"`
			Identity  string    `json:"identity,omitempty"`
			Serial    string    `json:"serial"`
			KeyID     string    `json:"keyId,omitempty"`
			IssuerID  string    `json:"issuerKeyId,omitempty"`
			NotBefore time.Time `json:"notBefore"`
			NotAfter  time.Time `json:"notAfter"`
		}
		out := struct {
			Enabled  bool       `json:"mtls"`
			Workload *certInfo  `json:"workload,omitempty"`
			Roots    []certInfo `json:"roots"`
		}{Roots: []certInfo{}}
		if ident != nil {
			out.Enabled = true
			if c := ident.Certificate(); c != nil {
				out.Workload = &certInfo{Subject: c.Leaf.Subject.String(), Identity: ident.ID().String(),
					Serial: c.Leaf.SerialNumber.String(), NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter,
					IssuerID: hex.EncodeToString(c.Leaf.AuthorityKeyId)}
			}
			for _, r := range ident.RootCerts() {
				out.Roots = append(out.Roots, certInfo{Subject: r.Subject.String(), Serial: r.SerialNumber.String(),
					KeyID: hex.EncodeToString(r.SubjectKeyId), NotBefore: r.NotBefore, NotAfter: r.NotAfter})
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out) //nolint:errcheck // the client went away
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		cfg := client.Current()
		out := map[string]any{"versions": cfg.Versions, "xdsConnected": connected.Load(), "node": node.dump(cfg)}
		clusters, endpoints, routes, err := dumpResources(cfg)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out["clusters"], out["endpoints"], out["routes"] = clusters, endpoints, routes
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /clusters", func(w http.ResponseWriter, _ *http.Request) {
		t := px.Table()
		now := time.Now().UnixNano()
		type ep struct {
			Address  string `json:"address"`
			Healthy  bool   `json:"healthy"`
			Weight   uint32 `json:"weight"`
			Priority uint32 `json:"priority"`
			Zone     string `json:"zone,omitempty"`
			Active   int64  `json:"active"`
			Total    uint64 `json:"total"`
			Failed   uint64 `json:"failed"`
			// Ejected is set while outlier detection keeps the endpoint
			// out; Ejections counts how often it did.
			Ejected   bool   `json:"ejected"`
			Ejections uint32 `json:"ejections"`
		}
		type cl struct {
			Name     string `json:"name"`
			Protocol string `json:"protocol,omitempty"`
			Policy   string `json:"lb"`
			// Requests and retries in flight, as the circuit breaker and
			// the retry budget count them.
			ActiveRequests int64 `json:"active_requests"`
			ActiveRetries  int64 `json:"active_retries"`
			Endpoints      []ep  `json:"endpoints"`
		}
		out := []cl{}
		for _, name := range t.Names() {
			c := t.Clusters[name]
			o := cl{Name: name, Protocol: c.Protocol, Policy: c.Policy, Endpoints: []ep{}}
			if r := c.Resilience; r != nil && r.State != nil {
				o.ActiveRequests, o.ActiveRetries = r.State.Active.Load(), r.State.Retrying.Load()
			}
			for _, e := range c.Endpoints {
				o.Endpoints = append(o.Endpoints, ep{
					Address: e.Addr.String(), Healthy: e.Healthy, Weight: e.Weight, Priority: e.Priority, Zone: e.Locality.Zone,
					Active: e.Stats.Active.Load(), Total: e.Stats.Total.Load(), Failed: e.Stats.Failed.Load(),
					Ejected: e.Stats.Ejected(now), Ejections: e.Stats.Ejections.Load(),
				})
			}
			out = append(out, o)
		}
		writeJSON(w, out)
	})
	// Go's profiles, for the sidecar's own clients only: they cost CPU and
	// reveal internals.
	telemetry.HandleProfiles(mux)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		s := &px.Stats
		writeJSON(w, map[string]uint64{
			"outbound_requests":    s.Requests[proxy.Outbound].Load(),
			"inbound_requests":     s.Requests[proxy.Inbound].Load(),
			"outbound_connections": s.Connections[proxy.Outbound].Load(),
			"inbound_connections":  s.Connections[proxy.Inbound].Load(),
			"no_healthy_endpoint":  s.NoEndpoint.Load(),
			"upstream_5xx":         s.Upstream5xx.Load(),
			"accept_errors":        s.AcceptErrors.Load(),
			"self_refused":         s.SelfRefused.Load(),
			"connections_overflow": s.Overflow.Load(),
		})
	})
	return mux
}

// dumpResources renders the clusters, their load assignments and the
// route configurations of cfg as protojson, sorted by name.
func dumpResources(cfg *xdsclient.Config) (clusters, endpoints, routes []json.RawMessage, err error) {
	for _, name := range slices.Sorted(maps.Keys(cfg.Clusters)) {
		b, err := protojson.Marshal(cfg.Clusters[name])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		clusters = append(clusters, b)
		if cla := cfg.Endpoints[name]; cla != nil {
			b, err := protojson.Marshal(cla)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("load assignment %s: %w", name, err)
			}
			endpoints = append(endpoints, b)
		}
	}
	if cfg.Defaults != nil { // the mesh's default modes, as it came
		b, err := protojson.Marshal(cfg.Defaults)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cluster %s: %w", xdsclient.MeshDefaultsCluster, err)
		}
		clusters = append(clusters, b)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Routes)) {
		b, err := protojson.Marshal(cfg.Routes[name])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("route configuration %s: %w", name, err)
		}
		routes = append(routes, b)
	}
	return clusters, endpoints, routes, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck // the client went away
}

// metricsHandler serves /metrics on the metrics port, in the Prometheus
// text format or OpenMetrics (which carries the exemplars) as asked.
// Never gzipped: the scrape crosses the pod's network once every few
// seconds, and each gzip writer the handler pools holds about 0.9 MiB,
// a fifth of the sidecar's live heap.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, DisableCompression: true}))
	return mux
}

// nodeInfo is what the sidecar tells the control plane of itself, and
// where it runs: its --region/--zone/--subzone, else what the control
// plane knows of its pod's node.
type nodeInfo struct {
	ID, Pod string
	Flags   balancer.Locality
}

// locality is the locality the sidecar balances with under cfg, and
// where it comes from: "flags", "control plane" or "" (none known).
func (n *nodeInfo) locality(cfg *xdsclient.Config) (balancer.Locality, string) {
	if n.Flags != (balancer.Locality{}) {
		return n.Flags, "flags"
	}
	if l, ok := cfg.Locality(n.Pod); ok {
		return balancer.Locality{Region: l.Region, Zone: l.Zone, SubZone: l.SubZone}, "control plane"
	}
	return balancer.Locality{}, ""
}

// dump is the node section of /config_dump, as Envoy's shows its node.
func (n *nodeInfo) dump(cfg *xdsclient.Config) map[string]any {
	l, from := n.locality(cfg)
	return map[string]any{
		"id": n.ID, "pod": n.Pod,
		"locality":     map[string]string{"region": l.Region, "zone": l.Zone, "subZone": l.SubZone},
		"localityFrom": from,
	}
}

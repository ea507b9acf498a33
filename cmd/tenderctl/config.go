package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	_ "github.com/tender-mesh/tender/xds" // registers the Any types the dump holds
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// sidecarDump is a sidecar's /config_dump.
type sidecarDump struct {
	Versions     map[string]string `json:"versions"`
	XDSConnected bool              `json:"xdsConnected"`
	Clusters     []json.RawMessage `json:"clusters"`
	Endpoints    []json.RawMessage `json:"endpoints"`
	Routes       []json.RawMessage `json:"routes"`
}

// sidecarCluster is one entry of a sidecar's /clusters.
type sidecarCluster struct {
	Name           string `json:"name"`
	Protocol       string `json:"protocol"`
	LB             string `json:"lb"`
	ActiveRequests int64  `json:"active_requests"`
	Endpoints      []struct {
		Address   string `json:"address"`
		Healthy   bool   `json:"healthy"`
		Weight    uint32 `json:"weight"`
		Priority  uint32 `json:"priority"`
		Zone      string `json:"zone"`
		Active    int64  `json:"active"`
		Total     uint64 `json:"total"`
		Failed    uint64 `json:"failed"`
		Ejected   bool   `json:"ejected"`
		Ejections uint32 `json:"ejections"`
	} `json:"endpoints"`
}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

func proxyConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("proxy-config", stderr)
	cluster := fs.String("cluster", "", "only this cluster (its name or its service's FQDN)")
	output := fs.String("o", "table", "output: table or json")
	// Flags may come after the positional arguments, as with kubectl.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 2 {
		return usageErr("proxy-config clusters|endpoints|listeners|routes ADMIN_ADDR")
	}
	what, admin := pos[0], baseURL(pos[1], "15000")
	if *output != "table" && *output != "json" {
		return usageErr("-o must be table or json, got %q", *output)
	}
	body, err := get(admin+"/config_dump", 200)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	var dump sidecarDump
	if err := json.Unmarshal(body, &dump); err != nil {
		return fmt.Errorf("sidecar /config_dump: %w", err)
	}
	var clusters []*clusterv3.Cluster
	for _, raw := range dump.Clusters {
		c := &clusterv3.Cluster{}
		if err := unmarshal.Unmarshal(raw, c); err != nil {
			return fmt.Errorf("sidecar /config_dump: cluster: %w", err)
		}
		// The mesh's default modes travel as a cluster that routes
		// nothing: in the JSON output, not in the tables.
		if c.GetName() != xdsclient.MeshDefaultsCluster && match(*cluster, c.GetName(), meta(c).Hostname) {
			clusters = append(clusters, c)
		}
	}
	var live []sidecarCluster
	if what == "clusters" || what == "endpoints" {
		b, err := get(admin+"/clusters", 200)
		if err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
		if err := json.Unmarshal(b, &live); err != nil {
			return fmt.Errorf("sidecar /clusters: %w", err)
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	row := func(cols ...any) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	switch what {
	case "clusters":
		if *output == "json" {
			return writeRaw(stdout, dump.Clusters)
		}
		row("SERVICE FQDN", "PORT", "PROTOCOL", "LB", "VIP", "ENDPOINTS", "ACTIVE", "CLUSTER")
		for _, c := range clusters {
			m := meta(c)
			lb, _ := xdsclient.LBPolicyOf(c)
			healthy, total, active := 0, 0, int64(0)
			for _, l := range live {
				if l.Name == c.GetName() {
					active, lb = l.ActiveRequests, l.LB
					for _, e := range l.Endpoints {
						total++
						if e.Healthy && !e.Ejected {
							healthy++
						}
					}
				}
			}
			row(m.Hostname, m.Port, dash(m.Protocol), dash(lb), dash(vipOf(m)), fmt.Sprintf("%d/%d healthy", healthy, total), active, c.GetName())
		}
	case "endpoints":
		if *output == "json" {
			return writeRaw(stdout, dump.Endpoints)
		}
		row("ENDPOINT", "STATUS", "WEIGHT", "PRIORITY", "ZONE", "ACTIVE", "REQUESTS", "FAILED", "CLUSTER")
		for _, l := range live {
			if !match(*cluster, l.Name, hostOf(l.Name)) {
				continue
			}
			for _, e := range l.Endpoints {
				status := "HEALTHY"
				switch {
				case e.Ejected:
					status = fmt.Sprintf("EJECTED (%d)", e.Ejections)
				case !e.Healthy:
					status = "UNHEALTHY"
				}
				row(e.Address, status, e.Weight, e.Priority, dash(e.Zone), e.Active, e.Total, e.Failed, l.Name)
			}
		}
	case "listeners":
		// The sidecar captures every connection on one port and matches
		// its original destination to a service: these are the
		// destinations it matches.
		if *output == "json" {
			return writeRaw(stdout, dump.Clusters)
		}
		row("ADDRESS", "PORT", "PROTOCOL", "DESTINATION")
		for _, c := range clusters {
			m := meta(c)
			row(dash(vipOf(m)), m.Port, dash(m.Protocol), c.GetName())
		}
	case "routes":
		if *output == "json" {
			return writeRaw(stdout, dump.Routes)
		}
		row("NAME", "ROUTE", "MATCH", "ACTION", "TIMEOUT", "RETRIES", "FAULT")
		for _, raw := range dump.Routes {
			rc := &routev3.RouteConfiguration{}
			if err := unmarshal.Unmarshal(raw, rc); err != nil {
				return fmt.Errorf("sidecar /config_dump: route: %w", err)
			}
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if !match(*cluster, routeClusters(r)...) && !match(*cluster, rc.GetName()) {
						continue
					}
					row(rc.GetName(), dash(r.GetName()), routeMatch(r.GetMatch()), routeAction(r), timeout(r.GetRoute()),
						retries(r.GetRoute().GetRetryPolicy()), yesNo(len(r.GetTypedPerFilterConfig()) > 0))
				}
			}
		}
	default:
		return usageErr("proxy-config: unknown kind %q: clusters, endpoints, listeners or routes", what)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !dump.XDSConnected {
		fmt.Fprintln(stderr, "note: the sidecar is not connected to the control plane; this is its last known config")
	}
	return nil
}

func writeRaw(w io.Writer, items []json.RawMessage) error {
	if items == nil {
		items = []json.RawMessage{}
	}
	b, err := json.MarshalIndent(items, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// meta is a cluster's tender.dev metadata; what does not decode shows as
// nothing (the sidecar refused that config anyway).
func meta(c *clusterv3.Cluster) xdsclient.ClusterMeta {
	m, _ := xdsclient.ClusterMetaOf(c)
	return m
}

// vipOf is m's VIP as text, "" for none.
func vipOf(m xdsclient.ClusterMeta) string {
	if !m.VIP.IsValid() {
		return ""
	}
	return m.VIP.String()
}

// hostOf is the service FQDN in a cluster name outbound|PORT||HOST.
func hostOf(cluster string) string {
	if i := strings.LastIndex(cluster, "|"); i >= 0 {
		return cluster[i+1:]
	}
	return cluster
}

func match(filter string, names ...string) bool {
	if filter == "" {
		return true
	}
	for _, n := range names {
		if n == filter {
			return true
		}
	}
	return false
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func timeout(r *routev3.RouteAction) string {
	if r.GetTimeout() == nil {
		return "-"
	}
	return r.GetTimeout().AsDuration().String()
}

func retries(p *routev3.RetryPolicy) string {
	if p == nil {
		return "-"
	}
	n := uint32(1) // Envoy's default when num_retries is absent
	if p.GetNumRetries() != nil {
		n = p.GetNumRetries().GetValue()
	}
	return fmt.Sprintf("%d on %s", n, p.GetRetryOn())
}

// routeClusters names the clusters a route sends to, and their hosts.
func routeClusters(r *routev3.Route) []string {
	var out []string
	if c := r.GetRoute().GetCluster(); c != "" {
		out = append(out, c, hostOf(c))
	}
	for _, w := range r.GetRoute().GetWeightedClusters().GetClusters() {
		out = append(out, w.GetName(), hostOf(w.GetName()))
	}
	return out
}

// routeMatch renders what a route matches, as a Gateway API user would
// read it: path, method, headers, query parameters.
func routeMatch(m *routev3.RouteMatch) string {
	var parts []string
	switch {
	case m.GetPath() != "":
		parts = append(parts, "path="+m.GetPath())
	case m.GetPathSeparatedPrefix() != "":
		parts = append(parts, "prefix="+m.GetPathSeparatedPrefix())
	case m.GetSafeRegex() != nil:
		parts = append(parts, "regex="+m.GetSafeRegex().GetRegex())
	case m.GetPrefix() != "":
		parts = append(parts, "prefix="+m.GetPrefix())
	}
	for _, h := range m.GetHeaders() {
		sm := h.GetStringMatch()
		switch {
		case sm.GetSafeRegex() != nil:
			parts = append(parts, h.GetName()+"~"+sm.GetSafeRegex().GetRegex())
		case sm != nil:
			parts = append(parts, h.GetName()+"="+sm.GetExact())
		default:
			parts = append(parts, h.GetName())
		}
	}
	for _, q := range m.GetQueryParameters() {
		sm := q.GetStringMatch()
		if sm.GetSafeRegex() != nil {
			parts = append(parts, "?"+q.GetName()+"~"+sm.GetSafeRegex().GetRegex())
		} else {
			parts = append(parts, "?"+q.GetName()+"="+sm.GetExact())
		}
	}
	return strings.Join(parts, " ")
}

// routeAction renders where a route sends requests: a service, services
// with their weights, a redirect or a direct response.
func routeAction(r *routev3.Route) string {
	switch {
	case r.GetRedirect() != nil:
		rd := r.GetRedirect()
		return fmt.Sprintf("redirect %s %s%s", rd.GetResponseCode(), rd.GetHostRedirect(), rd.GetPathRedirect())
	case r.GetDirectResponse() != nil:
		return fmt.Sprintf("respond %d", r.GetDirectResponse().GetStatus())
	}
	a := r.GetRoute()
	var out string
	if c := a.GetCluster(); c != "" {
		out = hostOf(c)
	}
	if wc := a.GetWeightedClusters().GetClusters(); len(wc) > 0 {
		var total uint32
		for _, w := range wc {
			total += w.GetWeight().GetValue()
		}
		parts := make([]string, 0, len(wc))
		for _, w := range wc {
			parts = append(parts, fmt.Sprintf("%s %d%%", hostOf(w.GetName()), w.GetWeight().GetValue()*100/max(total, 1)))
		}
		out = strings.Join(parts, ", ")
	}
	for _, m := range a.GetRequestMirrorPolicies() {
		out += " +mirror " + hostOf(m.GetCluster())
	}
	return out
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// stat prints each service's golden signals, per workload, from the
// sidecars' metrics in Prometheus, as `linkerd viz stat` does: request
// rate, success rate and latency percentiles over a window.
func stat(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stat", stderr)
	prom := fs.String("prometheus", "http://127.0.0.1:9090", "Prometheus that scrapes the sidecars")
	window := fs.Duration("window", 30*time.Second, "window the rates and percentiles are over")
	direction := fs.String("direction", "inbound", "whose report: inbound (the destination's sidecar) or outbound (the source's)")
	watch := fs.Duration("watch", 0, "print again at this interval until interrupted; 0: once")
	byPod := fs.Bool("by-pod", false, "a row per pod: by the pod label Prometheus attaches to each scraped sidecar (as Kubernetes scrape configs do)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("stat takes no arguments, got %q", fs.Args())
	}
	if *direction != "inbound" && *direction != "outbound" {
		return usageErr("--direction must be inbound or outbound, got %q", *direction)
	}
	if *window < 2*time.Second {
		return usageErr("--window must be at least 2s, got %s", *window)
	}
	base := baseURL(*prom, "9090")
	for {
		if err := printStat(stdout, base, *window, *direction, *byPod); err != nil {
			return err
		}
		if *watch <= 0 {
			return nil
		}
		time.Sleep(*watch)
		fmt.Fprintln(stdout)
	}
}

type statRow struct {
	rps, success, p50, p99 float64
}

func printStat(w io.Writer, prom string, window time.Duration, direction string, byPod bool) error {
	win := fmt.Sprintf("[%ds]", int(window.Seconds()))
	sel := fmt.Sprintf(`direction=%q`, direction)
	by := "destination_service, destination_workload"
	if byPod {
		by += ", pod"
	}
	queries := []struct {
		q   string
		set func(*statRow, float64)
	}{
		{fmt.Sprintf(`sum by (%s) (rate(tender_requests_total{%s}%s))`, by, sel, win), func(r *statRow, v float64) { r.rps = v }},
		{fmt.Sprintf(`sum by (%[1]s) (rate(tender_requests_total{%[2]s,response_code!~"5..",grpc_status=~"|0"}%[3]s)) / sum by (%[1]s) (rate(tender_requests_total{%[2]s}%[3]s))`,
			by, sel, win), func(r *statRow, v float64) { r.success = v }},
		{fmt.Sprintf(`histogram_quantile(0.5, sum by (le, %s) (rate(tender_request_duration_seconds_bucket{%s}%s)))`, by, sel, win),
			func(r *statRow, v float64) { r.p50 = v }},
		{fmt.Sprintf(`histogram_quantile(0.99, sum by (le, %s) (rate(tender_request_duration_seconds_bucket{%s}%s)))`, by, sel, win),
			func(r *statRow, v float64) { r.p99 = v }},
	}
	rows := map[[3]string]*statRow{}
	for _, q := range queries {
		res, err := promQuery(prom, q.q)
		if err != nil {
			return err
		}
		for _, s := range res {
			k := [3]string{s.Metric["destination_service"], s.Metric["destination_workload"], s.Metric["pod"]}
			if rows[k] == nil {
				rows[k] = &statRow{success: math.NaN(), p50: math.NaN(), p99: math.NaN()}
			}
			q.set(rows[k], s.value)
		}
	}
	keys := make([][3]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [3]string) int {
		return strings.Compare(strings.Join(a[:], "\x00"), strings.Join(b[:], "\x00"))
	})
	fmt.Fprintf(w, "%s  %s requests over the last %s (Prometheus %s)\n", time.Now().Format("15:04:05"), direction, window, prom)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "SERVICE\tWORKLOAD\t"
	if byPod {
		head += "POD\t"
	}
	fmt.Fprintln(tw, head+"RPS\tSUCCESS\tP50\tP99")
	for _, k := range keys {
		r := rows[k]
		fmt.Fprintf(tw, "%s\t%s\t", k[0], dash(k[1]))
		if byPod {
			fmt.Fprintf(tw, "%s\t", dash(k[2]))
		}
		fmt.Fprintf(tw, "%.1f\t%s\t%s\t%s\n", r.rps, percent(r.success), millis(r.p50), millis(r.p99))
	}
	if len(keys) == 0 {
		fmt.Fprintln(tw, "(no requests in the window)")
	}
	return tw.Flush()
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

func millis(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.1fms", 1000*v)
}

type promSample struct {
	Metric map[string]string
	value  float64
}

// promQuery runs an instant query.
func promQuery(base, q string) ([]promSample, error) {
	body, err := get(base+"/api/v1/query?query="+url.QueryEscape(q), 200)
	if err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	out := make([]promSample, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			continue
		}
		out = append(out, promSample{Metric: s.Metric, value: v})
	}
	return out, nil
}

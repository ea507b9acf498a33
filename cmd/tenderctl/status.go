package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tender-mesh/tender/xds"
)

// xdsTypes are the resource types proxy-status reports, in its columns'
// order.
var xdsTypes = []struct{ column, url string }{
	{"CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
	{"EDS", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"},
	{"RDS", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
	{"SDS", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"},
	{"LDS", "type.googleapis.com/envoy.config.listener.v3.Listener"},
}

// syncState is the control plane's verdict for one type, marked when
// the proxy rejected the type's last push.
func syncState(p xds.ProxyStatus, typeURL string) string {
	st := p.Status[typeURL]
	if st == "" {
		st = xds.NotSent
	}
	if p.NACKed[typeURL] != "" {
		st += " (NACK)"
	}
	return st
}

func proxyStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("proxy-status", stderr)
	cp := controlPlaneFlag(fs)
	output := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("proxy-status takes no arguments, got %q", fs.Args())
	}
	body, err := get(baseURL(*cp, "15014")+"/debug/proxies", 200)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	var proxies []xds.ProxyStatus
	if err := json.Unmarshal(body, &proxies); err != nil {
		return fmt.Errorf("control plane /debug/proxies: %w", err)
	}
	if *output == "json" {
		_, err := stdout.Write(body)
		return err
	} else if *output != "table" {
		return usageErr("-o must be table or json, got %q", *output)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 3, ' ', 0)
	cols := []string{"NAME", "MODE"}
	for _, t := range xdsTypes {
		cols = append(cols, t.column)
	}
	fmt.Fprintln(tw, strings.Join(append(cols, "CONNECTED"), "\t"))
	var nacks []string
	for _, p := range proxies {
		row := []string{p.Node, p.Mode}
		for _, t := range xdsTypes {
			row = append(row, syncState(p, t.url))
		}
		fmt.Fprintln(tw, strings.Join(append(row, time.Since(p.Opened).Round(time.Second).String()), "\t"))
		for _, t := range xdsTypes {
			if msg := p.NACKed[t.url]; msg != "" {
				nacks = append(nacks, fmt.Sprintf("%s rejected %s: %s", p.Node, t.column, msg))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(proxies) == 0 {
		fmt.Fprintln(stdout, "(no proxy connected)")
	}
	for _, n := range nacks {
		fmt.Fprintln(stdout, n)
	}
	return nil
}

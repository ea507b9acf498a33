// Package xdsclient is the sidecar's side of xDS: a delta ADS client that
// subscribes on demand (the index of each address the pod connects to,
// and what it names) or to every cluster, and keeps one immutable Config,
// decoded per resource type into typed values; and the names the control
// plane and the sidecar agree on (metadata keys, the address indexes and
// pod localities, the trust bundle's secret, the type URLs).
//
// cmd/sidecar runs a Client and hands every accepted Config to
// proxy.BuildTable; package xds (the control plane's translator and
// server) writes resources to the names declared here.
//
// It must never import the control plane's side: package xds,
// go-control-plane's pkg/cache and pkg/server, package discovery,
// client-go or the control plane's metrics. The sidecar links this
// package into every pod, so what it imports costs memory in each one;
// cmd/sidecar's TestDependencies fails when one of them comes back.
package xdsclient

// Package xds turns registry snapshots into Envoy v3 xDS resources and
// serves them over ADS, state-of-the-world and delta, with one
// go-control-plane LinearCache per resource type: a change is translated
// once, for the services it touched, and reaches only the streams that
// subscribed to what changed (or to everything).
//
// The controlplane calls Server.Apply on every registry snapshot. Beside
// each service port's listener, route configuration, cluster and load
// assignment, it serves route configurations tender's on-demand sidecars
// ask for by name and Envoy and grpc-go never do: an index per address
// (xdsclient.AddressIndexName), naming the clusters at a VIP or endpoint
// address, and each meshed pod's locality (xdsclient.PodLocalityName);
// for such a name it has nothing for, an empty one, held while a stream
// asks for it. The same resources drive tender sidecars, proxyless
// grpc-go clients (xds:/// targets) and Envoy: names follow the Kubernetes
// convention NAME.NAMESPACE.svc.cluster.local:PORT for listeners and
// routes, and Istio's outbound|PORT||HOSTNAME for clusters and their load
// assignments. Translation must never emit a resource that grpc-go would
// reject: one bad cluster makes grpc-go drop the whole update.
//
// The sidecar's side of xDS (its ADS client, the typed decoding, and the
// names both sides agree on: metadata keys, the trust bundle's secret) is
// package xds/xdsclient. This package imports it for those names; it
// must never be imported by the sidecar, which would then link
// go-control-plane's cache and server, the registry and the control
// plane's metrics into every pod.
package xds

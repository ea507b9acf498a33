package main

// The extension types the control plane puts inside the clusters it sends
// (google.protobuf.Any fields) and the sidecar does not otherwise link:
// /config_dump renders each resource with protojson, which must resolve
// every Any's type or fails the whole dump. TestDumpResolvesEveryType
// keeps this list in step with the translator.
import (
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

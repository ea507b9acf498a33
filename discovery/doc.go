// Package discovery holds tender's service model — Service, Port, Endpoint,
// Locality, and Route (a Gateway API HTTPRoute or GRPCRoute) — and the
// Registry that merges what the discovery sources report into immutable
// snapshots for the xDS translator.
//
// Sources (one sub-package each: file, dns, kube, consul and eureka) push
// the complete set of services they know into the Registry with Update,
// those that read routes (file, kube) their routes with UpdateRoutes, and
// those that read security config (mesh.yaml, the AuthorizationPolicy
// resources) their mTLS modes and policies with UpdateSecurity: one
// pipeline, one debounce, one snapshot for all three. No snapshot is
// published before every source in Options.SecuritySources has reported.
// On a key two sources report, the one earlier in Options.Sources wins,
// and a VIP:port two services claim stays with the one that comes first
// in that order. The
// Registry owns all mutable state in one goroutine, debounces bursts of
// updates and publishes a new *Snapshot to its subscribers. Nothing in this
// package shares a mutable map across goroutines, and a Snapshot is never
// modified after it has been published.
package discovery

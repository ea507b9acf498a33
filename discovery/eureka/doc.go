// Package eureka is a discovery source that reads a Netflix Eureka
// registry, as Spring Cloud and Go kit (sd/eureka) services fill it.
//
// It reads the servers' REST API the way Netflix's own client does: the
// full registry first (GET {url}/apps, Accept: application/json), then
// every Options.Refresh the delta (GET {url}/apps/delta), applied to its
// copy and checked against the delta's appsHashCode (each status with its
// count); a delta that does not reconcile, or fails, is followed by a full
// fetch. The servers of Options.URLs are tried in order: the source stays
// on the first that answers, moves to the next when it fails, and starts
// with a full fetch on a server it did not read last.
//
// Mapping: each application is a tender service named after it, lower
// case, and so is each name of an instance's vipAddress (comma-separated),
// holding the instances of every application that lists it. The namespace
// is the instance metadata tender.dev/namespace, else Options.Namespace.
// An instance whose status is UP is a healthy endpoint at its ipAddr with
// its port (and securePort, when enabled, as the port "https", relayed as
// TCP); OUT_OF_SERVICE, as its status or overriddenStatus, drains;
// STARTING, DOWN and UNKNOWN are not served. The zone is the metadata
// zone, else the dataCenterInfo's availability-zone; the region is
// Options.Region. Metadata also sets tender.dev/protocol (HTTP, HTTP2,
// GRPC, TCP), tender.dev/port (the service port clients dial; default the
// instances' most common port), tender.dev/vip and tender.dev/lb, read
// from the instance with the lowest application and id.
//
// When every server fails, or answers something that is not a registry,
// the source keeps what it last reported (the registry serves it on),
// reports the error, which names each server's URL, and tries again with
// backoff (up to ten refresh intervals) until one answers. It never panics
// on what a server sends and never leaves a goroutine behind when Run
// returns.
package eureka

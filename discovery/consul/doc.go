// Package consul is a discovery source that watches a Consul catalog.
//
// It long-polls Consul's HTTP API with blocking queries: one on the
// catalog's service list and one per service on its health
// (/v1/health/service/NAME). Each Consul service becomes a tender service
// in a configured namespace, with one port; each instance whose checks
// pass (and, when asked, those with warnings) becomes an endpoint, with the
// datacenter as its region and a node meta key as its zone.
//
// What the model needs and Consul does not say is read from the service's
// meta (key tender_KEY) or tags (tender.KEY=VALUE), meta first:
//
//	namespace  the tender namespace (default: Options.Namespace)
//	protocol   HTTP, HTTP2, GRPC or TCP (default: detected)
//	port       the service port clients dial (default: the instances' most common port)
//	vip        the virtual IP sidecars capture for it (default: none)
//	lb         the load-balancing policy (default: ROUND_ROBIN)
//
// When the agent cannot be reached the source keeps what it last reported
// (the registry serves it on), reports the error, retries with backoff and
// picks up where it was once the agent answers.
package consul

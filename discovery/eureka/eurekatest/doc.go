// Package eurekatest is an emulation of a Netflix Eureka server, for tests
// only: Netflix's server is a Java web application that cannot be built
// here. It is written from the documented REST contract (Netflix's wiki,
// "Eureka REST operations") and the behaviour of the server's registry
// (com.netflix.eureka.registry.AbstractInstanceRegistry), and the e2e
// tests prove it honest by driving it with a real Eureka client
// (eureka-js-client from npm).
//
// Under Options.Path (default /eureka) it serves, in JSON only:
//
//	POST   /apps/APP                    register ({"instance": {...}}); 204
//	PUT    /apps/APP/ID                 renew the lease (?status= sets the instance's own); 200, 404 if unknown
//	DELETE /apps/APP/ID                 cancel; 200, 404
//	PUT    /apps/APP/ID/status?value=S  status override (OUT_OF_SERVICE, ...); 200, 404
//	DELETE /apps/APP/ID/status[?value=S] remove the override, status S (else UNKNOWN: the next renewal answers 404 and the client registers again)
//	PUT    /apps/APP/ID/metadata?K=V    update metadata; 200, 404
//	GET    /apps, /apps/APP, /apps/APP/ID, /apps/delta
//
// An override outlives re-registration and ends with a cancel or an
// eviction, as on Netflix's server. A lease expires durationInSecs after
// its last renewal (Netflix's server, by a known bug, waits about twice
// that); expired leases are evicted when the next request comes. Stop
// and Start cut a server off from its clients and reconnect it: the
// registry stays and no lease expires meanwhile (as Netflix's
// self-preservation keeps leases when renewals stop arriving). The delta
// holds every instance changed in the last DeltaRetention (default
// three minutes), each once with its latest action, and the appsHashCode
// of the whole registry.
//
// What it does not do: XML, peer replication (register an instance with
// each server instead), self-preservation as a rule on renewal rates, the empty-registry wait after a
// start (waitTimeInMsWhenSyncEmpty), regions, /vips and /svips.
package eurekatest

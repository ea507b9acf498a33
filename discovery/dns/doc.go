// Package dns is the DNS discovery source: services whose endpoints are
// the addresses a DNS name resolves to, either through SRV records (which
// also give each endpoint its port, weight and priority) or through A and
// AAAA records served on one port. Each target is resolved again when the
// shortest TTL of its answer runs out (never more often than MinRefresh)
// and at least every Refresh, and the complete set of services is pushed to
// the registry whenever any target's endpoints change.
//
// The file source calls SetTargets with the services of mesh.yaml that
// declare a `dns:` block, on every reload; the control plane runs the
// source as "dns" beside it. SetTargets may be called from any goroutine,
// before or during Run, and never blocks; targets that did not change keep
// their resolver and endpoints.
//
// The source must never drop endpoints because of a failure: a timeout, a
// SERVFAIL, a refused query or a network error keeps the last endpoints,
// is reported to the sink and retried with backoff. Only an answer (NXDOMAIN
// or no records) empties a service. It must never panic on what a server
// sends, never block its caller, and never leave a goroutine running once
// Run's context is done.
package dns

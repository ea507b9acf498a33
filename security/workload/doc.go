// Package workload is a sidecar's mesh identity: it makes the private key
// (which never leaves the process), asks the control plane's CA for a
// certificate with a CSR over TLS, authenticated by the pod's
// service-account or bootstrap token, renews it at half its life, and keeps
// the trust bundle the control plane pushes over SDS. It hands the proxy
// the TLS configurations of both sides of the mesh's mutual TLS, which
// verify peers by SPIFFE ID against the bundle of the moment.
//
// Only the sidecar uses it. It never writes the key anywhere and never
// trusts a peer outside the trust domain.
package workload

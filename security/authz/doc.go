// Package authz is tender's authorization policy: who may call a service,
// with Istio's AuthorizationPolicy semantics, enforced by the sidecar of
// the destination. Peers are known by the SPIFFE ID
// (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT) of their mutual
// TLS certificate.
//
// It holds four things:
//
//   - The model, Policy (policy.go), with its yaml form (the
//     `authorization:` list of mesh.yaml) and its json form (the spec of
//     the AuthorizationPolicy custom resource), and Validate. A request is
//     denied when a DENY policy matches it; otherwise, if ALLOW policies
//     apply to the service, it is allowed only when one matches; otherwise
//     it is allowed. A policy with no rules matches nothing.
//   - The xDS form (rbac.go): ForService turns the policies of one service
//     into standard Envoy RBAC, as per-route config (typed_per_filter_config
//     of the service's virtual host) of two RBAC HTTP filters, FilterDeny
//     and FilterAllow (an inbound HTTP connection manager of Envoy would
//     list them before the router). Each rule is one Envoy policy named
//     "namespace/name/rules[i]". The config is marked optional, so clients
//     without the filter ignore it.
//   - The engine (engine.go): FromRoute compiles that config back, in the
//     sidecar, which sees only the RouteConfiguration; Engine.Evaluate
//     decides a request without allocating. TCP connections have no method
//     or path: an ALLOW rule that names one never matches them, and a DENY
//     rule matches them as if it named none, so both fail closed.
//   - The Kubernetes watch (kube.go): Watch follows the AuthorizationPolicy
//     custom resources (security.tender.dev/v1alpha1, the CRD in
//     charts/tender/crds/authorizationpolicies.yaml) with a dynamic
//     informer, and works on clusters without the CRD.
//
// The file source parses policies from mesh.yaml and the Kubernetes
// source calls Watch; the xDS translator calls ForService for each
// service; the sidecar calls FromRoute on each route update and Evaluate on
// each inbound request or connection.
//
// It must never allow a request because a policy could not be compiled:
// ForService fails on an invalid policy, and FromRoute fails (wrapping
// ErrUnsupported) on any RBAC it cannot enforce exactly, so the sidecar
// NACKs the config and keeps enforcing its last good one.
package authz

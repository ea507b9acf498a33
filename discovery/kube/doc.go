// Package kube is the Kubernetes discovery source: Services and their
// EndpointSlices become tender services (ports, protocols from port names
// and appProtocol, the policy annotations, endpoint health and zones),
// and, when the API server serves the Gateway API's CRDs, HTTPRoutes and
// GRPCRoutes become routes. Informers feed it; it reports whole sets to
// the registry, routes apart from services so that an endpoint change
// does not copy every route again.
package kube

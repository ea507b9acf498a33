// Package kube is the Kubernetes side of the mesh's security: the
// TokenReviewer authenticates sidecars by their service-account tokens
// with a TokenReview of the API server, and the SecretStore keeps the
// CA's self-generated root in a Secret shared by the control plane's
// replicas, and Watch follows the AuthorizationPolicy resources (the CRD
// in charts/tender/crds). It implements security.Authenticator and security.Store and
// holds everything of package security that needs client-go. Only the
// control plane imports it; the sidecar must never, directly or not, as
// client-go would double its binary and its memory.
package kube

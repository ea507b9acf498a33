// Package security is the mesh's identity and certificate authority for
// mutual TLS with SPIFFE identities (spiffe://TRUST_DOMAIN/ns/NS/sa/SA).
// The control plane runs the CA (a self-generated root kept in a Store,
// or an operator's root or intermediate read from files and reloaded when
// they change), serves it to workloads over gRPC as Istio's
// IstioCertificateService (Service), and authenticates the callers with
// bootstrap tokens or Kubernetes service-account tokens (BootstrapTokens,
// Chain; the TokenReviewer and the Secret store of the root are in
// package security/kube). The sidecar calls NewKey and RequestCertificate
// to get its certificate, and VerifyPeer on both sides of every mTLS
// connection to learn and check the peer's identity. The package must
// never see or send a workload's private key (only the certificate
// request leaves the workload), must never sign an identity other than
// the one of the authenticated caller (the names a request asks for are
// ignored), and must never import client-go or any k8s.io package, since
// the sidecar links it.
package security

// Package proxy is tender's data plane: the outbound (:15001) and inbound
// (:15006) listeners of the sidecar, the original-destination lookup,
// protocol detection, HTTP/1.1, HTTP/2 (gRPC included) and TCP forwarding.
//
// cmd/sidecar builds a Proxy and feeds it tables built from the xDS config.
// The request path reads the table through an atomic pointer and takes no
// global lock; it never logs at info level.
package proxy

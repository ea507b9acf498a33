// Package balancer picks the upstream endpoint of a request (HTTP, gRPC)
// or connection (TCP). A Picker is immutable: a config change builds a new
// one and the proxy swaps it in atomically, as grpc-go's balancers do.
// Policies register by name (round robin, least request, random, ring hash,
// maglev); a new policy is one file and one Register call.
//
// Pick takes no lock and allocates nothing; the only shared mutable state is
// each endpoint's Stats: atomic counters (requests active, sent and failed,
// failures in a row, ejections), shared by the endpoint's successive
// versions across config pushes.
package balancer

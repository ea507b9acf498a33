// Package greeter is tender's reference example service, written in Go kit
// style: a business layer (Service), its endpoints (Endpoints), an HTTP/JSON
// transport that also speaks unencrypted HTTP/2 (h2c), a gRPC transport, a
// Server that runs both, and Go kit clients for either transport. The demo
// and the end-to-end tests run it as the service behind the mesh; besides
// Greet it has transport-level helpers (HTTP /echo and /status/{code}, gRPC
// Echo and Chat) for large-message, streaming and error-handling tests.
package greeter

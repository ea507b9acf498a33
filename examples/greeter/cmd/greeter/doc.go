// Command greeter runs tender's example greeter service: Greet over
// HTTP/JSON (HTTP/1.1 and h2c) and gRPC, with the gRPC health service, until
// SIGINT or SIGTERM, then shuts down gracefully.
//
// With --backend URL it is a frontend: it answers Greet by calling the
// greeter at URL over HTTP and returns that greeter's reply (its message and
// instance) or error; its own X-Instance header still names itself.
//
// Tracing is off unless --otlp-endpoint host:port is set (its default comes
// from OTEL_EXPORTER_OTLP_ENDPOINT, without the http:// scheme). Then every
// request gets a server span, every call to the backend a client span, all
// exported over OTLP (--otlp-protocol grpc, the default, or http/protobuf)
// with the service.name --service-name (default greeter; run a frontend with
// --service-name frontend). W3C traceparent is read from and passed on to
// the backend, so client, frontend and backend spans form one trace. Queued
// spans are flushed, for up to 5 s, on exit.
package main

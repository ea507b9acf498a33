// Command greeter-client calls the example greeter's Greet over gRPC (any
// gRPC target, including xds:/// ones resolved through a tender control
// plane) or HTTP, prints one line per reply and a summary of replies per
// instance, and exits non-zero if any request failed.
//
// Tracing is off unless --otlp-endpoint host:port is set (its default comes
// from OTEL_EXPORTER_OTLP_ENDPOINT, without the http:// scheme). Then each
// request is a new trace: a root span "greet" and the transport's client
// span under it, exported over OTLP (--otlp-protocol grpc, the default, or
// http/protobuf) with the service.name --service-name (default
// greeter-client); the request carries W3C traceparent, so the servers'
// spans join the trace. --trace-ids FILE appends the hex trace ID of every
// request, one per line, to FILE, to look the traces up in Jaeger. Queued
// spans are flushed, for up to 5 s, on exit.
package main

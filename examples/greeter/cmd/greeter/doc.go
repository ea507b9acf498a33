// Command greeter runs tender's example greeter service: Greet over
// HTTP/JSON (HTTP/1.1 and h2c) and gRPC, with the gRPC health service, until
// SIGINT or SIGTERM, then shuts down gracefully.
package main

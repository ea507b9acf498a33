// Command greeter-client calls the example greeter's Greet over gRPC (any
// gRPC target, including xds:/// ones resolved through a tender control
// plane) or HTTP, prints one line per reply and a summary of replies per
// instance, and exits non-zero if any request failed.
package main

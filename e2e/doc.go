// Package e2e holds tender's end-to-end tests: the real binaries as
// processes, real grpc-go xDS clients and greeter servers, on loopback (and,
// with the sidecar, in the lab's network namespaces). Every test tears
// down what it started, also when it fails, and prints the processes' logs
// when it fails.
package e2e

// Package capture generates and applies the iptables rules that send a
// pod's traffic through its sidecar, for `sidecar init` and for the
// injector's description of the init container.
//
// It only generates rules and runs the iptables-restore binary it is
// given; it never touches the network namespace it is not asked to. It
// imports no Kubernetes package, so the sidecar binary stays small.
package capture

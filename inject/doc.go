// Package inject holds what turns a pod into a meshed pod: the iptables
// rules that capture its traffic (used by `sidecar init` and by the
// injector webhook to describe the init container).
//
// It only generates rules and runs the iptables-restore binary it is
// given; it never touches the network namespace it is not asked to.
package inject

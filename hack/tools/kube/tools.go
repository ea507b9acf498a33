//go:build tools

// Package tools pins the Kubernetes components the e2e tests run (the API
// server, the one-node cluster's kubelet, controller-manager and
// scheduler, and kubectl) so that `go build k8s.io/kubernetes/cmd/...`
// resolves inside this wrapper module.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)

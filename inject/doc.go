// Package inject turns a pod into a meshed pod: the mutation the
// injector webhook applies (capture init container, sidecar, annotations),
// the webhook itself and its serving certificate. The capture rules live
// in inject/capture.
package inject

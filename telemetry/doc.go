// Package telemetry declares, in one place, the names users see: metric
// names, label sets and help texts (names.go for the metrics the
// interceptors and the CA count, controlplane.go and sidecar.go for the
// health metrics it registers itself) and span attribute keys; it sets up
// tracing (OTLP) and logging. Components take a
// prometheus.Registerer and a *slog.Logger from their caller; nothing here
// registers on a global registry.
package telemetry

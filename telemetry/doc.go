// Package telemetry declares, in one place, the names users see: metric
// names, label sets and help texts, and sets up logging. Components take a
// prometheus.Registerer and a *slog.Logger from their caller; nothing here
// registers on a global registry.
package telemetry

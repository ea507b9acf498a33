package discovery

import "context"

// Sink receives what a source discovers. *Registry implements it.
type Sink interface {
	// Update replaces everything source knows with services.
	Update(source string, services []Service)
	// ReportError records that source failed; what it last reported stays.
	ReportError(source string, err error)
}

// Source is one discovery source. Run reports to sink until ctx is done,
// and returns nil on cancellation or the error that stopped it.
type Source interface {
	Name() string
	Run(ctx context.Context, sink Sink) error
}

// LocalitySink receives where a source's meshed pods run: each pod's
// locality (the Kubernetes source: its node's region and zone labels),
// by "namespace/name". *Registry implements it.
type LocalitySink interface {
	UpdateLocalities(source string, pods map[string]Locality)
}

var (
	_ Sink         = (*Registry)(nil)
	_ LocalitySink = (*Registry)(nil)
)

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

var _ Sink = (*Registry)(nil)

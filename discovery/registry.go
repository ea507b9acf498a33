package discovery

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Snapshot is the merged view of every source at one moment. It is
// immutable once published: subscribers may keep it and read it from any
// goroutine.
type Snapshot struct {
	// Version increases by one with every published snapshot.
	Version uint64
	// Services are sorted by Key; each key appears once.
	Services []Service
	// Routes are the Gateway API routes, sorted by Key; each key appears
	// once (the source earliest in Options.Sources wins).
	Routes []Route
	// Security is the mTLS modes and authorization policies of every
	// source, merged: the first source (in Options.Sources order, mesh.yaml
	// before the others) that sets modes sets them all; a policy two
	// sources name alike is the earlier source's.
	Security Security
	// Localities are where the meshed pods run, by "namespace/name" (the
	// first source, in Options.Sources order, that reports a pod wins).
	// A sidecar learns its own from the control plane.
	Localities map[string]Locality
	// Conflicts lists the keys that more than one source reported.
	Conflicts []Conflict
	// Created is when the registry built the snapshot.
	Created time.Time
}

// Conflict records a service key owned by more than one source. The source
// earliest in Options.Sources wins.
type Conflict struct {
	Key    string   `json:"key"`
	Winner string   `json:"winner"`
	Losers []string `json:"losers"`
}

// SourceStatus is what a source last said about itself.
type SourceStatus struct {
	Synced     bool      `json:"synced"`
	LastUpdate time.Time `json:"lastUpdate,omitzero"`
	// Err is the source's last error, cleared by its next good update.
	Err string `json:"error,omitempty"`
}

// Options configure a Registry.
type Options struct {
	// Debounce is how long the registry waits for more updates before it
	// publishes; default 100 ms.
	Debounce time.Duration
	// MaxDelay bounds how long a steady stream of updates can hold back a
	// snapshot; default 10 × Debounce.
	MaxDelay time.Duration
	// Sources names the sources the registry waits for before it is ready,
	// in precedence order: on a conflict the earlier source wins.
	Sources []string
	Logger  *slog.Logger
	// OnConflict, if set, is called from the registry goroutine for every
	// conflict in a published snapshot.
	OnConflict func(Conflict)
	// SyncTimeout bounds how long the first snapshot waits for every
	// source in Sources to report; after it, the registry publishes what it
	// has and logs the sources that are missing. Default 30 s.
	SyncTimeout time.Duration
	// SecuritySources name the sources of security config (UpdateSecurity)
	// the registry waits for, with no timeout: no snapshot is published
	// before each has reported once, so a control plane that just started
	// never serves a route without the policy that guards it.
	SecuritySources []string
}

// Registry merges the services of all sources and publishes snapshots.
type Registry struct {
	opts Options
	kick chan struct{}
	subs []func(*Snapshot)

	mu sync.Mutex // guards pending and status
	// pending holds each source's latest report not yet merged.
	pending         map[string][]Service
	pendingRoutes   map[string][]Route
	pendingSecurity map[string]Security
	pendingLocality map[string]map[string]Locality
	status          map[string]SourceStatus
	// securityReported: the security sources that have reported once.
	securityReported map[string]bool

	current atomic.Pointer[Snapshot]
}

// New returns a Registry; call Subscribe, then Run.
func New(opts Options) *Registry {
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = 10 * opts.Debounce
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 30 * time.Second
	}
	status := make(map[string]SourceStatus, len(opts.Sources))
	for _, s := range opts.Sources {
		status[s] = SourceStatus{}
	}
	return &Registry{
		opts:             opts,
		kick:             make(chan struct{}, 1),
		pending:          make(map[string][]Service),
		pendingRoutes:    make(map[string][]Route),
		pendingSecurity:  make(map[string]Security),
		pendingLocality:  make(map[string]map[string]Locality),
		status:           status,
		securityReported: make(map[string]bool),
	}
}

// Subscribe registers fn to receive every published snapshot, in order, from
// the registry goroutine. Call it before Run.
func (r *Registry) Subscribe(fn func(*Snapshot)) { r.subs = append(r.subs, fn) }

// Update replaces everything source knows with services. It never blocks;
// bursts of updates are merged into one snapshot.
func (r *Registry) Update(source string, services []Service) {
	services = slices.Clone(services)
	for i := range services {
		services[i].Source = source
	}
	r.mu.Lock()
	r.pending[source] = services
	r.status[source] = SourceStatus{Synced: true, LastUpdate: time.Now()}
	r.mu.Unlock()
	r.kickNow()
}

// UpdateRoutes replaces every route source reported before. Routes do
// not mark a source synced: its services do.
func (r *Registry) UpdateRoutes(source string, routes []Route) {
	routes = slices.Clone(routes)
	for i := range routes {
		routes[i].Source = source
	}
	if routes == nil {
		routes = []Route{}
	}
	r.mu.Lock()
	r.pendingRoutes[source] = routes
	r.mu.Unlock()
	r.kickNow()
}

// UpdateSecurity replaces the mTLS modes and authorization policies
// source reported before; they are published with the services, in the
// same snapshot. It implements SecuritySink.
func (r *Registry) UpdateSecurity(source string, sec Security) {
	sec.Authorization = slices.Clone(sec.Authorization)
	r.mu.Lock()
	r.pendingSecurity[source] = sec
	r.securityReported[source] = true
	r.mu.Unlock()
	r.kickNow()
}

// UpdateLocalities replaces where the pods source reported before run;
// published with the next snapshot. It implements LocalitySink.
func (r *Registry) UpdateLocalities(source string, pods map[string]Locality) {
	pods = maps.Clone(pods)
	if pods == nil {
		pods = map[string]Locality{}
	}
	r.mu.Lock()
	r.pendingLocality[source] = pods
	r.mu.Unlock()
	r.kickNow()
}

// ReportError records that source failed; it keeps serving what it last
// reported. The next Update clears the error.
func (r *Registry) ReportError(source string, err error) {
	r.mu.Lock()
	st := r.status[source]
	st.Err = err.Error()
	r.status[source] = st
	r.mu.Unlock()
}

// Status returns each source's status.
func (r *Registry) Status() map[string]SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]SourceStatus, len(r.status))
	for k, v := range r.status {
		out[k] = v
	}
	return out
}

// Current returns the last published snapshot, or nil before the first.
func (r *Registry) Current() *Snapshot { return r.current.Load() }

// Ready reports whether every source in Options.Sources has reported once
// and a snapshot holding their reports has been published.
func (r *Registry) Ready() bool {
	snap := r.current.Load()
	if snap == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.opts.Sources {
		if !r.status[s].Synced || snap.Created.Before(r.status[s].LastUpdate) {
			return false
		}
	}
	for _, s := range r.opts.SecuritySources {
		if !r.securityReported[s] {
			return false
		}
	}
	return true
}

// Run merges updates and publishes snapshots until ctx is done. The first
// snapshot waits until every source in Options.Sources has reported (or
// SyncTimeout has passed), so that clients never see a partial mesh.
func (r *Registry) Run(ctx context.Context) error {
	bySource := make(map[string][]Service)
	routesBySource := make(map[string][]Route)
	securityBySource := make(map[string]Security)
	localityBySource := make(map[string]map[string]Locality)
	synced := false
	syncTimer := time.NewTimer(r.opts.SyncTimeout)
	defer syncTimer.Stop()
	var (
		timer   *time.Timer
		fire    <-chan time.Time
		started time.Time
	)
	// An empty mesh is still a mesh: with no sources to wait for, publish
	// an empty snapshot so clients get a config.
	r.kickNow()
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-syncTimer.C:
			if missing := r.securityMissing(); len(missing) > 0 {
				r.opts.Logger.Warn("security sources not synced; serving nothing until they are", "missing", missing)
				syncTimer.Reset(r.opts.SyncTimeout)
				continue
			}
			if !synced {
				r.opts.Logger.Warn("discovery sources not synced in time; publishing what they reported",
					"timeout", r.opts.SyncTimeout, "missing", r.unsynced())
				synced = true
				r.publish(bySource, routesBySource, securityBySource, localityBySource)
			}
		case <-r.kick:
			r.mu.Lock()
			for src, svcs := range r.pending {
				bySource[src] = svcs
			}
			clear(r.pending)
			for src, rs := range r.pendingRoutes {
				routesBySource[src] = rs
			}
			clear(r.pendingRoutes)
			for src, sec := range r.pendingSecurity {
				securityBySource[src] = sec
			}
			clear(r.pendingSecurity)
			for src, l := range r.pendingLocality {
				localityBySource[src] = l
			}
			clear(r.pendingLocality)
			r.mu.Unlock()
			now := time.Now()
			if fire == nil {
				started = now
			}
			wait := min(r.opts.Debounce, r.opts.MaxDelay-now.Sub(started))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		case <-fire:
			fire = nil
			if len(r.securityMissing()) > 0 || !synced && len(r.unsynced()) > 0 {
				continue // the last source's Update kicks again
			}
			synced = true
			r.publish(bySource, routesBySource, securityBySource, localityBySource)
		}
	}
}

func (r *Registry) kickNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// securityMissing lists the sources in Options.SecuritySources that have
// not reported.
func (r *Registry) securityMissing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.opts.SecuritySources {
		if !r.securityReported[s] {
			out = append(out, s)
		}
	}
	return out
}

// unsynced lists the sources in Options.Sources that have not reported.
func (r *Registry) unsynced() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.opts.Sources {
		if !r.status[s].Synced {
			out = append(out, s)
		}
	}
	return out
}

func (r *Registry) publish(bySource map[string][]Service, routesBySource map[string][]Route, securityBySource map[string]Security,
	localityBySource map[string]map[string]Locality) {
	services, conflicts := r.merge(bySource)
	routes, rconflicts := r.mergeRoutes(routesBySource)
	conflicts = append(conflicts, rconflicts...)
	security := r.mergeSecurity(securityBySource)
	localities := r.mergeLocalities(localityBySource)
	prev := r.current.Load()
	if prev != nil && reflect.DeepEqual(prev.Services, services) && reflect.DeepEqual(prev.Routes, routes) &&
		reflect.DeepEqual(prev.Conflicts, conflicts) && reflect.DeepEqual(prev.Security, security) &&
		maps.Equal(prev.Localities, localities) {
		// Nothing changed, but a source may have synced: refresh Created
		// so that Ready sees it.
		next := *prev
		next.Created = time.Now()
		r.current.Store(&next)
		return
	}
	snap := &Snapshot{Services: services, Routes: routes, Security: security, Localities: localities, Conflicts: conflicts, Created: time.Now()}
	if prev != nil {
		snap.Version = prev.Version + 1
	} else {
		snap.Version = 1
	}
	r.current.Store(snap)
	// Report a conflict when it appears (or its parties change), not on
	// every snapshot that still holds it.
	var known map[string]Conflict
	if prev != nil {
		known = make(map[string]Conflict, len(prev.Conflicts))
		for _, c := range prev.Conflicts {
			known[c.Key] = c
		}
	}
	for _, c := range conflicts {
		if k, ok := known[c.Key]; ok && k.Winner == c.Winner && slices.Equal(k.Losers, c.Losers) {
			continue
		}
		r.opts.Logger.Warn("service reported by more than one source", "service", c.Key, "winner", c.Winner, "ignored", c.Losers)
		if r.opts.OnConflict != nil {
			r.opts.OnConflict(c)
		}
	}
	r.opts.Logger.Debug("publishing snapshot", "version", snap.Version, "services", len(services), "routes", len(routes))
	for _, fn := range r.subs {
		fn(snap)
	}
}

// mergeLocalities joins the sources' pod localities; on a pod two report,
// the earlier source's.
func (r *Registry) mergeLocalities(bySource map[string]map[string]Locality) map[string]Locality {
	if len(bySource) == 1 {
		for _, m := range bySource {
			return m // never written: UpdateLocalities made it
		}
	}
	sources := make([]string, 0, len(bySource))
	for s := range bySource {
		sources = append(sources, s)
	}
	slices.SortFunc(sources, func(a, b string) int {
		return cmp.Or(cmp.Compare(r.rank(a), r.rank(b)), cmp.Compare(a, b))
	})
	out := map[string]Locality{}
	for _, src := range sources {
		for pod, l := range bySource[src] {
			if _, ok := out[pod]; !ok {
				out[pod] = l
			}
		}
	}
	return out
}

// mergeSecurity joins what the sources reported: the modes of the first
// source (by precedence) that sets any, and every source's policies, the
// earlier source's on a name two share.
func (r *Registry) mergeSecurity(bySource map[string]Security) Security {
	sources := make([]string, 0, len(bySource))
	for s := range bySource {
		sources = append(sources, s)
	}
	slices.SortFunc(sources, func(a, b string) int {
		return cmp.Or(cmp.Compare(r.rank(a), r.rank(b)), cmp.Compare(a, b))
	})
	var out Security
	seen := map[string]bool{}
	for _, src := range sources {
		sec := bySource[src]
		if out.MTLS == nil {
			out.MTLS = sec.MTLS
		}
		for _, p := range sec.Authorization {
			if key := p.Namespace + "/" + p.Name; !seen[key] {
				seen[key] = true
				out.Authorization = append(out.Authorization, p)
			}
		}
	}
	return out
}

// merge unions the sources' services; on a shared key the source with the
// highest precedence wins.
func (r *Registry) merge(bySource map[string][]Service) ([]Service, []Conflict) {
	sources := make([]string, 0, len(bySource))
	for s := range bySource {
		sources = append(sources, s)
	}
	slices.SortFunc(sources, func(a, b string) int {
		return cmp.Or(cmp.Compare(r.rank(a), r.rank(b)), cmp.Compare(a, b))
	})
	owner := make(map[string]int)
	var services []Service
	var conflicts []Conflict
	conflictIdx := make(map[string]int)
	for _, src := range sources {
		for _, svc := range bySource[src] {
			key := svc.Key()
			if i, taken := owner[key]; taken {
				ci, ok := conflictIdx[key]
				if !ok {
					ci = len(conflicts)
					conflictIdx[key] = ci
					conflicts = append(conflicts, Conflict{Key: key, Winner: services[i].Source})
				}
				conflicts[ci].Losers = append(conflicts[ci].Losers, src)
				continue
			}
			owner[key] = len(services)
			services = append(services, svc)
		}
	}
	conflicts = append(conflicts, claimVIPs(services)...)
	slices.SortFunc(services, func(a, b Service) int { return cmp.Compare(a.Key(), b.Key()) })
	return services, conflicts
}

// claimVIPs gives each VIP:port to one service: the first in services
// (which come in source precedence order) keeps it; a later service that
// claims one of its VIP's ports loses its VIP, so that every sidecar
// sends that address to the same service (a Consul registration holding
// another service's ClusterIP must not capture its traffic in some
// sidecars and not in others). The conflict's key is "vip ADDR:PORT",
// its winner and losers "namespace/name@source".
func claimVIPs(services []Service) []Conflict {
	owner := map[netip.AddrPort]int{}
	var out []Conflict
	for i := range services {
		s := &services[i]
		if !s.VIP.IsValid() {
			continue
		}
		var lost []netip.AddrPort
		for _, p := range s.Ports {
			ap := netip.AddrPortFrom(s.VIP, uint16(p.Number))
			if _, taken := owner[ap]; taken {
				lost = append(lost, ap)
			}
		}
		if len(lost) == 0 {
			for _, p := range s.Ports {
				owner[netip.AddrPortFrom(s.VIP, uint16(p.Number))] = i
			}
			continue
		}
		for _, ap := range lost {
			w := &services[owner[ap]]
			out = append(out, Conflict{Key: "vip " + ap.String(), Winner: w.Key() + "@" + w.Source, Losers: []string{s.Key() + "@" + s.Source}})
		}
		s.VIP = netip.Addr{}
	}
	return out
}

// mergeRoutes unions the sources' routes as merge does services.
func (r *Registry) mergeRoutes(bySource map[string][]Route) ([]Route, []Conflict) {
	sources := make([]string, 0, len(bySource))
	for s := range bySource {
		sources = append(sources, s)
	}
	slices.SortFunc(sources, func(a, b string) int {
		return cmp.Or(cmp.Compare(r.rank(a), r.rank(b)), cmp.Compare(a, b))
	})
	owner := make(map[string]string)
	var routes []Route
	var conflicts []Conflict
	conflictIdx := make(map[string]int)
	for _, src := range sources {
		for _, rt := range bySource[src] {
			key := rt.Key()
			if winner, taken := owner[key]; taken {
				ci, ok := conflictIdx[key]
				if !ok {
					ci = len(conflicts)
					conflictIdx[key] = ci
					conflicts = append(conflicts, Conflict{Key: key, Winner: winner})
				}
				conflicts[ci].Losers = append(conflicts[ci].Losers, src)
				continue
			}
			owner[key] = src
			routes = append(routes, rt)
		}
	}
	slices.SortFunc(routes, compareRoutes)
	return routes, conflicts
}

func (r *Registry) rank(source string) int {
	if i := slices.Index(r.opts.Sources, source); i >= 0 {
		return i
	}
	return len(r.opts.Sources)
}

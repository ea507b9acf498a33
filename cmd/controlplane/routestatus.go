package main

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/kube"
	"github.com/tender-mesh/tender/xds"
)

// routeStatusWriter writes what the translator made of the Kubernetes
// source's routes back into their status, as a Gateway API
// implementation does: one entry in status.parents per Service parent,
// under tender's controller name, with the Accepted and ResolvedRefs
// conditions. Other controllers' entries are left as they are.
//
// Update takes the statuses of every applied snapshot and never blocks;
// one goroutine (Run) writes, the latest statuses winning over any it
// has not written yet. It writes only what differs from the live object.
type routeStatusWriter struct {
	opts routeStatusOptions
	now  func() time.Time

	kick    chan struct{}
	mu      sync.Mutex // guards latest and pending
	latest  []xds.RouteStatus
	pending bool
}

// routeStatusOptions configure a routeStatusWriter.
type routeStatusOptions struct {
	Client gwclient.Interface
	// Namespaces the Kubernetes source watches; empty: all.
	Namespaces []string
	// Synced reports whether the Kubernetes source has reported: until
	// then a snapshot lacks its routes, and writing would take tender's
	// entries off routes it handles.
	Synced func() bool
	// Resync is how often every route is compared with its live object
	// again, so that a status someone else changed heals; 0: never.
	Resync time.Duration
	Logger *slog.Logger
}

// fieldManager names the control plane in the routes' managed fields.
const fieldManager = "tender-controlplane"

// maxConditionMessage is the longest message metav1.Condition takes.
const maxConditionMessage = 32768

// The writer's retry delays after a write failed.
const (
	minStatusRetry = time.Second
	maxStatusRetry = time.Minute
)

func newRouteStatusWriter(opts routeStatusOptions) *routeStatusWriter {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Synced == nil {
		opts.Synced = func() bool { return true }
	}
	if len(opts.Namespaces) == 0 {
		opts.Namespaces = []string{metav1.NamespaceAll}
	}
	return &routeStatusWriter{opts: opts, now: time.Now, kick: make(chan struct{}, 1)}
}

// Update takes what an applied snapshot made of the mesh's routes (it is
// xds.Options.OnRouteStatus); it keeps the Kubernetes source's and
// returns at once.
func (w *routeStatusWriter) Update(all []xds.RouteStatus) {
	ours := make([]xds.RouteStatus, 0, len(all))
	for _, st := range all {
		if st.Source == kube.Name {
			ours = append(ours, st)
		}
	}
	w.mu.Lock()
	w.latest, w.pending = ours, true
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// take returns the latest statuses if Update brought new ones.
func (w *routeStatusWriter) take() ([]xds.RouteStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	latest, ok := w.latest, w.pending
	w.pending = false
	return latest, ok
}

// Run writes statuses until ctx ends.
func (w *routeStatusWriter) Run(ctx context.Context) error {
	var resync <-chan time.Time
	if w.opts.Resync > 0 {
		t := time.NewTicker(w.opts.Resync)
		defer t.Stop()
		resync = t.C
	}
	retryTimer := time.NewTimer(maxStatusRetry)
	retryTimer.Stop()
	defer retryTimer.Stop()
	delay := time.Duration(0)

	// written holds, by route key, the status last written (or found
	// already there); nil marks a route to compare with its live object
	// on the next pass: one whose write failed, or one that carried
	// tender's entries when the control plane started.
	written := map[string]*xds.RouteStatus{}
	seeded := false
	var want []xds.RouteStatus
	have := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
		case <-retryTimer.C:
		case <-resync:
			for k := range written {
				written[k] = nil
			}
		}
		if latest, ok := w.take(); ok {
			want, have = latest, true
		}
		if !have || !w.opts.Synced() {
			continue // the next snapshot kicks again
		}
		ok := true
		if !seeded {
			if err := w.seed(ctx, written); err != nil {
				w.opts.Logger.Warn("routes' status not read; will retry", "err", err)
				ok = false
			} else {
				seeded = true
			}
		}
		if w.syncAll(ctx, want, written) && ok {
			delay = 0
			continue
		}
		delay = min(max(2*delay, minStatusRetry), maxStatusRetry)
		retryTimer.Reset(delay)
	}
}

// seed marks the routes that carry tender's entries from before the
// control plane started, so that the next pass takes them off the routes
// it no longer handles.
func (w *routeStatusWriter) seed(ctx context.Context, written map[string]*xds.RouteStatus) error {
	mark := func(kind string, m metav1.ObjectMeta, parents []gwv1.RouteParentStatus) {
		key := kind + "/" + m.Namespace + "/" + m.Name
		if _, known := written[key]; known {
			return
		}
		if slices.ContainsFunc(parents, func(p gwv1.RouteParentStatus) bool { return p.ControllerName == xds.ControllerName }) {
			written[key] = nil
		}
	}
	for _, ns := range w.opts.Namespaces {
		hs, err := w.opts.Client.GatewayV1().HTTPRoutes(ns).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err): // no HTTPRoute CRD
		case err != nil:
			return fmt.Errorf("list HTTPRoutes: %w", err)
		default:
			for _, r := range hs.Items {
				mark(discovery.KindHTTPRoute, r.ObjectMeta, r.Status.Parents)
			}
		}
		gs, err := w.opts.Client.GatewayV1().GRPCRoutes(ns).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err): // no GRPCRoute CRD
		case err != nil:
			return fmt.Errorf("list GRPCRoutes: %w", err)
		default:
			for _, r := range gs.Items {
				mark(discovery.KindGRPCRoute, r.ObjectMeta, r.Status.Parents)
			}
		}
	}
	return nil
}

// syncAll brings every route's status to want: tender's entries set on
// the routes in want, taken off those in written that are no longer. It
// reports whether every write succeeded.
func (w *routeStatusWriter) syncAll(ctx context.Context, want []xds.RouteStatus, written map[string]*xds.RouteStatus) bool {
	ok := true
	wanted := make(map[string]bool, len(want))
	for i := range want {
		st := &want[i]
		key := st.Key()
		wanted[key] = true
		if prev := written[key]; prev != nil && reflect.DeepEqual(prev, st) {
			continue
		}
		if ctx.Err() != nil {
			return false // shutting down: no warning per route
		}
		if err := w.sync(ctx, st.Kind, st.Namespace, st.Name, st); err != nil {
			w.opts.Logger.Warn("route status not written", "route", key, "err", err)
			written[key], ok = nil, false
			continue
		}
		written[key] = st
	}
	for key, prev := range written {
		if wanted[key] {
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		// No longer tender's to report (deleted, its Service parents
		// gone, or another source's now): take tender's entries off.
		kind, ns, name := splitRouteKey(key, prev)
		if err := w.sync(ctx, kind, ns, name, nil); err != nil {
			w.opts.Logger.Warn("route status not cleared", "route", key, "err", err)
			written[key], ok = nil, false
			continue
		}
		delete(written, key)
	}
	return ok
}

// splitRouteKey returns a route's kind, namespace and name, from its last
// status, else from its key ("Kind/namespace/name"; neither a namespace
// nor a name has a slash).
func splitRouteKey(key string, st *xds.RouteStatus) (kind, ns, name string) {
	if st != nil {
		return st.Kind, st.Namespace, st.Name
	}
	parts := strings.SplitN(key, "/", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return parts[0], parts[1], parts[2]
}

// sync writes one route's status: tender's entries as want says, none
// when want is nil. It retries on a conflict with a fresh read.
func (w *routeStatusWriter) sync(ctx context.Context, kind, ns, name string, want *xds.RouteStatus) error {
	now := metav1.NewTime(w.now().Truncate(time.Second)) // what the API server stores
	var wrote bool
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		switch kind {
		case discovery.KindHTTPRoute:
			wrote, err = syncRoute(ctx, w.opts.Client.GatewayV1().HTTPRoutes(ns), name,
				func(r *gwv1.HTTPRoute) *[]gwv1.RouteParentStatus { return &r.Status.Parents }, want, now)
		case discovery.KindGRPCRoute:
			wrote, err = syncRoute(ctx, w.opts.Client.GatewayV1().GRPCRoutes(ns), name,
				func(r *gwv1.GRPCRoute) *[]gwv1.RouteParentStatus { return &r.Status.Parents }, want, now)
		default:
			err = fmt.Errorf("unknown route kind %q", kind)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", kind, ns, name, err)
	}
	if wrote {
		w.opts.Logger.Info("route status written", "route", kind+"/"+ns+"/"+name, "parents", parentCount(want))
	}
	return nil
}

func parentCount(st *xds.RouteStatus) int {
	if st == nil {
		return 0
	}
	return len(st.Parents)
}

// statusClient is what syncRoute needs of a route kind's typed client.
type statusClient[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// syncRoute reads the live route, merges want into its status.parents
// and writes the status if that changed it. A route that is gone, or of
// a generation below the one want was made from (deleted and made again
// since), is left alone: the next snapshot brings its status.
func syncRoute[T metav1.Object](ctx context.Context, c statusClient[T], name string, parents func(T) *[]gwv1.RouteParentStatus,
	want *xds.RouteStatus, now metav1.Time,
) (wrote bool, err error) {
	live, err := c.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if want != nil && live.GetGeneration() < want.Generation {
		return false, nil
	}
	p := parents(live)
	next := mergeParents(*p, want, now)
	if apiequality.Semantic.DeepEqual(*p, next) {
		return false, nil
	}
	*p = next
	if _, err := c.UpdateStatus(ctx, live, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
		return false, err
	}
	return true, nil
}

// mergeParents returns live's status.parents with tender's entries made
// what want says (none when want is nil). Entries of other controllers
// keep their place and content; tender's keep their place while their
// parent is still handled; a condition keeps its lastTransitionTime while
// its status stays the same. The result is never nil: the CRD requires
// the list.
func mergeParents(live []gwv1.RouteParentStatus, want *xds.RouteStatus, now metav1.Time) []gwv1.RouteParentStatus {
	var wantParents []xds.ParentStatus
	var gen int64
	if want != nil {
		wantParents, gen = want.Parents, want.Generation
	}
	placed := make([]bool, len(wantParents))
	out := make([]gwv1.RouteParentStatus, 0, len(live)+len(wantParents))
	for _, p := range live {
		if p.ControllerName != xds.ControllerName {
			out = append(out, p)
			continue
		}
		i := slices.IndexFunc(wantParents, func(ps xds.ParentStatus) bool { return apiequality.Semantic.DeepEqual(ps.Ref, p.ParentRef) })
		if i < 0 || placed[i] {
			continue // no longer handled (or a duplicate): dropped
		}
		placed[i] = true
		out = append(out, parentStatus(wantParents[i], gen, p.Conditions, now))
	}
	for i, ps := range wantParents {
		if !placed[i] {
			out = append(out, parentStatus(ps, gen, nil, now))
		}
	}
	return out
}

// parentStatus is tender's status entry for one parent; prev are the
// conditions of the entry it replaces.
func parentStatus(ps xds.ParentStatus, gen int64, prev []metav1.Condition, now metav1.Time) gwv1.RouteParentStatus {
	st := gwv1.RouteParentStatus{
		ParentRef:      ps.Ref,
		ControllerName: xds.ControllerName,
		Conditions: []metav1.Condition{
			condition(xds.ConditionAccepted, ps.Accepted, gen, prev, now),
			condition(xds.ConditionResolvedRefs, ps.ResolvedRefs, gen, prev, now),
		},
	}
	if ps.PartiallyInvalid != nil {
		// Some rules were dropped: the spec's condition, present only
		// while it holds.
		st.Conditions = append(st.Conditions, condition(xds.ConditionPartiallyInvalid, *ps.PartiallyInvalid, gen, prev, now))
	}
	return st
}

func condition(typ string, c xds.Condition, gen int64, prev []metav1.Condition, now metav1.Time) metav1.Condition {
	status := metav1.ConditionFalse
	if c.OK {
		status = metav1.ConditionTrue
	}
	// The API server refuses a condition without a reason; the
	// translator always gives one, this is a guard.
	reason := c.Reason
	if reason == "" {
		reason = typ
		if !c.OK {
			reason = "Unknown"
		}
	}
	out := metav1.Condition{Type: typ, Status: status, ObservedGeneration: gen, LastTransitionTime: now,
		Reason: reason, Message: truncate(c.Message, maxConditionMessage)}
	if p := meta.FindStatusCondition(prev, typ); p != nil && p.Status == status {
		out.LastTransitionTime = p.LastTransitionTime
	}
	return out
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

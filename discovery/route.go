package discovery

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The route kinds tender reads: the Gateway API's mesh routes (GAMMA).
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Route is one Gateway API route, an HTTPRoute or a GRPCRoute, as a
// source reported it: the object a user would `kubectl apply`. Exactly
// one of HTTP and GRPC is set. A snapshot's routes are read-only.
type Route struct {
	HTTP *gwv1.HTTPRoute
	GRPC *gwv1.GRPCRoute
	// Source names the discovery source the route came from.
	Source string
}

// Kind is KindHTTPRoute or KindGRPCRoute.
func (r *Route) Kind() string {
	if r.GRPC != nil {
		return KindGRPCRoute
	}
	return KindHTTPRoute
}

// Meta is the route's object metadata.
func (r *Route) Meta() *metav1.ObjectMeta {
	if r.GRPC != nil {
		return &r.GRPC.ObjectMeta
	}
	if r.HTTP != nil {
		return &r.HTTP.ObjectMeta
	}
	return &metav1.ObjectMeta{}
}

// Key identifies a route across sources: "Kind/namespace/name".
func (r *Route) Key() string {
	m := r.Meta()
	return r.Kind() + "/" + m.Namespace + "/" + m.Name
}

// ParentRefs are the route's parents.
func (r *Route) ParentRefs() []gwv1.ParentReference {
	if r.GRPC != nil {
		return r.GRPC.Spec.ParentRefs
	}
	if r.HTTP != nil {
		return r.HTTP.Spec.ParentRefs
	}
	return nil
}

// compareRoutes orders routes by key.
func compareRoutes(a, b Route) int { return cmp.Compare(a.Key(), b.Key()) }

// RouteSink is a Sink that also takes routes. Sources that read them
// (mesh.yaml's routes, the HTTPRoute and GRPCRoute resources) report to
// it when their sink implements it.
type RouteSink interface {
	// UpdateRoutes replaces every route source reported before.
	UpdateRoutes(source string, routes []Route)
}

var _ RouteSink = (*Registry)(nil)

// The bounds the Gateway API's CRDs put on a route, applied to routes
// from every source (the API server enforces them for its own).
const (
	maxParentRefs = 32
	maxRules      = 16
	maxMatches    = 64
	maxFieldList  = 16 // headers, query params, backendRefs, filters
	maxWeight     = 1_000_000
)

// ErrInvalidRoute wraps every reason a route is refused.
var ErrInvalidRoute = errors.New("invalid route")

// Validate checks a route's name and the bounds the Gateway API's CRDs
// set, so that a route from a file costs what one from the API server
// can. What a valid object means is the translator's to judge (and
// report in the route's status).
func (r *Route) Validate() error {
	if (r.HTTP == nil) == (r.GRPC == nil) {
		return fmt.Errorf("%w: want exactly one of an HTTPRoute and a GRPCRoute", ErrInvalidRoute)
	}
	m := r.Meta()
	if len(m.Name) > 253 || !dnsSubdomain.MatchString(m.Name) {
		return fmt.Errorf("%w: %s: name %q is not a DNS subdomain", ErrInvalidRoute, r.Kind(), m.Name)
	}
	if !dnsLabel.MatchString(m.Namespace) {
		return fmt.Errorf("%w: %s %s: namespace %q is not a DNS label", ErrInvalidRoute, r.Kind(), m.Name, m.Namespace)
	}
	where := r.Key()
	refs := r.ParentRefs()
	if len(refs) == 0 || len(refs) > maxParentRefs {
		return fmt.Errorf("%w: %s: %d parentRefs (want 1 to %d)", ErrInvalidRoute, where, len(refs), maxParentRefs)
	}
	check := func(what string, n, limit int) error {
		if n > limit {
			return fmt.Errorf("%w: %s: %s: %d (at most %d)", ErrInvalidRoute, where, what, n, limit)
		}
		return nil
	}
	weight := func(w *int32) error {
		if w != nil && (*w < 0 || *w > maxWeight) {
			return fmt.Errorf("%w: %s: weight %d out of range 0-%d", ErrInvalidRoute, where, *w, maxWeight)
		}
		return nil
	}
	if h := r.HTTP; h != nil {
		if err := check("rules", len(h.Spec.Rules), maxRules); err != nil {
			return err
		}
		for _, rule := range h.Spec.Rules {
			if err := errors.Join(check("matches", len(rule.Matches), maxMatches), check("filters", len(rule.Filters), maxFieldList),
				check("backendRefs", len(rule.BackendRefs), maxFieldList)); err != nil {
				return err
			}
			for _, m := range rule.Matches {
				if err := errors.Join(check("headers", len(m.Headers), maxFieldList), check("queryParams", len(m.QueryParams), maxFieldList)); err != nil {
					return err
				}
			}
			for _, b := range rule.BackendRefs {
				if err := errors.Join(weight(b.Weight), check("backendRef filters", len(b.Filters), maxFieldList)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	g := r.GRPC
	if err := check("rules", len(g.Spec.Rules), maxRules); err != nil {
		return err
	}
	for _, rule := range g.Spec.Rules {
		if err := errors.Join(check("matches", len(rule.Matches), maxMatches/8), check("filters", len(rule.Filters), maxFieldList),
			check("backendRefs", len(rule.BackendRefs), maxFieldList)); err != nil {
			return err
		}
		for _, m := range rule.Matches {
			if err := check("headers", len(m.Headers), maxFieldList); err != nil {
				return err
			}
		}
		for _, b := range rule.BackendRefs {
			if err := errors.Join(weight(b.Weight), check("backendRef filters", len(b.Filters), maxFieldList)); err != nil {
				return err
			}
		}
	}
	return nil
}

// dnsSubdomain is an RFC 1123 subdomain, as Kubernetes requires of
// object names.
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

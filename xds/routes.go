package xds

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tender-mesh/tender/discovery"
)

// The Gateway API route conditions and reasons tender reports.
const (
	ConditionAccepted     = string(gwv1.RouteConditionAccepted)
	ConditionResolvedRefs = string(gwv1.RouteConditionResolvedRefs)
	// ConditionPartiallyInvalid is the Gateway API's condition for a
	// route some of whose rules were dropped.
	ConditionPartiallyInvalid = string(gwv1.RouteConditionPartiallyInvalid)

	ReasonAccepted         = string(gwv1.RouteReasonAccepted)
	ReasonResolvedRefs     = string(gwv1.RouteReasonResolvedRefs)
	ReasonNoMatchingParent = string(gwv1.RouteReasonNoMatchingParent)
	ReasonUnsupportedValue = string(gwv1.RouteReasonUnsupportedValue)
	ReasonBackendNotFound  = string(gwv1.RouteReasonBackendNotFound)
	ReasonInvalidKind      = string(gwv1.RouteReasonInvalidKind)
	ReasonRefNotPermitted  = string(gwv1.RouteReasonRefNotPermitted)
)

// ControllerName is the controller tender writes route status as.
const ControllerName = "tender.dev/mesh"

// Condition is one status condition: OK is status True.
type Condition struct {
	OK      bool   `json:"ok"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// ParentStatus is what tender made of a route for one of its parents.
type ParentStatus struct {
	Ref          gwv1.ParentReference `json:"parentRef"`
	Accepted     Condition            `json:"accepted"`
	ResolvedRefs Condition            `json:"resolvedRefs"`
	// PartiallyInvalid is set (status True) when some rules could not be
	// programmed while others serve.
	PartiallyInvalid *Condition `json:"partiallyInvalid,omitempty"`
}

// RouteStatus is what tender made of one route, per parent it handles
// (Services; a parent that is a Gateway is not tender's to report).
type RouteStatus struct {
	Kind       string         `json:"kind"`
	Namespace  string         `json:"namespace"`
	Name       string         `json:"name"`
	Generation int64          `json:"generation,omitempty"`
	Source     string         `json:"source"`
	Parents    []ParentStatus `json:"parents"`
}

// Key is "Kind/namespace/name", as discovery.Route.Key.
func (s *RouteStatus) Key() string { return s.Kind + "/" + s.Namespace + "/" + s.Name }

// routeSet is the routes of every service port that has any, compiled.
type routeSet struct {
	// byListener maps a service port's listener name to its routes, in
	// the order the Gateway API's precedence rules give.
	byListener map[string][]*routev3.Route
	status     []RouteStatus
}

// entry is one match of one rule, with what orders it among the others.
type entry struct {
	route *routev3.Route
	// pathKind: 0 exact, 1 regular expression, 2 prefix; pathLen the
	// length of the path or pattern (twice it for a prefix: a GRPCRoute's
	// method-only match ranks between two prefixes).
	pathKind, pathLen int
	method            bool
	headers, queries  int
	// routeIdx orders the routes (oldest first, then by namespace/name),
	// ruleIdx the rules within a route.
	routeIdx, ruleIdx int
}

func compareEntries(a, b *entry) int {
	bool2int := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(a.pathKind, b.pathKind),
		cmp.Compare(b.pathLen, a.pathLen),
		cmp.Compare(bool2int(b.method), bool2int(a.method)),
		cmp.Compare(b.headers, a.headers),
		cmp.Compare(b.queries, a.queries),
		cmp.Compare(a.routeIdx, b.routeIdx),
		cmp.Compare(a.ruleIdx, b.ruleIdx),
	)
}

// compileRoutes turns the mesh's Gateway API routes into Envoy routes per
// service port, as the Gateway API orders them: per parent, every rule of
// every attached route, sorted by match precedence (exact path, longest
// prefix, method, most header matches, most query matches), ties going
// to the oldest route, then to namespace/name, then to the first rule. A
// bad rule answers 500 where the spec says so and never breaks the other
// routes; what was wrong goes into the route's status.
func compileRoutes(services []discovery.Service, routes []discovery.Route) routeSet {
	b := &routeBuilder{services: make(map[string]*discovery.Service, len(services))}
	for i := range services {
		b.services[services[i].Key()] = &services[i]
	}
	order := make([]*discovery.Route, len(routes))
	for i := range routes {
		order[i] = &routes[i]
	}
	slices.SortStableFunc(order, func(a, b *discovery.Route) int {
		ma, mb := a.Meta(), b.Meta()
		return cmp.Or(
			ma.CreationTimestamp.Compare(mb.CreationTimestamp.Time),
			cmp.Compare(ma.Namespace+"/"+ma.Name, mb.Namespace+"/"+mb.Name),
			cmp.Compare(a.Kind(), b.Kind()),
		)
	})
	entries := map[string][]*entry{}
	kinds := map[string]string{} // the route kind each port has
	out := routeSet{byListener: map[string][]*routev3.Route{}}
	for ri, rt := range order {
		st := RouteStatus{Kind: rt.Kind(), Namespace: rt.Meta().Namespace, Name: rt.Meta().Name, Generation: rt.Meta().Generation, Source: rt.Source}
		for _, ref := range rt.ParentRefs() {
			if ref.Group == nil || ref.Kind == nil || !isServiceRef(ref.Group, ref.Kind) {
				// A Gateway's route (the parentRef defaults to a Gateway):
				// not the mesh's.
				continue
			}
			ps, targets := b.parent(rt, ref)
			if ps.Accepted.OK {
				b.problems = b.problems[:0]
				programmed := false
				for _, t := range targets {
					if k, ok := kinds[t.listener]; ok && k != rt.Kind() {
						// The Gateway API does not merge the two kinds: the
						// port keeps the kind of the route with precedence.
						b.fail(false, ReasonUnsupportedValue, "port %d of %s already has %ss, which are not merged with %ss",
							t.port.Number, t.svc.Key(), k, rt.Kind())
						continue
					}
					if es := b.rules(rt, ri, t.svc, t.port); len(es) > 0 {
						kinds[t.listener] = rt.Kind()
						// Attached: what matches no rule of the port is
						// refused.
						entries[t.listener] = append(entries[t.listener], es...)
						programmed = true
					}
				}
				ps.Accepted, ps.ResolvedRefs = b.conditions()
				switch {
				case !programmed && ps.Accepted.OK:
					ps.Accepted = Condition{Reason: ReasonUnsupportedValue, Message: "no rule could be programmed"}
				case programmed && !ps.Accepted.OK:
					// Some rules were dropped (or answer 500), the others
					// serve: the spec's partially invalid route.
					ps.PartiallyInvalid = &Condition{OK: true, Reason: ReasonUnsupportedValue, Message: "dropped rule: " + ps.Accepted.Message}
					ps.Accepted = Condition{OK: true, Reason: ReasonAccepted, Message: "programmed into the mesh, but for what PartiallyInvalid says"}
				}
			}
			st.Parents = append(st.Parents, ps)
		}
		if len(st.Parents) > 0 {
			out.status = append(out.status, st)
		}
	}
	for l, es := range entries {
		slices.SortStableFunc(es, compareEntries)
		rs := make([]*routev3.Route, len(es))
		for i, e := range es {
			rs[i] = e.route
		}
		out.byListener[l] = rs
	}
	slices.SortFunc(out.status, func(a, b RouteStatus) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

// isServiceRef: group "" (or "core") and kind Service; nil is a backend
// reference's default, "" and Service.
func isServiceRef(group *gwv1.Group, kind *gwv1.Kind) bool {
	g, k := "", "Service"
	if group != nil {
		g = string(*group)
	}
	if kind != nil {
		k = string(*kind)
	}
	return (g == "" || g == "core") && k == "Service"
}

type routeBuilder struct {
	services map[string]*discovery.Service
	// problems found building the current parent's rules, by condition.
	problems []problem
}

type problem struct {
	refs   bool // a ResolvedRefs problem; else Accepted
	reason string
	msg    string
}

func (b *routeBuilder) fail(refs bool, reason, format string, a ...any) {
	b.problems = append(b.problems, problem{refs, reason, fmt.Sprintf(format, a...)})
}

// conditions sums the problems up: the first of each kind gives the
// reason, the messages are joined.
func (b *routeBuilder) conditions() (accepted, resolved Condition) {
	accepted = Condition{OK: true, Reason: ReasonAccepted, Message: "programmed into the mesh"}
	resolved = Condition{OK: true, Reason: ReasonResolvedRefs, Message: "all references resolved"}
	var am, rm []string
	seen := map[problem]bool{}
	for _, p := range b.problems {
		if seen[p] {
			continue // the same rule built for another port of the parent
		}
		seen[p] = true
		if p.refs {
			if resolved.OK {
				resolved = Condition{Reason: p.reason}
			}
			rm = append(rm, p.msg)
			continue
		}
		if accepted.OK {
			accepted = Condition{Reason: p.reason}
		}
		am = append(am, p.msg)
	}
	if !accepted.OK {
		accepted.Message = strings.Join(am, "; ")
	}
	if !resolved.OK {
		resolved.Message = strings.Join(rm, "; ")
	}
	return accepted, resolved
}

type parentTarget struct {
	svc      *discovery.Service
	port     discovery.Port
	listener string
}

// parent resolves a parentRef to the service ports it configures.
func (b *routeBuilder) parent(rt *discovery.Route, ref gwv1.ParentReference) (ParentStatus, []parentTarget) {
	ps := ParentStatus{Ref: ref, ResolvedRefs: Condition{OK: true, Reason: ReasonResolvedRefs}}
	ns := rt.Meta().Namespace
	if ref.Namespace != nil && string(*ref.Namespace) != "" {
		ns = string(*ref.Namespace)
	}
	if ns != rt.Meta().Namespace {
		ps.Accepted = Condition{Reason: ReasonUnsupportedValue,
			Message: fmt.Sprintf("consumer routes (a route in namespace %s for a Service in %s) are not supported yet", rt.Meta().Namespace, ns)}
		return ps, nil
	}
	svc := b.services[ns+"/"+string(ref.Name)]
	if svc == nil {
		ps.Accepted = Condition{Reason: ReasonNoMatchingParent, Message: fmt.Sprintf("Service %s/%s not found", ns, ref.Name)}
		return ps, nil
	}
	if msg := foreignService(rt, svc); msg != "" {
		ps.Accepted = Condition{Reason: ReasonNoMatchingParent, Message: msg}
		return ps, nil
	}
	var targets []parentTarget
	for _, p := range svc.Ports {
		if ref.Port != nil && uint32(*ref.Port) != p.Number {
			continue
		}
		targets = append(targets, parentTarget{svc, p, ListenerName(svc, p)})
	}
	if len(targets) == 0 {
		msg := fmt.Sprintf("Service %s/%s has no ports", ns, ref.Name)
		if ref.Port != nil {
			msg = fmt.Sprintf("Service %s/%s has no port %d", ns, ref.Name, *ref.Port)
		}
		ps.Accepted = Condition{Reason: ReasonNoMatchingParent, Message: msg}
		return ps, nil
	}
	if ref.SectionName != nil && *ref.SectionName != "" {
		ps.Accepted = Condition{Reason: ReasonUnsupportedValue, Message: "sectionName on a Service parent is not supported; use port"}
		return ps, nil
	}
	ps.Accepted = Condition{OK: true, Reason: ReasonAccepted}
	return ps, targets
}

package xds

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
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

// rule is a route rule of either kind, reduced to what both share.
type rule struct {
	matches  []match
	backends []backend
	// filters of the rule, in order.
	filters []filter
	// timeouts (HTTPRoute only); nil: the service's own.
	timeouts *gwv1.HTTPRouteTimeouts
	retry    *gwv1.HTTPRouteRetry
}

type match struct {
	path *routev3.RouteMatch // path specifier only
	// extra is a second path specifier the match needs: a PathPrefix
	// /api is the exact path /api and the prefix /api/ (grpc-go takes no
	// path_separated_prefix).
	extra *routev3.RouteMatch
	// prefix is a PathPrefix match's prefix without its trailing slash
	// ("" for /); isPrefix says the match is one.
	prefix   string
	isPrefix bool
	insts    int // RE2 instructions of its regular expressions
	pathKind int
	pathLen  int
	headers  []*routev3.HeaderMatcher
	queries  []*routev3.QueryParameterMatcher
	method   string
	bad      string // why the match cannot be programmed
}

type backend struct {
	ref     gwv1.BackendObjectReference
	weight  int32
	filters int // backend-level filters (not supported)
}

type filter struct {
	kind     string
	reqHdr   *gwv1.HTTPHeaderFilter
	respHdr  *gwv1.HTTPHeaderFilter
	redirect *gwv1.HTTPRequestRedirectFilter
	rewrite  *gwv1.HTTPURLRewriteFilter
	mirror   *gwv1.HTTPRequestMirrorFilter
}

// rules builds the routes of every rule of rt for one parent port.
func (b *routeBuilder) rules(rt *discovery.Route, routeIdx int, svc *discovery.Service, port discovery.Port) []*entry {
	var out []*entry
	insts := 0 // of the route's regular expressions, against the budget
	for i, r := range normalize(rt) {
		action := b.action(rt, i, &r, svc, port)
		for j, m := range r.matches {
			if insts += m.insts; m.bad == "" && insts > xdsclient.MaxRouteInsts {
				m.bad = fmt.Sprintf("the route's regular expressions are over %d instructions together", xdsclient.MaxRouteInsts)
			}
			if m.bad != "" {
				b.fail(false, ReasonUnsupportedValue, "rule %d match %d: %s", i, j, m.bad)
				continue
			}
			for _, path := range []*routev3.RouteMatch{m.path, m.extra} {
				if path == nil {
					continue
				}
				rm := &routev3.RouteMatch{PathSpecifier: path.PathSpecifier, Headers: m.headers, QueryParameters: m.queries}
				if m.method != "" {
					rm.Headers = append(slices.Clip(rm.Headers), exactHeader(":method", m.method))
				}
				route := cloneRoute(action)
				route.Name = fmt.Sprintf("%s/%s/%s/rule/%d/match/%d", rt.Kind(), rt.Meta().Namespace, rt.Meta().Name, i, j)
				route.Match = rm
				out = append(out, &entry{
					route: route, pathKind: m.pathKind, pathLen: m.pathLen,
					method: m.method != "", headers: len(m.headers), queries: len(m.queries),
					routeIdx: routeIdx, ruleIdx: i,
				})
			}
		}
	}
	return out
}

// normalize reduces an HTTPRoute's or GRPCRoute's rules to rule values:
// defaults applied (a rule without matches matches every request).
func normalize(rt *discovery.Route) []rule {
	var out []rule
	if h := rt.HTTP; h != nil {
		for _, r := range h.Spec.Rules {
			nr := rule{timeouts: r.Timeouts, retry: r.Retry}
			for _, m := range r.Matches {
				nr.matches = append(nr.matches, httpMatch(m))
			}
			if len(r.Matches) == 0 {
				nr.matches = []match{httpMatch(gwv1.HTTPRouteMatch{})}
			}
			for _, br := range r.BackendRefs {
				nr.backends = append(nr.backends, backend{ref: br.BackendObjectReference, weight: weightOf(br.Weight), filters: len(br.Filters)})
			}
			for _, f := range r.Filters {
				nr.filters = append(nr.filters, filter{kind: string(f.Type), reqHdr: f.RequestHeaderModifier, respHdr: f.ResponseHeaderModifier,
					redirect: f.RequestRedirect, rewrite: f.URLRewrite, mirror: f.RequestMirror})
			}
			out = append(out, nr)
		}
		return out
	}
	if g := rt.GRPC; g != nil {
		for _, r := range g.Spec.Rules {
			var nr rule
			for _, m := range r.Matches {
				nr.matches = append(nr.matches, grpcMatch(m))
			}
			if len(r.Matches) == 0 {
				nr.matches = []match{grpcMatch(gwv1.GRPCRouteMatch{})}
			}
			for _, br := range r.BackendRefs {
				nr.backends = append(nr.backends, backend{ref: br.BackendObjectReference, weight: weightOf(br.Weight), filters: len(br.Filters)})
			}
			for _, f := range r.Filters {
				nr.filters = append(nr.filters, filter{kind: string(f.Type), reqHdr: f.RequestHeaderModifier, respHdr: f.ResponseHeaderModifier, mirror: f.RequestMirror})
			}
			out = append(out, nr)
		}
	}
	return out
}

func weightOf(w *int32) int32 {
	if w == nil {
		return 1
	}
	return *w
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
	}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// checkRegex adds re's program size to m, or says why re cannot be used.
func (m *match) checkRegex(what, re string) {
	n, err := xdsclient.RegexInsts(re)
	if err != nil {
		m.bad = what + ": " + strings.TrimPrefix(err.Error(), xdsclient.ErrRouteValue.Error()+": ")
		return
	}
	m.insts += n
}

func httpMatch(m gwv1.HTTPRouteMatch) match {
	var out match
	typ, value := gwv1.PathMatchPathPrefix, "/"
	if p := m.Path; p != nil {
		if p.Type != nil {
			typ = *p.Type
		}
		if p.Value != nil {
			value = *p.Value
		}
	}
	if !strings.HasPrefix(value, "/") && typ != gwv1.PathMatchRegularExpression {
		out.bad = fmt.Sprintf("path %q does not start with /", value)
	}
	switch typ {
	case gwv1.PathMatchExact:
		out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: value}}
		out.pathKind, out.pathLen = 0, len(value)
	case gwv1.PathMatchRegularExpression:
		out.checkRegex("path", value)
		out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: value}}}
		out.pathKind, out.pathLen = 1, len(value)
	case gwv1.PathMatchPathPrefix:
		// Element-wise: /api matches /api and /api/v1, not /apis; a
		// trailing slash is the same prefix.
		value = strings.TrimRight(value, "/")
		out.prefix, out.isPrefix = value, true
		if value == "" {
			out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		} else {
			out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: value}}
			out.extra = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: value + "/"}}
		}
		if strings.ContainsAny(value, "?#") {
			out.bad = fmt.Sprintf("path prefix %q holds a query or fragment", value)
		}
		out.pathKind, out.pathLen = 2, 2*len(value)
	default:
		out.bad = fmt.Sprintf("path match type %q", typ)
	}
	for _, h := range m.Headers {
		out.addHeader(string(h.Name), h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression, h.Value)
	}
	for _, q := range m.QueryParams {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value}}
		if q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression {
			out.checkRegex("query parameter "+string(q.Name), q.Value)
			sm = regexMatcher(q.Value)
		}
		out.queries = append(out.queries, &routev3.QueryParameterMatcher{Name: string(q.Name),
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}})
	}
	if m.Method != nil {
		out.method = string(*m.Method)
	}
	return out
}

// grpcMatch maps a GRPCRoute match onto the request path,
// /SERVICE/METHOD: both exact is an exact path, a service alone a
// prefix, anything else a regular expression. They rank as GRPCRoute
// says, by the length of the service matched, then of the method: an
// exact method first, then services by length, a method without a
// service after them but before no match at all.
func grpcMatch(m gwv1.GRPCRouteMatch) match {
	var out match
	out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	out.pathKind, out.pathLen = 2, 0
	if mm := m.Method; mm != nil {
		svc, method := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		regex := mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression
		switch {
		case svc == "" && method == "":
			out.bad = "a method match names neither service nor method"
		case !regex && svc != "" && method != "":
			p := "/" + svc + "/" + method
			out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}}
			out.pathKind, out.pathLen = 0, len(p)
		case !regex && method == "":
			p := "/" + svc + "/"
			out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
			out.pathKind, out.pathLen = 2, 2*len(p)
		default:
			s, me := regexp.QuoteMeta(svc), regexp.QuoteMeta(method)
			if regex {
				s, me = svc, method
			}
			if s == "" {
				s = "[^/]+"
			}
			if me == "" {
				me = "[^/]+"
			}
			// Grouped: an alternation in the service must not reach
			// into the method.
			re := "/(?:" + s + ")/(?:" + me + ")"
			out.checkRegex("method", re)
			out.path = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
			out.pathKind, out.pathLen = 2, 2*len("/"+svc+"/")+1
		}
	}
	for _, h := range m.Headers {
		out.addHeader(string(h.Name), h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression, h.Value)
	}
	return out
}

// addHeader adds a header match (HTTPRoute's and GRPCRoute's alike): the
// name in lower case, the value exact or a regular expression. A name
// matched already is skipped: the Gateway API says later matches of the
// same name are ignored.
func (m *match) addHeader(name string, regex bool, value string) {
	name = strings.ToLower(name)
	if slices.ContainsFunc(m.headers, func(o *routev3.HeaderMatcher) bool { return o.GetName() == name }) {
		return
	}
	if regex {
		m.checkRegex("header "+name, value)
		m.headers = append(m.headers, &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regexMatcher(value)}})
		return
	}
	m.headers = append(m.headers, exactHeader(name, value))
}

// invalidCluster names no cluster: the share of requests a rule sends to
// a backend that does not resolve gets 500 (RouteAction's
// cluster_not_found_response_code), as the Gateway API asks.
func invalidCluster(rt *discovery.Route, rule, idx int) string {
	return fmt.Sprintf("invalid|%s|%d|%d", rt.Key(), rule, idx)
}

// action builds the route every match of a rule shares (its Match is set
// per match).
func (b *routeBuilder) action(rt *discovery.Route, ruleIdx int, r *rule, svc *discovery.Service, port discovery.Port) *routev3.Route {
	route := &routev3.Route{}
	ra := &routev3.RouteAction{ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR}
	route.Action = &routev3.Route_Route{Route: ra}
	// The service's own resilience is the default of every rule.
	if err := setRouteResilience(route, &svc.Policy.Resilience); err != nil {
		b.fail(false, ReasonUnsupportedValue, "rule %d: %v", ruleIdx, err)
	}
	if h := svc.Policy.HashHeader; h != "" {
		ra.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h}}}}
	}
	var redirect *gwv1.HTTPRequestRedirectFilter
	broken := false // a filter the rule needs cannot be programmed: 500
	for _, f := range r.filters {
		switch {
		case f.kind == string(gwv1.HTTPRouteFilterRequestHeaderModifier) && f.reqHdr != nil:
			add, remove, host, err := headerEdits(f.reqHdr, true)
			if err != nil {
				b.fail(false, ReasonUnsupportedValue, "rule %d: RequestHeaderModifier: %v", ruleIdx, err)
				broken = true
				continue
			}
			if host != "" { // the authority is rewritten, as Envoy does it
				ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: host}
			}
			route.RequestHeadersToAdd = append(route.RequestHeadersToAdd, add...)
			route.RequestHeadersToRemove = append(route.RequestHeadersToRemove, remove...)
		case f.kind == string(gwv1.HTTPRouteFilterResponseHeaderModifier) && f.respHdr != nil:
			add, remove, _, err := headerEdits(f.respHdr, false)
			if err != nil {
				b.fail(false, ReasonUnsupportedValue, "rule %d: ResponseHeaderModifier: %v", ruleIdx, err)
				broken = true
				continue
			}
			route.ResponseHeadersToAdd = append(route.ResponseHeadersToAdd, add...)
			route.ResponseHeadersToRemove = append(route.ResponseHeadersToRemove, remove...)
		case f.kind == string(gwv1.HTTPRouteFilterRequestRedirect) && f.redirect != nil:
			if err := checkRedirect(f.redirect); err != nil {
				b.fail(false, ReasonUnsupportedValue, "rule %d: RequestRedirect: %v", ruleIdx, err)
				broken = true
				continue
			}
			if f.redirect.Path != nil && f.redirect.Path.Type == gwv1.PrefixMatchHTTPPathModifier {
				if _, ok := prefixOf(r.matches); !ok {
					b.fail(false, ReasonUnsupportedValue, "rule %d: RequestRedirect: ReplacePrefixMatch needs every match of the rule to be the same PathPrefix", ruleIdx)
					broken = true
					continue
				}
			}
			redirect = f.redirect
		case f.kind == string(gwv1.HTTPRouteFilterURLRewrite) && f.rewrite != nil:
			if msg := setRewrite(ra, f.rewrite, r.matches); msg != "" {
				b.fail(false, ReasonUnsupportedValue, "rule %d: URLRewrite: %s", ruleIdx, msg)
				broken = true
			}
		case f.kind == string(gwv1.HTTPRouteFilterRequestMirror) && f.mirror != nil:
			cluster, reason, msg := b.backendCluster(rt, f.mirror.BackendRef)
			if reason != "" {
				b.fail(true, reason, "rule %d: mirror: %s", ruleIdx, msg)
				continue // a mirror that does not resolve mirrors nothing
			}
			mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: cluster}
			if fr := mirrorFraction(f.mirror); fr != nil {
				mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fr}
			}
			ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, mp)
		default:
			b.fail(false, ReasonUnsupportedValue, "rule %d: filter %s is not supported", ruleIdx, f.kind)
			broken = true
		}
	}
	setRuleResilience(ra, r, func(msg string) {
		b.fail(false, ReasonUnsupportedValue, "rule %d: %s", ruleIdx, msg)
	})
	if broken {
		return directResponse(route, 500)
	}
	if redirect != nil {
		route.Action = &routev3.Route_Redirect{Redirect: redirectAction(redirect, r.matches)}
		return route
	}
	var weighted []*routev3.WeightedCluster_ClusterWeight
	var total uint32
	for k, be := range r.backends {
		if be.weight <= 0 {
			continue // a weight of 0 takes no traffic
		}
		cluster, reason, msg := b.backendCluster(rt, be.ref)
		if reason == "" && be.filters > 0 {
			reason, msg = ReasonUnsupportedValue, "filters on a backendRef are not supported"
		}
		if reason != "" {
			b.fail(true, reason, "rule %d backendRef %d: %s", ruleIdx, k, msg)
			cluster = invalidCluster(rt, ruleIdx, k)
		}
		weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: cluster, Weight: wrapperspb.UInt32(uint32(be.weight))})
		total += uint32(be.weight)
	}
	switch {
	case total == 0:
		// No backend, or every weight 0: the Gateway API answers 500.
		return directResponse(route, 500)
	case len(weighted) == 1:
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: weighted[0].Name}
	default:
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	return route
}

// foreignService says why a route may not name svc ("" when it may): a
// route from a source other than mesh.yaml (the operator's file) names
// only services of its own source, so that whoever may write routes in a
// Kubernetes namespace cannot take over the Consul or Eureka services
// registered under the same name.
func foreignService(rt *discovery.Route, svc *discovery.Service) string {
	if rt.Source == "" || rt.Source == "file" || svc.Source == rt.Source {
		return ""
	}
	return fmt.Sprintf("Service %s comes from %s; a route from %s names only services of its own source", svc.Key(), svc.Source, rt.Source)
}

// backendCluster resolves a backend reference to its cluster name, or
// says why it does not resolve (a reason and a message).
func (b *routeBuilder) backendCluster(rt *discovery.Route, ref gwv1.BackendObjectReference) (cluster, reason, msg string) {
	routeNS := rt.Meta().Namespace
	if !isServiceRef(ref.Group, ref.Kind) {
		return "", ReasonInvalidKind, "only Services are supported as backends"
	}
	ns := routeNS
	if ref.Namespace != nil && string(*ref.Namespace) != "" {
		ns = string(*ref.Namespace)
	}
	if ns != routeNS {
		return "", ReasonRefNotPermitted, fmt.Sprintf("Service %s/%s is in another namespace (ReferenceGrant is not supported yet)", ns, ref.Name)
	}
	svc := b.services[ns+"/"+string(ref.Name)]
	if svc == nil {
		return "", ReasonBackendNotFound, fmt.Sprintf("Service %s/%s not found", ns, ref.Name)
	}
	if msg := foreignService(rt, svc); msg != "" {
		return "", ReasonBackendNotFound, msg
	}
	if ref.Port == nil {
		return "", ReasonUnsupportedValue, fmt.Sprintf("Service %s/%s: a backendRef needs a port", ns, ref.Name)
	}
	for _, p := range svc.Ports {
		if p.Number == uint32(*ref.Port) {
			return ClusterName(svc, p), "", ""
		}
	}
	return "", ReasonBackendNotFound, fmt.Sprintf("Service %s/%s has no port %d", ns, ref.Name, *ref.Port)
}

// headerEdits turns a header modifier into Envoy's headers to add and to
// remove, each checked as the sidecar checks them (xdsclient). On the
// request side a Host set is the authority's rewrite (host); Host may not
// be added or removed, nor may framing fields or tender's own.
func headerEdits(f *gwv1.HTTPHeaderFilter, request bool) (add []*corev3.HeaderValueOption, remove []string, host string, err error) {
	for _, h := range f.Set {
		name := strings.ToLower(string(h.Name))
		if request && name == "host" {
			if err := xdsclient.CheckHost(h.Value); err != nil {
				return nil, nil, "", err
			}
			host = h.Value
			continue
		}
		if err := errors.Join(xdsclient.CheckHeaderName(name), xdsclient.CheckHeaderValue(h.Value)); err != nil {
			return nil, nil, "", err
		}
		add = append(add, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range f.Add {
		name := strings.ToLower(string(h.Name))
		if err := errors.Join(xdsclient.CheckHeaderName(name), xdsclient.CheckHeaderValue(h.Value)); err != nil {
			return nil, nil, "", err
		}
		add = append(add, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	for _, n := range f.Remove {
		name := strings.ToLower(n)
		if err := xdsclient.CheckHeaderName(name); err != nil {
			return nil, nil, "", err
		}
		remove = append(remove, name)
	}
	return add, remove, host, nil
}

// checkRedirect checks a redirect's scheme, host and path as the sidecar
// does.
func checkRedirect(f *gwv1.HTTPRequestRedirectFilter) error {
	var errs []error
	if f.Scheme != nil {
		errs = append(errs, xdsclient.CheckScheme(*f.Scheme))
	}
	if f.Hostname != nil {
		errs = append(errs, xdsclient.CheckHost(string(*f.Hostname)))
	}
	if p := f.Path; p != nil {
		switch {
		case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
			errs = append(errs, xdsclient.CheckPath(*p.ReplaceFullPath))
		case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
			errs = append(errs, xdsclient.CheckPath(*p.ReplacePrefixMatch))
		default:
			errs = append(errs, fmt.Errorf("path modifier %q without its path", p.Type))
		}
	}
	return errors.Join(errs...)
}

// prefixOf is the PathPrefix the rule's matches share, for
// ReplacePrefixMatch; ok is false when they do not all match one prefix.
func prefixOf(matches []match) (string, bool) {
	prefix, ok := "", false
	for _, m := range matches {
		if !m.isPrefix || ok && m.prefix != prefix {
			return "", false
		}
		prefix, ok = m.prefix, true
	}
	return prefix, ok
}

// setRewrite programs a URLRewrite; it returns why it cannot, "" when it
// can.
func setRewrite(ra *routev3.RouteAction, f *gwv1.HTTPURLRewriteFilter, matches []match) string {
	if f.Hostname != nil {
		if err := xdsclient.CheckHost(string(*f.Hostname)); err != nil {
			return err.Error()
		}
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: string(*f.Hostname)}
	}
	if f.Path == nil {
		return ""
	}
	switch f.Path.Type {
	case gwv1.FullPathHTTPPathModifier:
		if f.Path.ReplaceFullPath == nil {
			return "ReplaceFullPath without a path"
		}
		if err := xdsclient.CheckPath(*f.Path.ReplaceFullPath); err != nil {
			return err.Error()
		}
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^/.*$"},
			Substitution: *f.Path.ReplaceFullPath,
		}
	case gwv1.PrefixMatchHTTPPathModifier:
		if f.Path.ReplacePrefixMatch == nil {
			return "ReplacePrefixMatch without a prefix"
		}
		if err := xdsclient.CheckPath(*f.Path.ReplacePrefixMatch); err != nil {
			return err.Error()
		}
		prefix, ok := prefixOf(matches)
		if !ok {
			return "ReplacePrefixMatch needs every match of the rule to be the same PathPrefix"
		}
		repl := *f.Path.ReplacePrefixMatch
		ra.RegexRewrite = prefixRewrite(prefix, repl)
	default:
		return fmt.Sprintf("path modifier %q", f.Path.Type)
	}
	return ""
}

// prefixRewrite replaces a matched path prefix element-wise, as the
// Gateway API says: /foo → /bar takes /foo/x to /bar/x; /foo → / takes
// it to /x.
func prefixRewrite(prefix, repl string) *matcherv3.RegexMatchAndSubstitute {
	pattern := "^" + regexp.QuoteMeta(prefix)
	if strings.HasSuffix(repl, "/") {
		pattern += "/?"
	}
	return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: repl}
}

func redirectAction(f *gwv1.HTTPRequestRedirectFilter, matches []match) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}
	if f.Scheme != nil {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Hostname != nil {
		ra.HostRedirect = string(*f.Hostname)
	}
	if f.Port != nil {
		ra.PortRedirect = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		switch *f.StatusCode {
		case 301:
			ra.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
		case 303:
			ra.ResponseCode = routev3.RedirectAction_SEE_OTHER
		case 307:
			ra.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
		case 308:
			ra.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
		}
	}
	if p := f.Path; p != nil {
		switch {
		case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: *p.ReplaceFullPath}
		case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
			if prefix, ok := prefixOf(matches); ok {
				ra.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: prefixRewrite(prefix, *p.ReplacePrefixMatch)}
			}
		}
	}
	return ra
}

func mirrorFraction(f *gwv1.HTTPRequestMirrorFilter) *typev3.FractionalPercent {
	switch {
	case f.Percent != nil:
		return &typev3.FractionalPercent{Numerator: uint32(max(0, min(100, *f.Percent))) * 10_000, Denominator: typev3.FractionalPercent_MILLION}
	case f.Fraction != nil:
		den := int32(100)
		if f.Fraction.Denominator != nil && *f.Fraction.Denominator > 0 {
			den = *f.Fraction.Denominator
		}
		num := max(0, min(f.Fraction.Numerator, den))
		return &typev3.FractionalPercent{Numerator: uint32(int64(num) * 1_000_000 / int64(den)), Denominator: typev3.FractionalPercent_MILLION}
	}
	return nil
}

// setRuleResilience applies a rule's timeouts and retry (GEP-1294,
// GEP-1731) over the service's own: request is the whole request's
// timeout, backendRequest each try's.
func setRuleResilience(ra *routev3.RouteAction, r *rule, fail func(string)) {
	if t := r.timeouts; t != nil {
		if t.Request != nil {
			d, err := time.ParseDuration(string(*t.Request))
			if err != nil {
				fail("timeouts.request: " + err.Error())
			} else {
				ra.Timeout = durationpb.New(d)
				ra.MaxStreamDuration = nil
				if d > 0 {
					ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(d)}
				}
			}
		}
		if t.BackendRequest != nil {
			d, err := time.ParseDuration(string(*t.BackendRequest))
			if err != nil {
				fail("timeouts.backendRequest: " + err.Error())
			} else {
				if ra.RetryPolicy == nil {
					// A per-try timeout with no retries: no condition to
					// retry on (grpc-go refuses num_retries 0).
					ra.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(1)}
				}
				ra.RetryPolicy.PerTryTimeout = durationpb.New(d)
			}
		}
	}
	if rt := r.retry; rt != nil {
		p := ra.RetryPolicy
		if p == nil {
			p = &routev3.RetryPolicy{}
			ra.RetryPolicy = p
		}
		on := []string{"connect-failure", "refused-stream", "reset"}
		p.RetriableStatusCodes = nil
		for _, c := range rt.Codes {
			p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(c))
		}
		if len(p.RetriableStatusCodes) > 0 {
			on = append(on, "retriable-status-codes")
		}
		p.RetryOn = strings.Join(on, ",")
		if rt.Attempts != nil {
			p.NumRetries = wrapperspb.UInt32(uint32(max(0, *rt.Attempts)))
		}
		if rt.Backoff != nil {
			d, err := time.ParseDuration(string(*rt.Backoff))
			switch {
			case err != nil:
				fail("retry.backoff: " + err.Error())
			case d > 0: // grpc-go refuses a zero base interval
				p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(d)}
			default:
				p.RetryBackOff = nil
			}
		}
		if p.GetNumRetries().GetValue() == 0 && p.NumRetries != nil {
			// attempts: 0 turns retries off; grpc-go refuses num_retries 0,
			// so no condition to retry on says it.
			p.NumRetries, p.RetryOn, p.RetriableStatusCodes = wrapperspb.UInt32(1), "", nil
			if p.PerTryTimeout == nil {
				ra.RetryPolicy = nil
			}
		}
	}
}

func directResponse(route *routev3.Route, status uint32) *routev3.Route {
	route.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status}}
	return route
}

// cloneRoute copies the shared parts of a rule's route for one match.
func cloneRoute(r *routev3.Route) *routev3.Route {
	c := &routev3.Route{
		Action:                  r.Action,
		RequestHeadersToAdd:     r.RequestHeadersToAdd,
		RequestHeadersToRemove:  r.RequestHeadersToRemove,
		ResponseHeadersToAdd:    r.ResponseHeadersToAdd,
		ResponseHeadersToRemove: r.ResponseHeadersToRemove,
		TypedPerFilterConfig:    r.TypedPerFilterConfig,
	}
	return c
}

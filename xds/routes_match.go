package xds

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// What a route rule matches, for either kind of route, as Envoy matchers.

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

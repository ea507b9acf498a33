package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// A service port's routes, from its RouteConfiguration (RDS): the
// Gateway API rules the control plane translated, matched per request in
// order, first match wins, as Envoy does. Compiled once per push into
// immutable values: matching allocates nothing and compiles no regular
// expression.

// routeTable is the compiled routes of one service port.
type routeTable struct {
	routes []*routeEntry
	// simple is set when the table is one catch-all route to the port's
	// own cluster with nothing to do per request (a service no route
	// attaches to): requests skip matching.
	simple bool
}

// routeEntry is one route: what it matches and what it does.
type routeEntry struct {
	name string
	path pathMatcher
	hdrs []headerMatcher
	qs   []queryMatcher

	// One of: reply (a direct response), redirect, or targets.
	reply    *interceptor.LocalReply
	redirect *redirect
	targets  []routeTarget
	total    uint32
	// notFound answers the share of a target whose cluster is missing.
	notFound *interceptor.LocalReply
	// seq counts the picks among targets.
	seq atomic.Uint64

	reqSet, reqAdd   []field
	reqDel           []string
	respSet, respAdd []field
	respDel          []string
	host             string // authority rewrite
	rewrite          *regexRewrite
	prefixRewrite    string
	mirrors          []mirror
}

type routeTarget struct {
	name   string
	cl     *Cluster // nil: not in the table (500, or the route's code)
	upTo   uint32   // cumulative weight
	policy *interceptor.Policy
}

type field struct{ name, value string }

type mirror struct {
	cl         *Cluster
	perMillion uint32
}

type redirect struct {
	scheme, host string
	port         uint32
	path         string
	rewrite      *regexRewrite
	code         int
}

type regexRewrite struct {
	re    *regexp.Regexp
	subst string // in Go's expansion syntax
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathSeparated
	pathRegex
)

type pathMatcher struct {
	kind  pathKind
	value string // for a regular expression, the literal prefix every match has
	re    *regexp.Regexp
}

type strMatcher struct {
	exact, prefix, suffix, contains string
	kind                            uint8 // 0 exact, 1 prefix, 2 suffix, 3 contains, 4 regex, 5 present
	re                              *regexp.Regexp
	ignoreCase                      bool
}

type headerMatcher struct {
	name   string
	m      strMatcher
	invert bool
}

type queryMatcher struct {
	name string
	m    strMatcher
}

// regexCompiler compiles a table's regular expressions: each checked and
// sized (xdsclient.RegexInsts) against the budget of its route
// configuration, and compiled once across pushes (prev holds the previous
// table's).
type regexCompiler struct {
	prev, next map[string]*regexp.Regexp
	insts      int // of the route configuration being compiled
}

func newRegexCompiler(prev *Table) *regexCompiler {
	rx := &regexCompiler{next: map[string]*regexp.Regexp{}}
	if prev != nil {
		rx.prev = prev.regexes
	}
	return rx
}

// compile compiles a pattern; whole anchors it, as Envoy's safe_regex
// matches the whole value.
func (rx *regexCompiler) compile(pattern string, whole bool) (*regexp.Regexp, error) {
	n, err := xdsclient.RegexInsts(pattern)
	if err != nil {
		return nil, err
	}
	if rx.insts += n; rx.insts > xdsclient.MaxRouteConfigInsts {
		return nil, fmt.Errorf("%w: the route configuration's regular expressions are over %d instructions together", xdsclient.ErrRouteValue, xdsclient.MaxRouteConfigInsts)
	}
	key := pattern
	if whole {
		key = "^(?:" + pattern + ")$"
	}
	re := rx.next[key]
	if re == nil {
		re = rx.prev[key]
	}
	if re == nil {
		if re, err = regexp.Compile(key); err != nil {
			return nil, err
		}
	}
	rx.next[key] = re
	return re, nil
}

// compileRoutes compiles a service port's route configuration. own is
// the port's cluster; clusters are the table's, for the targets. A route
// it cannot follow does not take the others with it: one whose match does
// not compile matches nothing, one whose action or edits do not answers
// 500; refused says which and why.
func compileRoutes(rc *routev3.RouteConfiguration, own *Cluster, clusters map[string]*Cluster, rx *regexCompiler) (_ *routeTable, refused []string) {
	vhs := rc.GetVirtualHosts()
	if len(vhs) == 0 {
		return &routeTable{simple: true}, nil
	}
	t := &routeTable{}
	rx.insts = 0
	for i, r := range vhs[0].GetRoutes() {
		e, err := compileRoute(r, clusters, rx)
		if err != nil {
			name := r.GetName()
			if name == "" {
				name = strconv.Itoa(i)
			}
			refused = append(refused, fmt.Sprintf("route configuration %s route %s: %v", rc.GetName(), name, err))
			if e == nil {
				continue
			}
		}
		t.routes = append(t.routes, e)
	}
	if len(t.routes) == 1 {
		e := t.routes[0]
		t.simple = e.path.kind == pathPrefix && e.path.value == "/" && len(e.hdrs) == 0 && len(e.qs) == 0 &&
			len(e.targets) == 1 && e.targets[0].cl == own && own != nil &&
			e.reqSet == nil && e.reqAdd == nil && e.reqDel == nil && e.respSet == nil && e.respAdd == nil && e.respDel == nil &&
			e.host == "" && e.rewrite == nil && e.prefixRewrite == "" && e.mirrors == nil
	}
	return t, refused
}

// compileRoute compiles one route. On an error it returns nil when the
// match itself cannot be followed, or the route answering 500 when only
// what it does cannot.
func compileRoute(r *routev3.Route, clusters map[string]*Cluster, rx *regexCompiler) (*routeEntry, error) {
	e, err := compileMatch(r, rx)
	if err != nil {
		return nil, err
	}
	if err := e.compileEdits(r, clusters, rx); err != nil {
		broken := &routeEntry{name: e.name, path: e.path, hdrs: e.hdrs, qs: e.qs,
			reply: interceptor.Reply(http.StatusInternalServerError, "route "+e.name+" refused by the sidecar")}
		return broken, err
	}
	return e, nil
}

// compileMatch compiles what a route matches.
func compileMatch(r *routev3.Route, rx *regexCompiler) (*routeEntry, error) {
	e := &routeEntry{name: r.GetName()}
	m := r.GetMatch()
	if m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue() {
		return nil, fmt.Errorf("case-insensitive path matching is not supported")
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		e.path = pathMatcher{kind: pathPrefix, value: ps.Prefix}
	case *routev3.RouteMatch_Path:
		e.path = pathMatcher{kind: pathExact, value: ps.Path}
	case *routev3.RouteMatch_PathSeparatedPrefix:
		e.path = pathMatcher{kind: pathSeparated, value: ps.PathSeparatedPrefix}
	case *routev3.RouteMatch_SafeRegex:
		re, err := rx.compile(ps.SafeRegex.GetRegex(), true)
		if err != nil {
			return nil, fmt.Errorf("path: %w", err)
		}
		lit, _ := re.LiteralPrefix()
		e.path = pathMatcher{kind: pathRegex, re: re, value: lit}
	default:
		return nil, fmt.Errorf("path specifier %T is not supported", ps)
	}
	if m.GetRuntimeFraction() != nil || m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 || m.GetFilterState() != nil {
		return nil, fmt.Errorf("match conditions beyond path, headers and query parameters are not supported")
	}
	for _, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h, rx)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", h.GetName(), err)
		}
		e.hdrs = append(e.hdrs, hm)
	}
	for _, q := range m.GetQueryParameters() {
		qm := queryMatcher{name: q.GetName()}
		switch spec := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_StringMatch:
			sm, err := compileStringMatcher(spec.StringMatch, rx)
			if err != nil {
				return nil, fmt.Errorf("query parameter %s: %w", q.GetName(), err)
			}
			qm.m = sm
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.m = strMatcher{kind: 5}
		default:
			return nil, fmt.Errorf("query parameter %s: matcher %T is not supported", q.GetName(), spec)
		}
		e.qs = append(e.qs, qm)
	}
	return e, nil
}

// compileEdits compiles what a route does: its header edits and its
// action.
func (e *routeEntry) compileEdits(r *routev3.Route, clusters map[string]*Cluster, rx *regexCompiler) error {
	var err error
	if e.reqSet, e.reqAdd, err = headerOps(r.GetRequestHeadersToAdd()); err != nil {
		return fmt.Errorf("request headers: %w", err)
	}
	if e.reqDel, err = headerNames(r.GetRequestHeadersToRemove()); err != nil {
		return fmt.Errorf("request headers: %w", err)
	}
	if e.respSet, e.respAdd, err = headerOps(r.GetResponseHeadersToAdd()); err != nil {
		return fmt.Errorf("response headers: %w", err)
	}
	if e.respDel, err = headerNames(r.GetResponseHeadersToRemove()); err != nil {
		return fmt.Errorf("response headers: %w", err)
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		return e.compileAction(a.Route, r, clusters, rx)
	case *routev3.Route_Redirect:
		return e.compileRedirect(a.Redirect, rx)
	case *routev3.Route_DirectResponse:
		status := int(a.DirectResponse.GetStatus())
		if status < 200 || status > 599 {
			return fmt.Errorf("direct response status %d", status)
		}
		e.reply = interceptor.Reply(status, "direct response from route "+r.GetName())
		return nil
	}
	return fmt.Errorf("action %T is not supported", r.GetAction())
}

// headerNames checks the names of the headers a route removes.
func headerNames(names []string) ([]string, error) {
	for _, n := range names {
		if err := xdsclient.CheckHeaderName(n); err != nil {
			return nil, err
		}
	}
	return names, nil
}

func compileHeaderMatcher(h *routev3.HeaderMatcher, rx *regexCompiler) (headerMatcher, error) {
	hm := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch()}
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := compileStringMatcher(spec.StringMatch, rx)
		if err != nil {
			return hm, err
		}
		hm.m = sm
	case *routev3.HeaderMatcher_PresentMatch:
		hm.m = strMatcher{kind: 5}
		if !spec.PresentMatch {
			hm.invert = !hm.invert
		}
	case nil:
		hm.m = strMatcher{kind: 5} // no specifier: the header is present
	default: // the deprecated matchers among them
		return hm, fmt.Errorf("matcher %T is not supported", spec)
	}
	return hm, nil
}

func compileStringMatcher(sm *matcherv3.StringMatcher, rx *regexCompiler) (strMatcher, error) {
	out := strMatcher{ignoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.kind, out.exact = 0, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.kind, out.prefix = 1, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.kind, out.suffix = 2, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.kind, out.contains = 3, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := rx.compile(p.SafeRegex.GetRegex(), true)
		if err != nil {
			return out, err
		}
		out.kind, out.re = 4, re
	default:
		return out, fmt.Errorf("string matcher %T is not supported", p)
	}
	if out.ignoreCase {
		out.exact, out.prefix, out.suffix, out.contains = strings.ToLower(out.exact), strings.ToLower(out.prefix), strings.ToLower(out.suffix), strings.ToLower(out.contains)
	}
	return out, nil
}

// headerOps splits Envoy's headers to add into those that replace and
// those that append.
func headerOps(opts []*corev3.HeaderValueOption) (set, add []field, err error) {
	for _, o := range opts {
		f := field{o.GetHeader().GetKey(), o.GetHeader().GetValue()}
		if err := errors.Join(xdsclient.CheckHeaderName(f.name), xdsclient.CheckHeaderValue(f.value)); err != nil {
			return nil, nil, err
		}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			set = append(set, f)
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			add = append(add, f)
		default:
			return nil, nil, fmt.Errorf("header %q: append action %s is not supported", f.name, o.GetAppendAction())
		}
	}
	return set, add, nil
}

func (e *routeEntry) compileAction(a *routev3.RouteAction, r *routev3.Route, clusters map[string]*Cluster, rx *regexCompiler) error {
	code := http.StatusServiceUnavailable // Envoy's default, NC
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		code = http.StatusNotFound
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		code = http.StatusInternalServerError
	}
	e.notFound = interceptor.Reply(code, "no cluster for route "+r.GetName())
	add := func(name string, weight uint32) error {
		if weight == 0 {
			return nil
		}
		e.total += weight
		if e.total < weight {
			return fmt.Errorf("weights overflow")
		}
		t := routeTarget{name: name, cl: clusters[name], upTo: e.total}
		if t.cl != nil {
			p, err := routePolicy(t.cl.base, r)
			if err != nil {
				return err
			}
			t.policy = p
		}
		e.targets = append(e.targets, t)
		return nil
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if err := add(cs.Cluster, 1); err != nil {
			return err
		}
	case *routev3.RouteAction_WeightedClusters:
		for _, w := range cs.WeightedClusters.GetClusters() {
			if err := add(w.GetName(), w.GetWeight().GetValue()); err != nil {
				return err
			}
		}
		if e.total == 0 {
			return fmt.Errorf("weighted clusters with no weight")
		}
	default:
		return fmt.Errorf("cluster specifier %T is not supported", cs)
	}
	e.host = a.GetHostRewriteLiteral()
	if a.GetHostRewriteSpecifier() != nil {
		if _, ok := a.GetHostRewriteSpecifier().(*routev3.RouteAction_HostRewriteLiteral); !ok {
			return fmt.Errorf("host rewrite %T is not supported", a.GetHostRewriteSpecifier())
		}
		if err := xdsclient.CheckHost(e.host); err != nil {
			return err
		}
	}
	if e.prefixRewrite = a.GetPrefixRewrite(); e.prefixRewrite != "" {
		if err := xdsclient.CheckPath(e.prefixRewrite); err != nil {
			return fmt.Errorf("prefix rewrite: %w", err)
		}
	}
	if rw := a.GetRegexRewrite(); rw != nil {
		rr, err := compileRewrite(rw, rx)
		if err != nil {
			return fmt.Errorf("regex rewrite: %w", err)
		}
		e.rewrite = rr
	}
	for _, mp := range a.GetRequestMirrorPolicies() {
		m := mirror{cl: clusters[mp.GetCluster()], perMillion: 1_000_000}
		if f := mp.GetRuntimeFraction(); f != nil {
			m.perMillion = perMillion(f.GetDefaultValue())
		}
		if m.cl != nil && m.perMillion > 0 {
			e.mirrors = append(e.mirrors, m)
		}
	}
	return nil
}

// compileRewrite takes Envoy's regex rewrite; its substitution's \1 is
// Go's ${1}.
func compileRewrite(rw *matcherv3.RegexMatchAndSubstitute, rx *regexCompiler) (*regexRewrite, error) {
	re, err := rx.compile(rw.GetPattern().GetRegex(), false)
	if err != nil {
		return nil, err
	}
	s := rw.GetSubstitution()
	if err := xdsclient.CheckSubstitution(s); err != nil {
		return nil, err
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			b.WriteString("${")
			b.WriteByte(s[i+1])
			b.WriteByte('}')
			i++
		case c == '$':
			b.WriteString("$$")
		default:
			b.WriteByte(c)
		}
	}
	return &regexRewrite{re: re, subst: b.String()}, nil
}

func (rw *regexRewrite) apply(path string) string { return rw.re.ReplaceAllString(path, rw.subst) }

func (e *routeEntry) compileRedirect(r *routev3.RedirectAction, rx *regexCompiler) error {
	rd := &redirect{host: r.GetHostRedirect(), port: r.GetPortRedirect(), code: http.StatusMovedPermanently}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_FOUND:
		rd.code = http.StatusFound
	case routev3.RedirectAction_SEE_OTHER:
		rd.code = http.StatusSeeOther
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		rd.code = http.StatusTemporaryRedirect
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		rd.code = http.StatusPermanentRedirect
	}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_SchemeRedirect:
		rd.scheme = s.SchemeRedirect
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rd.scheme = "https"
		}
	}
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		rd.path = p.PathRedirect
	case *routev3.RedirectAction_RegexRewrite:
		rr, err := compileRewrite(p.RegexRewrite, rx)
		if err != nil {
			return fmt.Errorf("redirect rewrite: %w", err)
		}
		rd.rewrite = rr
	case nil:
	default:
		return fmt.Errorf("redirect path %T is not supported", p)
	}
	var errs []error
	if rd.scheme != "" {
		errs = append(errs, xdsclient.CheckScheme(rd.scheme))
	}
	if rd.host != "" {
		errs = append(errs, xdsclient.CheckHost(rd.host))
	}
	if rd.path != "" {
		errs = append(errs, xdsclient.CheckPath(rd.path))
	}
	if rd.port > 65535 {
		errs = append(errs, fmt.Errorf("redirect port %d", rd.port))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	e.redirect = rd
	return nil
}

func perMillion(f *typev3.FractionalPercent) uint32 {
	n := uint64(f.GetNumerator())
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	return uint32(min(n, 1_000_000))
}

// match returns the first route the request matches, nil for none.
func (t *routeTable) match(q routable, path, query string) *routeEntry {
	for _, e := range t.routes {
		if e.matches(q, path, query) {
			return e
		}
	}
	return nil
}

func (e *routeEntry) matches(q routable, path, query string) bool {
	switch e.path.kind {
	case pathPrefix:
		if !strings.HasPrefix(path, e.path.value) {
			return false
		}
	case pathExact:
		if path != e.path.value {
			return false
		}
	case pathSeparated:
		if !strings.HasPrefix(path, e.path.value) || len(path) > len(e.path.value) && path[len(e.path.value)] != '/' {
			return false
		}
	case pathRegex:
		if !strings.HasPrefix(path, e.path.value) || !e.path.re.MatchString(path) {
			return false
		}
	}
	for i := range e.hdrs {
		h := &e.hdrs[i]
		v, ok := headerOf(q, h.name, path)
		if h.m.match(v, ok) == h.invert {
			return false
		}
	}
	for i := range e.qs {
		qm := &e.qs[i]
		v, ok := queryParam(query, qm.name)
		if !qm.m.match(v, ok) {
			return false
		}
	}
	return true
}

// headerOf reads a header or pseudo-header; ok is false when absent.
func headerOf(q routable, name, path string) (string, bool) {
	switch name {
	case ":method":
		return q.Method(), true
	case ":authority", "host":
		return q.Authority(), true
	case ":path":
		return path, true
	}
	v := q.Header(name)
	return v, v != "" || q.HasHeader(name)
}

func (m *strMatcher) match(v string, present bool) bool {
	if !present {
		return false
	}
	if m.ignoreCase && m.kind < 4 {
		return m.matchFold(v)
	}
	switch m.kind {
	case 0:
		return v == m.exact
	case 1:
		return strings.HasPrefix(v, m.prefix)
	case 2:
		return strings.HasSuffix(v, m.suffix)
	case 3:
		return strings.Contains(v, m.contains)
	case 4:
		return m.re.MatchString(v)
	}
	return true // present
}

func (m *strMatcher) matchFold(v string) bool {
	switch m.kind {
	case 0:
		return strings.EqualFold(v, m.exact)
	case 1:
		return len(v) >= len(m.prefix) && strings.EqualFold(v[:len(m.prefix)], m.prefix)
	case 2:
		return len(v) >= len(m.suffix) && strings.EqualFold(v[len(v)-len(m.suffix):], m.suffix)
	}
	return strings.Contains(strings.ToLower(v), m.contains)
}

// queryParam finds a query parameter's first value, decoded when it
// needs to be.
func queryParam(query, name string) (string, bool) {
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			if dk, err := url.QueryUnescape(k); err == nil {
				k = dk
			}
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
		}
		return v, true
	}
	return "", false
}

// routable is a request head as routing reads and edits it, beyond what
// the chain's interceptors need.
type routable interface {
	interceptor.Request
	// HasHeader reports whether the named field is present (perhaps
	// empty).
	HasHeader(name string) bool
	// AddHeader adds a field, keeping those of the same name.
	AddHeader(name, value string)
	// SetAuthority rewrites the Host field (HTTP/1.1) or :authority.
	SetAuthority(v string)
	// Query is the request's query, without the '?'.
	Query() string
}

// pick chooses a target by weight. The choices follow a Weyl sequence
// (multiples of the golden ratio) rather than a random number: over any
// run of requests each target's share is its weight's to within a few
// requests, where random picks stray by the square root of their count
// (a 10% canary over 2,000 requests: ±0.1%, not ±0.7%).
func (e *routeEntry) pick() *routeTarget {
	if len(e.targets) == 1 {
		return &e.targets[0]
	}
	u := (e.seq.Add(1) * 0x9E3779B97F4A7C15) >> 32
	n := uint32(u * uint64(e.total) >> 32)
	for i := range e.targets {
		if n < e.targets[i].upTo {
			return &e.targets[i]
		}
	}
	return &e.targets[len(e.targets)-1]
}

// applyRequest edits the request as the route says: headers, path and
// authority.
func (e *routeEntry) applyRequest(q routable, path string) {
	for _, n := range e.reqDel {
		q.DelHeader(n)
	}
	for _, f := range e.reqSet {
		q.SetHeader(f.name, f.value)
	}
	for _, f := range e.reqAdd {
		q.AddHeader(f.name, f.value)
	}
	switch {
	case e.rewrite != nil:
		if np := e.rewrite.apply(path); np != path {
			if np == "" {
				np = "/"
			}
			q.SetPath(np)
		}
	case e.prefixRewrite != "":
		q.SetPath(e.prefixRewrite + path[min(len(path), len(e.path.value)):])
	}
	if e.host != "" {
		q.SetAuthority(e.host)
	}
}

// redirectReply answers a redirect route: the request's URL with what
// the route replaces. The port follows the Gateway API: the route's, else
// the scheme's well-known one when the route changes the scheme, else the
// request's; it is left out where it is the scheme's default.
func (e *routeEntry) redirectReply(q routable, path, query string) *interceptor.LocalReply {
	rd := e.redirect
	host, port, hasPort := splitHostPort(q.Authority())
	if rd.host != "" {
		host = rd.host
	}
	scheme := rd.scheme
	switch {
	case rd.port != 0:
		port, hasPort = strconv.FormatUint(uint64(rd.port), 10), true
	case scheme != "":
		port, hasPort = defaultPort(scheme), true
	}
	if scheme == "" {
		scheme = "http"
	}
	switch {
	case rd.path != "":
		path = rd.path
	case rd.rewrite != nil:
		if path = rd.rewrite.apply(path); path == "" {
			path = "/"
		}
	}
	loc := scheme + "://" + host
	if hasPort && port != defaultPort(scheme) {
		loc += ":" + port
	}
	loc += path
	if query != "" {
		loc += "?" + query
	}
	r := interceptor.Reply(rd.code, "redirect")
	r.Location = loc
	return r
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// splitHostPort splits host:port (or [v6]:port); ok is false when there
// is no port.
func splitHostPort(hp string) (host, port string, ok bool) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 || strings.IndexByte(hp[i:], ']') >= 0 {
		return hp, "", false
	}
	return hp[:i], hp[i+1:], true
}

// editResponse applies the route's response header edits to fields
// that will be written: keep reports whether a field goes out.
func (e *routeEntry) dropsResponse(name string) bool {
	for _, n := range e.respDel {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	for _, f := range e.respSet {
		if strings.EqualFold(f.name, name) {
			return true
		}
	}
	return false
}

// editsResponse reports whether the route touches response headers.
func (e *routeEntry) editsResponse() bool {
	return e != nil && (e.respDel != nil || e.respSet != nil || e.respAdd != nil)
}

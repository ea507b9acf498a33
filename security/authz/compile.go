package authz

import (
	"fmt"
	"slices"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// maxDepth bounds the nesting of matchers FromRoute accepts; ForService
// nests four deep at most.
const maxDepth = 16

// FromRoute compiles the tender entries (FilterDeny, FilterAllow) of a
// virtual host's typed_per_filter_config; other entries are ignored. It
// returns nil, nil when there is none. Anything but the RBAC subset
// ForService writes gives an error wrapping ErrUnsupported.
func FromRoute(cfg map[string]*anypb.Any) (*Engine, error) {
	var e Engine
	found := false
	for _, f := range []struct {
		name   string
		action rbacv3.RBAC_Action
		dst    *[]policy
	}{{FilterDeny, rbacv3.RBAC_DENY, &e.deny}, {FilterAllow, rbacv3.RBAC_ALLOW, &e.allow}} {
		a, ok := cfg[f.name]
		if !ok {
			continue
		}
		found = true
		ps, err := compileEntry(a, f.action)
		if err != nil {
			return nil, fmt.Errorf("authz: %s: %w", f.name, err)
		}
		*f.dst = ps
		if f.action == rbacv3.RBAC_ALLOW {
			e.hasAllow = true
		}
	}
	if !found {
		return nil, nil
	}
	return &e, nil
}

// compileEntry unwraps a FilterConfig (or a bare RBACPerRoute) and
// compiles its rules, which must have action.
func compileEntry(a *anypb.Any, action rbacv3.RBAC_Action) ([]policy, error) {
	if a == nil {
		return nil, unsupported("empty entry")
	}
	if a.MessageIs(&routev3.FilterConfig{}) {
		var fc routev3.FilterConfig
		if err := a.UnmarshalTo(&fc); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		if err := noUnknown(&fc); err != nil {
			return nil, err
		}
		if fc.GetDisabled() {
			return nil, unsupported("disabled filter")
		}
		if fc.GetConfig() == nil {
			return nil, unsupported("filter config without config")
		}
		a = fc.GetConfig()
	}
	if !a.MessageIs(&rbachttpv3.RBACPerRoute{}) {
		return nil, unsupported("type %s, want RBACPerRoute", a.GetTypeUrl())
	}
	var pr rbachttpv3.RBACPerRoute
	if err := a.UnmarshalTo(&pr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	if err := noUnknown(&pr); err != nil {
		return nil, err
	}
	f := pr.GetRbac()
	if f == nil {
		return nil, unsupported("per-route config without rbac (disables the filter)")
	}
	if err := noUnknown(f); err != nil {
		return nil, err
	}
	// Stat prefixes and per-rule stats change no decision; shadow rules
	// and matchers would, or ForService never writes them.
	switch {
	case f.GetRules() == nil:
		return nil, unsupported("rbac without rules (enforces nothing)")
	case f.GetMatcher() != nil, f.GetShadowMatcher() != nil:
		return nil, unsupported("matcher")
	case f.GetShadowRules() != nil:
		return nil, unsupported("shadow_rules")
	}
	rules := f.GetRules()
	if err := noUnknown(rules); err != nil {
		return nil, err
	}
	if rules.GetAction() != action {
		return nil, unsupported("action %s in the %s filter", rules.GetAction(), action)
	}
	if rules.GetAuditLoggingOptions() != nil {
		return nil, unsupported("audit_logging_options")
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for name := range rules.GetPolicies() {
		names = append(names, name)
	}
	// By policy, then rule index: a decision names the first rule.
	slices.SortFunc(names, func(a, b string) int {
		ka, kb := policyKey(a), policyKey(b)
		if c := strings.Compare(ka, kb); c != 0 {
			return c
		}
		if c := len(a) - len(b); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	verb := "allowed by "
	if action == rbacv3.RBAC_DENY {
		verb = "denied by "
	}
	out := make([]policy, 0, len(names))
	for _, name := range names {
		p, err := compilePolicy(rules.GetPolicies()[name])
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", name, err)
		}
		p.key, p.reason = policyKey(name), verb+name
		out = append(out, p)
	}
	return out, nil
}

// policyKey returns the "namespace/name" of an Envoy policy's name.
func policyKey(name string) string {
	if i := strings.LastIndex(name, ruleSep); i > 0 && strings.HasSuffix(name, "]") {
		return name[:i]
	}
	return name
}

func compilePolicy(p *rbacv3.Policy) (policy, error) {
	var out policy
	if p == nil {
		return out, unsupported("empty policy")
	}
	if err := noUnknown(p); err != nil {
		return out, err
	}
	switch {
	case p.GetCondition() != nil, p.GetCheckedCondition() != nil, p.GetCelConfig() != nil:
		return out, unsupported("condition")
	case len(p.GetPermissions()) == 0:
		return out, unsupported("policy without permissions")
	case len(p.GetPrincipals()) == 0:
		return out, unsupported("policy without principals")
	}
	for i, pm := range p.GetPermissions() {
		c, err := compilePerm(pm, 0)
		if err != nil {
			return out, fmt.Errorf("permissions[%d]: %w", i, err)
		}
		out.perms = append(out.perms, c)
	}
	for i, pr := range p.GetPrincipals() {
		c, err := compilePrincipal(pr, 0)
		if err != nil {
			return out, fmt.Errorf("principals[%d]: %w", i, err)
		}
		out.sources = append(out.sources, c)
	}
	return out, nil
}

func compilePerm(p *rbacv3.Permission, depth int) (perm, error) {
	if depth > maxDepth {
		return perm{}, unsupported("nested deeper than %d", maxDepth)
	}
	if p == nil {
		return perm{}, unsupported("empty permission")
	}
	if err := noUnknown(p); err != nil {
		return perm{}, err
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return perm{}, unsupported("any: false")
		}
		return perm{op: permAny}, nil
	case *rbacv3.Permission_AndRules:
		return compilePermSet(permAnd, "and_rules", r.AndRules, depth)
	case *rbacv3.Permission_OrRules:
		return compilePermSet(permOr, "or_rules", r.OrRules, depth)
	case *rbacv3.Permission_NotRule:
		c, err := compilePerm(r.NotRule, depth+1)
		if err != nil {
			return perm{}, fmt.Errorf("not_rule: %w", err)
		}
		return perm{op: permNot, rules: []perm{c}, hasHTTP: c.hasHTTP, onlyHTTP: c.onlyHTTP}, nil
	case *rbacv3.Permission_Header:
		h := r.Header
		if err := noUnknown(h); err != nil {
			return perm{}, err
		}
		if h.GetName() != methodHeader {
			return perm{}, unsupported("header %q (only %s)", h.GetName(), methodHeader)
		}
		if h.GetInvertMatch() || h.GetTreatMissingHeaderAsEmpty() {
			return perm{}, unsupported("header %s: invert_match or treat_missing_header_as_empty", methodHeader)
		}
		sm, ok := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_StringMatch)
		if !ok {
			return perm{}, unsupported("header %s: matcher %T (only string_match)", methodHeader, h.GetHeaderMatchSpecifier())
		}
		m, err := compileString(sm.StringMatch)
		if err != nil {
			return perm{}, fmt.Errorf("header %s: %w", methodHeader, err)
		}
		if m.kind != matchExact {
			return perm{}, unsupported("header %s: only exact matches", methodHeader)
		}
		return perm{op: permMethod, match: m, hasHTTP: true, onlyHTTP: true}, nil
	case *rbacv3.Permission_UrlPath:
		if err := noUnknown(r.UrlPath); err != nil {
			return perm{}, err
		}
		path, ok := r.UrlPath.GetRule().(*matcherv3.PathMatcher_Path)
		if !ok {
			return perm{}, unsupported("url_path: rule %T (only path)", r.UrlPath.GetRule())
		}
		m, err := compileString(path.Path)
		if err != nil {
			return perm{}, fmt.Errorf("url_path: %w", err)
		}
		return perm{op: permPath, match: m, hasHTTP: true, onlyHTTP: true}, nil
	case nil:
		return perm{}, unsupported("permission without rule")
	default:
		return perm{}, unsupported("permission %T", r)
	}
}

func compilePermSet(op permOp, what string, s *rbacv3.Permission_Set, depth int) (perm, error) {
	if err := noUnknown(s); err != nil {
		return perm{}, err
	}
	if len(s.GetRules()) == 0 {
		return perm{}, unsupported("%s: empty", what)
	}
	out := perm{op: op, onlyHTTP: true}
	for i, r := range s.GetRules() {
		c, err := compilePerm(r, depth+1)
		if err != nil {
			return perm{}, fmt.Errorf("%s[%d]: %w", what, i, err)
		}
		out.rules = append(out.rules, c)
		out.hasHTTP = out.hasHTTP || c.hasHTTP
		out.onlyHTTP = out.onlyHTTP && c.onlyHTTP
	}
	return out, nil
}

func compilePrincipal(p *rbacv3.Principal, depth int) (principal, error) {
	if depth > maxDepth {
		return principal{}, unsupported("nested deeper than %d", maxDepth)
	}
	if p == nil {
		return principal{}, unsupported("empty principal")
	}
	if err := noUnknown(p); err != nil {
		return principal{}, err
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return principal{}, unsupported("any: false")
		}
		return principal{op: idAny}, nil
	case *rbacv3.Principal_AndIds:
		return compilePrincipalSet(idAnd, "and_ids", id.AndIds, depth)
	case *rbacv3.Principal_OrIds:
		return compilePrincipalSet(idOr, "or_ids", id.OrIds, depth)
	case *rbacv3.Principal_NotId:
		c, err := compilePrincipal(id.NotId, depth+1)
		if err != nil {
			return principal{}, fmt.Errorf("not_id: %w", err)
		}
		return principal{op: idNot, ids: []principal{c}}, nil
	case *rbacv3.Principal_Authenticated_:
		if err := noUnknown(id.Authenticated); err != nil {
			return principal{}, err
		}
		if id.Authenticated.GetPrincipalName() == nil {
			return principal{}, unsupported("authenticated without principal_name")
		}
		m, err := compileString(id.Authenticated.GetPrincipalName())
		if err != nil {
			return principal{}, fmt.Errorf("authenticated: %w", err)
		}
		return principal{op: idAuthenticated, match: m}, nil
	case nil:
		return principal{}, unsupported("principal without identifier")
	default:
		return principal{}, unsupported("principal %T", id)
	}
}

func compilePrincipalSet(op principalOp, what string, s *rbacv3.Principal_Set, depth int) (principal, error) {
	if err := noUnknown(s); err != nil {
		return principal{}, err
	}
	if len(s.GetIds()) == 0 {
		return principal{}, unsupported("%s: empty", what)
	}
	out := principal{op: op}
	for i, id := range s.GetIds() {
		c, err := compilePrincipal(id, depth+1)
		if err != nil {
			return principal{}, fmt.Errorf("%s[%d]: %w", what, i, err)
		}
		out.ids = append(out.ids, c)
	}
	return out, nil
}

func compileString(m *matcherv3.StringMatcher) (stringMatch, error) {
	if m == nil {
		return stringMatch{}, unsupported("empty string matcher")
	}
	if err := noUnknown(m); err != nil {
		return stringMatch{}, err
	}
	if m.GetIgnoreCase() {
		return stringMatch{}, unsupported("ignore_case")
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return stringMatch{kind: matchExact, s: p.Exact}, nil
	case *matcherv3.StringMatcher_Prefix:
		if p.Prefix == "" {
			return stringMatch{}, unsupported("empty prefix")
		}
		return stringMatch{kind: matchPrefix, s: p.Prefix}, nil
	case *matcherv3.StringMatcher_Suffix:
		if p.Suffix == "" {
			return stringMatch{}, unsupported("empty suffix")
		}
		return stringMatch{kind: matchSuffix, s: p.Suffix}, nil
	case nil:
		return stringMatch{}, unsupported("string matcher without pattern")
	default:
		return stringMatch{}, unsupported("string matcher %T (only exact, prefix, suffix)", p)
	}
}

// noUnknown refuses fields this build does not know: a newer control
// plane may have meant them to change decisions.
func noUnknown(m proto.Message) error {
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return unsupported("unknown fields in %s", m.ProtoReflect().Descriptor().FullName())
	}
	return nil
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, args...))
}

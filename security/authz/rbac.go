package authz

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The names of the two RBAC HTTP filters policies travel in: the keys of
// a virtual host's typed_per_filter_config, which Envoy matches against
// the names of the HTTP connection manager's filters (proxyless gRPC does
// the same). Envoy picks a filter's implementation by its typed_config, so
// the name is free; two names are needed because one RBAC filter has one
// action. The DENY filter runs first.
const (
	FilterDeny  = "tender.authz.deny"
	FilterAllow = "tender.authz.allow"
)

// ruleSep separates a policy's key from its rule index in the names of
// the RBAC policies: "namespace/name/rules[0]".
const ruleSep = "/rules["

// ForService returns the typed_per_filter_config entries (filter name →
// Any of config.route.v3.FilterConfig, is_optional, wrapping an
// RBACPerRoute) for the policies that apply to service of namespace; nil
// when none does. trustDomain is the mesh's SPIFFE trust domain, which
// namespace conditions are written in.
//
// The FilterDeny entry holds an RBAC of action DENY with the rules of the
// DENY policies; the FilterAllow entry, one of action ALLOW with those of
// the ALLOW policies. An entry is left out when no policy of its action
// has a rule, except that ALLOW policies without rules still give an ALLOW
// RBAC with no policies: it denies every request. Each rule is one Envoy
// policy, named "namespace/name/rules[i]" (Envoy ANDs a policy's
// permissions with its principals, so several rules cannot share one).
//
// The applicable policies are validated; an invalid one fails the call
// with an error wrapping ErrInvalid.
func ForService(policies []Policy, namespace, service, trustDomain string) (map[string]*anypb.Any, error) {
	var applicable []*Policy
	for i := range policies {
		if policies[i].AppliesTo(namespace, service) {
			applicable = append(applicable, &policies[i])
		}
	}
	if len(applicable) == 0 {
		return nil, nil
	}
	if err := checkTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	slices.SortFunc(applicable, func(a, b *Policy) int { return strings.Compare(a.Key(), b.Key()) })
	var deny, allow *rbacv3.RBAC
	for i, p := range applicable {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		if i > 0 && applicable[i-1].Key() == p.Key() {
			return nil, fmt.Errorf("%w %s: defined twice", ErrInvalid, p.Key())
		}
		rbac := &allow
		action := rbacv3.RBAC_ALLOW
		if p.action() == ActionDeny {
			rbac, action = &deny, rbacv3.RBAC_DENY
		}
		if *rbac == nil && (action == rbacv3.RBAC_ALLOW || len(p.Rules) > 0) {
			*rbac = &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
		}
		for j := range p.Rules {
			(*rbac).Policies[p.Key()+ruleSep+strconv.Itoa(j)+"]"] = buildRule(&p.Rules[j], trustDomain)
		}
	}
	out := make(map[string]*anypb.Any, 2)
	for name, rbac := range map[string]*rbacv3.RBAC{FilterDeny: deny, FilterAllow: allow} {
		if rbac == nil {
			continue
		}
		a, err := perRoute(rbac)
		if err != nil {
			return nil, fmt.Errorf("authz: %s: %w", name, err)
		}
		out[name] = a
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func checkTrustDomain(td string) error {
	if td == "" {
		return errors.New("authz: empty trust domain")
	}
	if err := checkTDChars(td); err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	return nil
}

// perRoute wraps rules as the per-route config of an RBAC filter,
// marshalled deterministically so the same policies give the same bytes.
func perRoute(rules *rbacv3.RBAC) (*anypb.Any, error) {
	det := proto.MarshalOptions{Deterministic: true}
	inner := &anypb.Any{}
	if err := anypb.MarshalFrom(inner, &rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: rules}}, det); err != nil {
		return nil, err
	}
	outer := &anypb.Any{}
	if err := anypb.MarshalFrom(outer, &routev3.FilterConfig{Config: inner, IsOptional: true}, det); err != nil {
		return nil, err
	}
	return outer, nil
}

// buildRule maps a rule to an Envoy policy: one permission per operation
// (Any when there is none) and one principal per source (likewise).
func buildRule(r *Rule, td string) *rbacv3.Policy {
	p := &rbacv3.Policy{}
	for i := range r.To {
		p.Permissions = append(p.Permissions, buildOperation(&r.To[i]))
	}
	if len(p.Permissions) == 0 {
		p.Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
	}
	for i := range r.From {
		p.Principals = append(p.Principals, buildSource(&r.From[i], td))
	}
	if len(p.Principals) == 0 {
		p.Principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
	}
	return p
}

// buildSource ANDs the source's non-empty fields, each an OR of its
// values (negated for the Not fields).
func buildSource(s *Source, td string) *rbacv3.Principal {
	var ids []*rbacv3.Principal
	field := func(values []string, not bool, m func(string) *matcherv3.StringMatcher) {
		if len(values) == 0 {
			return
		}
		or := make([]*rbacv3.Principal, 0, len(values))
		for _, v := range values {
			or = append(or, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
				Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m(v)}}})
		}
		id := or[0]
		if len(or) > 1 {
			id = &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: or}}}
		}
		if not {
			id = &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: id}}
		}
		ids = append(ids, id)
	}
	ns := func(v string) *matcherv3.StringMatcher { return namespaceMatcher(v, td) }
	field(s.Principals, false, principalMatcher)
	field(s.NotPrincipals, true, principalMatcher)
	field(s.Namespaces, false, ns)
	field(s.NotNamespaces, true, ns)
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

// buildOperation is buildSource for permissions.
func buildOperation(o *Operation) *rbacv3.Permission {
	var rules []*rbacv3.Permission
	field := func(values []string, not bool, leaf func(string) *rbacv3.Permission) {
		if len(values) == 0 {
			return
		}
		or := make([]*rbacv3.Permission, 0, len(values))
		for _, v := range values {
			or = append(or, leaf(v))
		}
		r := or[0]
		if len(or) > 1 {
			r = &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: or}}}
		}
		if not {
			r = &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: r}}
		}
		rules = append(rules, r)
	}
	field(o.Methods, false, methodPermission)
	field(o.NotMethods, true, methodPermission)
	field(o.Paths, false, pathPermission)
	field(o.NotPaths, true, pathPermission)
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: rules}}}
}

// methodHeader is the pseudo-header Envoy's RBAC reads the method from.
const methodHeader = ":method"

func methodPermission(m string) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name:                 methodHeader,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)},
	}}}
}

// pathPermission matches the path without its query (Envoy's url_path).
// "*" is a prefix match on "/", so it still needs an HTTP request.
func pathPermission(v string) *rbacv3.Permission {
	kind, s, _ := splitPattern(v)
	var m *matcherv3.StringMatcher
	switch kind {
	case patAny:
		m = prefix("/")
	case patPrefix:
		m = prefix(s)
	case patSuffix:
		m = suffix(s)
	default:
		m = exact(s)
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

// principalMatcher matches a peer's SPIFFE ID; "*" is any SPIFFE ID.
func principalMatcher(v string) *matcherv3.StringMatcher {
	kind, s, _ := splitPattern(v)
	switch kind {
	case patAny:
		return prefix("spiffe://")
	case patPrefix:
		return prefix(s)
	case patSuffix:
		return suffix(s)
	}
	return exact(s)
}

// namespaceMatcher matches the SPIFFE IDs of namespace v (a name,
// "prefix*" or "*") in trust domain td.
func namespaceMatcher(v, td string) *matcherv3.StringMatcher {
	base := "spiffe://" + td + "/ns/"
	kind, s, _ := splitPattern(v)
	switch kind {
	case patAny:
		return prefix(base)
	case patPrefix:
		return prefix(base + s)
	}
	return prefix(base + s + "/")
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func suffix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}

package authz

import (
	"errors"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// engineFor compiles policies for default/greeter the way the control
// plane and the sidecar do: ForService, then FromRoute.
func engineFor(tb testing.TB, policies []Policy) *Engine {
	tb.Helper()
	cfg, err := ForService(policies, "default", "greeter", td)
	if err != nil {
		tb.Fatalf("ForService: %v", err)
	}
	e, err := FromRoute(cfg)
	if err != nil {
		tb.Fatalf("FromRoute: %v", err)
	}
	return e
}

func allowed(policy, rule string) Decision {
	return Decision{Allowed: true, Policy: policy, Reason: "allowed by " + policy + "/rules[" + rule + "]"}
}

func denied(policy, rule string) Decision {
	return Decision{Policy: policy, Reason: "denied by " + policy + "/rules[" + rule + "]"}
}

var (
	byDefault   = Decision{Allowed: true, Reason: ReasonDefault}
	noAllow     = Decision{Reason: ReasonNoAllowMatch}
	frontend    = spiffe("default", "frontend")
	other       = spiffe("default", "other")
	bot         = spiffe("bots", "crawler")
	plaintext   = ""
	frontendGET = http(frontend, "GET", "/hello")
)

func http(principal, method, path string) Request {
	return Request{Principal: principal, Method: method, Path: path}
}

func tcp(principal string) Request { return Request{Principal: principal, TCP: true} }

func TestEvaluate(t *testing.T) {
	type check struct {
		req  Request
		want Decision
	}
	tests := []struct {
		name     string
		policies []Policy
		checks   []check
	}{{
		name:     "no policies",
		policies: nil,
		checks:   []check{{frontendGET, byDefault}, {tcp(plaintext), byDefault}},
	}, {
		name:     "policies of other services",
		policies: []Policy{{Name: "p", Services: []string{"users"}}, {Name: "q", Namespace: "shop"}},
		checks:   []check{{frontendGET, byDefault}},
	}, {
		name: "allow only frontend",
		policies: []Policy{{Name: "front", Services: []string{"greeter"}, Rules: []Rule{{
			From: []Source{{Principals: []string{frontend}}},
		}}}},
		checks: []check{
			{frontendGET, allowed("default/front", "0")},
			{http(other, "GET", "/hello"), noAllow},
			{http(plaintext, "GET", "/hello"), noAllow},
			{http(frontend+"x", "GET", "/hello"), noAllow},
		},
	}, {
		name: "deny by namespace",
		policies: []Policy{{Name: "no-bots", Action: ActionDeny, Rules: []Rule{{
			From: []Source{{Namespaces: []string{"bots"}}},
		}}}},
		checks: []check{
			{http(bot, "GET", "/"), denied("default/no-bots", "0")},
			{tcp(bot), denied("default/no-bots", "0")},
			{frontendGET, byDefault},
			{http(spiffe("botsy", "x"), "GET", "/"), byDefault},
			{http("spiffe://other.domain/ns/bots/sa/crawler", "GET", "/"), byDefault},
			{http(plaintext, "GET", "/"), byDefault},
		},
	}, {
		name: "namespace patterns",
		policies: []Policy{{Name: "p", Rules: []Rule{{
			From: []Source{{Namespaces: []string{"team-*"}}, {Namespaces: []string{"*"}, NotNamespaces: []string{"default"}}},
		}}}},
		checks: []check{
			{http(spiffe("team-a", "x"), "GET", "/"), allowed("default/p", "0")},
			{http(spiffe("shop", "x"), "GET", "/"), allowed("default/p", "0")},
			{frontendGET, noAllow},
			{http(plaintext, "GET", "/"), noAllow},
		},
	}, {
		name: "principal patterns",
		policies: []Policy{
			{Name: "any", Rules: []Rule{{From: []Source{{Principals: []string{"*"}}}, To: []Operation{{Paths: []string{"/any"}}}}}},
			{Name: "prefix", Rules: []Rule{{From: []Source{{Principals: []string{"spiffe://cluster.local/ns/prod/*"}}}}}},
			{Name: "suffix", Rules: []Rule{{From: []Source{{Principals: []string{"*/sa/admin"}}}}}},
		},
		checks: []check{
			{http(frontend, "GET", "/any"), allowed("default/any", "0")},
			{http(plaintext, "GET", "/any"), noAllow},
			{http(spiffe("prod", "x"), "GET", "/"), allowed("default/prefix", "0")},
			{http(spiffe("dev", "admin"), "GET", "/"), allowed("default/suffix", "0")},
			{http(spiffe("dev", "x"), "GET", "/"), noAllow},
		},
	}, {
		name: "methods and paths",
		policies: []Policy{{Name: "ops", Rules: []Rule{{
			To: []Operation{
				{Methods: []string{"GET", "POST"}, Paths: []string{"/hello*"}},
				{Paths: []string{"/exact"}},
				{Methods: []string{"GET"}, Paths: []string{"*.json"}},
				{Methods: []string{"POST"}, Paths: []string{"/greeter.v1.Greeter/Hello"}},
			},
		}}}},
		checks: []check{
			{frontendGET, allowed("default/ops", "0")},
			{http(plaintext, "POST", "/hello/world?x=1"), allowed("default/ops", "0")},
			{http(frontend, "DELETE", "/hello"), noAllow},
			{http(frontend, "get", "/hello"), noAllow},
			{http(frontend, "GET", "/hel"), noAllow},
			{http(frontend, "PUT", "/exact?x=/y"), allowed("default/ops", "0")},
			{http(frontend, "PUT", "/exact#frag"), allowed("default/ops", "0")},
			{http(frontend, "PUT", "/exact/"), noAllow},
			{http(frontend, "GET", "/a/b.json?pretty"), allowed("default/ops", "0")},
			{http(frontend, "GET", "/a/b.json.bak"), noAllow},
			{http(frontend, "GET", "/a?f=b.json"), noAllow},
			{http(frontend, "POST", "/greeter.v1.Greeter/Hello"), allowed("default/ops", "0")},
			{http(frontend, "POST", "/greeter.v1.Greeter/Bye"), noAllow},
		},
	}, {
		name: "not fields",
		policies: []Policy{
			{Name: "mtls-only", Action: ActionDeny, Rules: []Rule{{From: []Source{{NotPrincipals: []string{"*"}}}}}},
			{Name: "no-writes", Action: ActionDeny, Rules: []Rule{{
				From: []Source{{NotNamespaces: []string{"default"}}},
				To:   []Operation{{NotMethods: []string{"GET", "HEAD"}, NotPaths: []string{"/public*"}}},
			}}},
			{Name: "allow", Rules: []Rule{{From: []Source{{NotPrincipals: []string{other}}}}}},
		},
		checks: []check{
			{http(plaintext, "GET", "/"), denied("default/mtls-only", "0")},
			{frontendGET, allowed("default/allow", "0")},
			{http(other, "GET", "/"), noAllow},
			{http(bot, "GET", "/"), allowed("default/allow", "0")},
			{http(bot, "POST", "/"), denied("default/no-writes", "0")},
			{http(bot, "POST", "/public/form"), allowed("default/allow", "0")},
			{http(frontend, "POST", "/"), allowed("default/allow", "0")},
		},
	}, {
		name:     "not namespaces match plaintext (Istio)",
		policies: []Policy{{Name: "p", Rules: []Rule{{From: []Source{{NotNamespaces: []string{"bots"}}}}}}},
		checks: []check{
			{http(plaintext, "GET", "/"), allowed("default/p", "0")},
			{http(bot, "GET", "/"), noAllow},
		},
	}, {
		name:     "allow without rules denies all",
		policies: []Policy{{Name: "nothing"}},
		checks:   []check{{frontendGET, noAllow}, {http(plaintext, "GET", "/"), noAllow}, {tcp(frontend), noAllow}},
	}, {
		name:     "allow with an empty rule allows all",
		policies: []Policy{{Name: "all", Rules: []Rule{{}}}},
		checks:   []check{{frontendGET, allowed("default/all", "0")}, {tcp(plaintext), allowed("default/all", "0")}},
	}, {
		name:     "deny without rules denies nothing",
		policies: []Policy{{Name: "nothing", Action: ActionDeny}},
		checks:   []check{{frontendGET, byDefault}},
	}, {
		name:     "deny with an empty rule denies all",
		policies: []Policy{{Name: "all", Action: ActionDeny, Rules: []Rule{{}}}, {Name: "allow", Rules: []Rule{{}}}},
		checks:   []check{{frontendGET, denied("default/all", "0")}, {tcp(plaintext), denied("default/all", "0")}},
	}, {
		name: "deny wins over allow",
		policies: []Policy{
			{Name: "allow-front", Rules: []Rule{{From: []Source{{Principals: []string{frontend}}}}}},
			{Name: "deny-admin", Action: ActionDeny, Rules: []Rule{{To: []Operation{{Paths: []string{"/admin*"}}}}}},
		},
		checks: []check{
			{frontendGET, allowed("default/allow-front", "0")},
			{http(frontend, "GET", "/admin/users"), denied("default/deny-admin", "0")},
		},
	}, {
		name: "the first matching rule decides",
		policies: []Policy{{Name: "p", Rules: []Rule{
			{From: []Source{{Principals: []string{other}}}},
			{From: []Source{{Principals: []string{frontend}}}},
			{From: []Source{{Principals: []string{"*"}}}},
		}}},
		checks: []check{
			{frontendGET, allowed("default/p", "1")},
			{http(bot, "GET", "/"), allowed("default/p", "2")},
		},
	}, {
		name: "TCP in ALLOW: rules with methods or paths never match",
		policies: []Policy{
			{Name: "http", Rules: []Rule{{From: []Source{{Principals: []string{frontend}}}, To: []Operation{{Methods: []string{"GET"}}}}}},
			{Name: "not-http", Rules: []Rule{{From: []Source{{Principals: []string{other}}}, To: []Operation{{NotPaths: []string{"/admin"}}}}}},
			{Name: "tcp", Rules: []Rule{{From: []Source{{Principals: []string{bot}}}}}},
		},
		checks: []check{
			{tcp(frontend), noAllow},
			{tcp(other), noAllow},
			{tcp(bot), allowed("default/tcp", "0")},
			{frontendGET, allowed("default/http", "0")},
			{http(other, "GET", "/x"), allowed("default/not-http", "0")},
		},
	}, {
		name: "TCP in DENY: methods and paths are ignored",
		policies: []Policy{
			{Name: "admin", Action: ActionDeny, Rules: []Rule{{From: []Source{{Namespaces: []string{"bots"}}}, To: []Operation{{Paths: []string{"/admin*"}}}}}},
			{Name: "writes", Action: ActionDeny, Rules: []Rule{{From: []Source{{Principals: []string{other}}}, To: []Operation{{NotMethods: []string{"GET"}}}}}},
		},
		checks: []check{
			{tcp(bot), denied("default/admin", "0")},
			{tcp(other), denied("default/writes", "0")},
			{tcp(frontend), byDefault},
			{http(bot, "GET", "/"), byDefault},
			{http(other, "GET", "/"), byDefault},
			{http(other, "POST", "/"), denied("default/writes", "0")},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := engineFor(t, tt.policies)
			for _, c := range tt.checks {
				if diff := cmp.Diff(c.want, e.Evaluate(c.req)); diff != "" {
					t.Errorf("Evaluate(%+v) (-want +got):\n%s", c.req, diff)
				}
			}
		})
	}
}

func TestNilEngine(t *testing.T) {
	e, err := FromRoute(nil)
	if err != nil || e != nil {
		t.Fatalf("FromRoute(nil): got %v, %v, want nil, nil", e, err)
	}
	e, err = FromRoute(map[string]*anypb.Any{"envoy.filters.http.fault": {}})
	if err != nil || e != nil {
		t.Fatalf("FromRoute(other filters): got %v, %v, want nil, nil", e, err)
	}
	if diff := cmp.Diff(byDefault, e.Evaluate(frontendGET)); diff != "" {
		t.Errorf("nil engine (-want +got):\n%s", diff)
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestFromRouteBarePerRoute(t *testing.T) {
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"p": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}}}
	e, err := FromRoute(map[string]*anypb.Any{FilterAllow: mustAny(t, &rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: rules}})})
	if err != nil {
		t.Fatal(err)
	}
	want := Decision{Allowed: true, Policy: "p", Reason: "allowed by p"}
	if diff := cmp.Diff(want, e.Evaluate(frontendGET)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFromRouteUnsupported(t *testing.T) {
	anyPerm := &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	anyID := &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	auth := func(m *matcherv3.StringMatcher) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
	}
	// entry wraps one policy in the FilterConfig ForService writes.
	entry := func(action rbacv3.RBAC_Action, p *rbacv3.Policy) *anypb.Any {
		return mustAny(t, &routev3.FilterConfig{IsOptional: true, Config: mustAny(t, &rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{
			Rules: &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{"p": p}}}})})
	}
	principal := func(id *rbacv3.Principal) map[string]*anypb.Any {
		return map[string]*anypb.Any{FilterAllow: entry(rbacv3.RBAC_ALLOW, &rbacv3.Policy{Permissions: []*rbacv3.Permission{anyPerm}, Principals: []*rbacv3.Principal{id}})}
	}
	permission := func(pm *rbacv3.Permission) map[string]*anypb.Any {
		return map[string]*anypb.Any{FilterDeny: entry(rbacv3.RBAC_DENY, &rbacv3.Policy{Permissions: []*rbacv3.Permission{pm}, Principals: []*rbacv3.Principal{anyID}})}
	}
	perRoute := func(pr *rbachttpv3.RBACPerRoute) map[string]*anypb.Any {
		return map[string]*anypb.Any{FilterAllow: mustAny(t, &routev3.FilterConfig{Config: mustAny(t, pr)})}
	}
	deep := anyID
	for range maxDepth + 2 {
		deep = &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: deep}}
	}
	withUnknown := entry(rbacv3.RBAC_ALLOW, &rbacv3.Policy{Permissions: []*rbacv3.Permission{anyPerm}, Principals: []*rbacv3.Principal{anyID}})
	withUnknown.Value = append(withUnknown.Value, 0xf8, 0x7f, 0x01) // field 1023, varint 1

	tests := []struct {
		name string
		cfg  map[string]*anypb.Any
	}{
		// Deprecated in Envoy, but an older control plane may send it.
		{"source ip", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{
			SourceIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}})}, //nolint:staticcheck // on purpose
		{"direct remote ip", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{
			DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}})},
		{"remote ip", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0"}}})},
		{"principal header", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-user"}}})},
		{"authenticated without name", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}})},
		{"regex", principal(auth(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}))},
		{"contains", principal(auth(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "x"}}))},
		{"ignore case", principal(auth(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x"}, IgnoreCase: true}))},
		{"empty prefix", principal(auth(prefix("")))},
		{"any false", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_Any{}})},
		{"empty or_ids", principal(&rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{}}})},
		{"no identifier", principal(&rbacv3.Principal{})},
		{"too deep", principal(deep)},
		{"destination port", permission(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}})},
		{"other header", permission(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "x-user",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("a")}}}})},
		{"inverted method", permission(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: methodHeader, InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}}}})},
		{"method prefix", permission(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: methodHeader,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: prefix("G")}}}})},
		{"method present match", permission(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: methodHeader,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}})},
		{"no rule", permission(&rbacv3.Permission{})},
		{"empty and_rules", permission(&rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{}}})},
		{"condition", map[string]*anypb.Any{FilterAllow: entry(rbacv3.RBAC_ALLOW, &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{anyPerm}, Principals: []*rbacv3.Principal{anyID}, CelConfig: &corev3.CelExpressionConfig{}})}},
		{"no permissions", map[string]*anypb.Any{FilterAllow: entry(rbacv3.RBAC_ALLOW, &rbacv3.Policy{Principals: []*rbacv3.Principal{anyID}})}},
		{"no principals", map[string]*anypb.Any{FilterAllow: entry(rbacv3.RBAC_ALLOW, &rbacv3.Policy{Permissions: []*rbacv3.Permission{anyPerm}})}},
		{"deny action in the allow filter", map[string]*anypb.Any{FilterAllow: entry(rbacv3.RBAC_DENY, &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{anyPerm}, Principals: []*rbacv3.Principal{anyID}})}},
		{"log action", map[string]*anypb.Any{FilterDeny: entry(rbacv3.RBAC_LOG, &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{anyPerm}, Principals: []*rbacv3.Principal{anyID}})}},
		{"per-route without rbac", perRoute(&rbachttpv3.RBACPerRoute{})},
		{"rbac without rules", perRoute(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{}})},
		{"shadow rules", perRoute(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}, ShadowRules: &rbacv3.RBAC{}}})},
		{"audit logging", perRoute(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{
			AuditLoggingOptions: &rbacv3.RBAC_AuditLoggingOptions{}}}})},
		{"disabled", map[string]*anypb.Any{FilterAllow: mustAny(t, &routev3.FilterConfig{Disabled: true})}},
		{"filter config without config", map[string]*anypb.Any{FilterAllow: mustAny(t, &routev3.FilterConfig{})}},
		{"not per-route", map[string]*anypb.Any{FilterAllow: mustAny(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}})}},
		{"nil entry", map[string]*anypb.Any{FilterDeny: nil}},
		{"garbage", map[string]*anypb.Any{FilterDeny: {TypeUrl: "type.googleapis.com/envoy.config.route.v3.FilterConfig", Value: []byte{0xff, 0xff}}}},
		{"unknown field", map[string]*anypb.Any{FilterAllow: withUnknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := FromRoute(tt.cfg)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("got %v, %v, want an error wrapping ErrUnsupported", e, err)
			}
			if e != nil {
				t.Errorf("got an engine with the error, want nil")
			}
		})
	}
}

// benchPolicies are a realistic set for one service.
var benchPolicies = []Policy{
	{Name: "mtls-only", Action: ActionDeny, Rules: []Rule{{From: []Source{{NotPrincipals: []string{"*"}}}}}},
	{Name: "no-bots", Action: ActionDeny, Rules: []Rule{{From: []Source{{Namespaces: []string{"bots", "crawlers"}}}}}},
	{Name: "front", Rules: []Rule{{
		From: []Source{{Principals: []string{spiffe("default", "frontend"), spiffe("default", "gateway")}}},
		To:   []Operation{{Methods: []string{"GET", "POST"}, Paths: []string{"/hello*", "/greeter.v1.Greeter/*"}}},
	}, {
		From: []Source{{Namespaces: []string{"ops"}}},
		To:   []Operation{{Paths: []string{"/admin*"}, NotMethods: []string{"DELETE"}}},
	}}},
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	e := engineFor(t, benchPolicies)
	req := http(spiffe("ops", "oncall"), "GET", "/admin/users?page=2")
	if n := testing.AllocsPerRun(100, func() { e.Evaluate(req) }); n != 0 {
		t.Errorf("got %v allocations per Evaluate, want 0", n)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	e := engineFor(b, benchPolicies)
	reqs := []Request{
		http(spiffe("default", "frontend"), "POST", "/greeter.v1.Greeter/Hello"),
		http(spiffe("ops", "oncall"), "GET", "/admin/users?page=2"),
		http(spiffe("default", "other"), "GET", "/hello"),
		tcp(spiffe("default", "frontend")),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e.Evaluate(reqs[i%len(reqs)])
		i++
	}
}

package authz

import (
	"errors"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

const td = "cluster.local"

func spiffe(ns, sa string) string { return "spiffe://" + td + "/ns/" + ns + "/sa/" + sa }

// unwrap returns the RBAC of a ForService entry, checking the wrapping.
func unwrap(t *testing.T, a *anypb.Any) *rbacv3.RBAC {
	t.Helper()
	var fc routev3.FilterConfig
	if err := a.UnmarshalTo(&fc); err != nil {
		t.Fatal(err)
	}
	if !fc.GetIsOptional() {
		t.Error("got a filter config that is not optional, want is_optional")
	}
	var pr rbachttpv3.RBACPerRoute
	if err := fc.GetConfig().UnmarshalTo(&pr); err != nil {
		t.Fatal(err)
	}
	if err := pr.ValidateAll(); err != nil {
		t.Errorf("got an RBACPerRoute Envoy refuses: %v", err)
	}
	return pr.GetRbac().GetRules()
}

func TestForServiceShape(t *testing.T) {
	sm := func(m *matcherv3.StringMatcher) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
	}
	anyPerm := []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
	policies := []Policy{
		{Name: "front", Services: []string{"greeter"}, Rules: []Rule{{
			From: []Source{{Principals: []string{spiffe("default", "frontend")}}},
			To:   []Operation{{Methods: []string{"GET", "POST"}, Paths: []string{"/hello*"}}},
		}, {
			From: []Source{{Namespaces: []string{"ops"}, NotPrincipals: []string{"*/sa/intern"}}},
		}}},
		{Name: "deny-bots", Action: ActionDeny, Rules: []Rule{{
			From: []Source{{Namespaces: []string{"bots*"}}},
			To:   []Operation{{NotPaths: []string{"*.json"}}},
		}}},
		{Name: "deny-nothing", Action: ActionDeny},
		{Name: "elsewhere", Namespace: "shop"},
		{Name: "other-service", Services: []string{"users"}},
	}
	got, err := ForService(policies, "default", "greeter", td)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got entries %v, want %s and %s", keys(got), FilterDeny, FilterAllow)
	}
	wantAllow := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"default/front/rules[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{methodPermission("GET"), methodPermission("POST")}}}},
				{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: prefix("/hello")}}}},
			}}}}},
			Principals: []*rbacv3.Principal{sm(exact(spiffe("default", "frontend")))},
		},
		"default/front/rules[1]": {
			Permissions: anyPerm,
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				{Identifier: &rbacv3.Principal_NotId{NotId: sm(suffix("/sa/intern"))}},
				sm(prefix("spiffe://cluster.local/ns/ops/")),
			}}}}},
		},
	}}
	if diff := cmp.Diff(wantAllow, unwrap(t, got[FilterAllow]), protocmp.Transform()); diff != "" {
		t.Errorf("ALLOW RBAC (-want +got):\n%s", diff)
	}
	wantDeny := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"default/deny-bots/rules[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{
				UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: suffix(".json")}}}}}}},
			Principals: []*rbacv3.Principal{sm(prefix("spiffe://cluster.local/ns/bots"))},
		},
	}}
	if diff := cmp.Diff(wantDeny, unwrap(t, got[FilterDeny]), protocmp.Transform()); diff != "" {
		t.Errorf("DENY RBAC (-want +got):\n%s", diff)
	}
}

func keys(m map[string]*anypb.Any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestForServiceEntries(t *testing.T) {
	tests := []struct {
		name      string
		policies  []Policy
		wantDeny  int // number of Envoy policies; -1: no entry
		wantAllow int
	}{
		{"none", nil, -1, -1},
		{"other namespace", []Policy{{Name: "p", Namespace: "shop", Rules: []Rule{{}}}}, -1, -1},
		{"other service", []Policy{{Name: "p", Services: []string{"users"}, Rules: []Rule{{}}}}, -1, -1},
		{"deny without rules", []Policy{{Name: "p", Action: ActionDeny}}, -1, -1},
		{"deny only", []Policy{{Name: "p", Action: ActionDeny, Rules: []Rule{{}, {}}}}, 2, -1},
		{"allow without rules denies all", []Policy{{Name: "p"}, {Name: "q", Rules: []Rule{}}}, -1, 0},
		{"allow all", []Policy{{Name: "p", Rules: []Rule{{}}}}, -1, 1},
		{"both", []Policy{{Name: "p", Rules: []Rule{{}}}, {Name: "q", Action: ActionDeny, Rules: []Rule{{}}}}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ForService(tt.policies, "default", "greeter", td)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantDeny < 0 && tt.wantAllow < 0 && got != nil {
				t.Fatalf("got %v, want a nil map", keys(got))
			}
			for _, f := range []struct {
				name   string
				want   int
				action rbacv3.RBAC_Action
			}{{FilterDeny, tt.wantDeny, rbacv3.RBAC_DENY}, {FilterAllow, tt.wantAllow, rbacv3.RBAC_ALLOW}} {
				a, ok := got[f.name]
				if f.want < 0 {
					if ok {
						t.Errorf("got a %s entry, want none", f.name)
					}
					continue
				}
				if !ok {
					t.Fatalf("got no %s entry, want one", f.name)
				}
				r := unwrap(t, a)
				if r.GetAction() != f.action || len(r.GetPolicies()) != f.want {
					t.Errorf("%s: got action %s with %d policies, want %s with %d", f.name, r.GetAction(), len(r.GetPolicies()), f.action, f.want)
				}
			}
		})
	}
}

func TestForServiceErrors(t *testing.T) {
	tests := []struct {
		name     string
		policies []Policy
		td       string
		want     error // nil: any error
	}{
		{"invalid policy", []Policy{{Name: "p", Action: "MAYBE"}}, td, ErrInvalid},
		{"duplicate", []Policy{{Name: "p"}, {Name: "p", Namespace: "default"}}, td, ErrInvalid},
		{"empty trust domain", []Policy{{Name: "p"}}, "", nil},
		{"bad trust domain", []Policy{{Name: "p"}}, "a/b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ForService(tt.policies, "default", "greeter", tt.td)
			if err == nil {
				t.Fatalf("got %v, want an error", keys(got))
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want it to wrap %v", err, tt.want)
			}
		})
	}
	// An invalid policy of another service is not this one's business.
	if _, err := ForService([]Policy{{Name: "p", Namespace: "shop", Action: "MAYBE"}}, "default", "greeter", ""); err != nil {
		t.Errorf("got %v, want no error for a policy that does not apply", err)
	}
}

func TestForServiceDeterministic(t *testing.T) {
	var policies []Policy
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		policies = append(policies, Policy{Name: n, Rules: []Rule{{From: []Source{{Principals: []string{spiffe("x", n)}}}}, {}}})
	}
	first, err := ForService(policies, "default", "greeter", td)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := ForService(policies, "default", "greeter", td)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(first[FilterAllow], again[FilterAllow]) {
			t.Fatal("got different bytes for the same policies, want the same")
		}
	}
}

package authz

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

func TestValidate(t *testing.T) {
	valid := func(mod func(p *Policy)) Policy {
		p := Policy{Name: "p", Namespace: "shop", Services: []string{"cart"}, Action: ActionAllow, Rules: []Rule{{
			From: []Source{{Principals: []string{"spiffe://cluster.local/ns/shop/sa/web"}}},
			To:   []Operation{{Methods: []string{"GET"}, Paths: []string{"/items*"}}},
		}}}
		if mod != nil {
			mod(&p)
		}
		return p
	}
	from := func(s Source) func(p *Policy) { return func(p *Policy) { p.Rules[0].From = []Source{s} } }
	to := func(o Operation) func(p *Policy) { return func(p *Policy) { p.Rules[0].To = []Operation{o} } }
	tests := []struct {
		name string
		p    Policy
		want string // substring of the error; "" for none
	}{
		{"valid", valid(nil), ""},
		{"no rules", valid(func(p *Policy) { p.Rules = nil }), ""},
		{"empty rule", valid(func(p *Policy) { p.Rules = []Rule{{}} }), ""},
		{"deny", valid(func(p *Policy) { p.Action = ActionDeny }), ""},
		{"default action and namespace", valid(func(p *Policy) { p.Action, p.Namespace = "", "" }), ""},
		{"principal patterns", valid(from(Source{Principals: []string{"*", "spiffe://cluster.local/ns/shop/*", "*/sa/web"}})), ""},
		{"namespace patterns", valid(from(Source{Namespaces: []string{"shop", "team-*", "*"}, NotNamespaces: []string{"kube-system"}})), ""},
		{"path patterns", valid(to(Operation{Paths: []string{"*", "/a", "/a/*", "*.json"}, NotMethods: []string{"M-SEARCH"}})), ""},
		{"grpc path", valid(to(Operation{Methods: []string{"POST"}, Paths: []string{"/greeter.v1.Greeter/Hello"}})), ""},

		{"no name", valid(func(p *Policy) { p.Name = "" }), "(unnamed): name: required"},
		{"bad name", valid(func(p *Policy) { p.Name = "Bad_Name" }), "shop/Bad_Name: name: \"Bad_Name\""},
		{"bad namespace", valid(func(p *Policy) { p.Namespace = "a.b" }), "namespace: \"a.b\""},
		{"bad service", valid(func(p *Policy) { p.Services = []string{"cart", ""} }), "services[1]"},
		{"bad action", valid(func(p *Policy) { p.Action = "allow" }), "action: \"allow\": want ALLOW or DENY"},
		{"empty source", valid(from(Source{})), "rules[0].from[0]: empty source"},
		{"empty operation", valid(to(Operation{})), "rules[0].to[0]: empty operation"},
		{"principal without scheme", valid(from(Source{Principals: []string{"cluster.local/ns/shop/sa/web"}})),
			"rules[0].from[0].principals[0]: \"cluster.local/ns/shop/sa/web\": not a SPIFFE ID"},
		{"principal without path", valid(from(Source{Principals: []string{"spiffe://cluster.local"}})), "needs a trust domain and a path"},
		{"principal upper-case trust domain", valid(from(Source{NotPrincipals: []string{"spiffe://Cluster/ns/a/sa/b"}})),
			"notPrincipals[0]"},
		{"principal empty segment", valid(from(Source{Principals: []string{"spiffe://td/ns//sa/b"}})), "path segment \"\""},
		{"principal star in the middle", valid(from(Source{Principals: []string{"spiffe://td/ns/*/sa/b"}})), "only at the start or the end"},
		{"principal two stars", valid(from(Source{Principals: []string{"*/ns/*"}})), "at most one '*'"},
		{"principal prefix without scheme", valid(from(Source{Principals: []string{"cluster.local/*"}})), "starts with spiffe://"},
		{"principal with space", valid(from(Source{Principals: []string{"* admin"}})), "space"},
		{"empty principal", valid(from(Source{Principals: []string{""}})), "principals[0]: \"\": empty"},
		{"namespace suffix", valid(from(Source{Namespaces: []string{"*-prod"}})), "not \"*suffix\""},
		{"bad namespace value", valid(from(Source{NotNamespaces: []string{"Shop"}})), "notNamespaces[0]"},
		{"bad namespace prefix", valid(from(Source{Namespaces: []string{"a/*"}})), "character '/'"},
		{"lower-case method", valid(to(Operation{Methods: []string{"get"}})), "methods[0]: \"get\": not an upper-case method"},
		{"wildcard method", valid(to(Operation{NotMethods: []string{"*"}})), "notMethods[0]"},
		{"relative path", valid(to(Operation{Paths: []string{"items"}})), "paths[0]: \"items\": a path starts with '/'"},
		{"path with query", valid(to(Operation{NotPaths: []string{"/a?b=c"}})), "notPaths[0]: \"/a?b=c\": paths are matched without the query"},
		{"path star in the middle", valid(to(Operation{Paths: []string{"/a/*/b"}})), "only at the start or the end"},
		{"second rule", valid(func(p *Policy) { p.Rules = append(p.Rules, Rule{To: []Operation{{Paths: []string{""}}}}) }),
			"rules[1].to[0].paths[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one with %q", tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want it to wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestPolicyKeyAndAppliesTo(t *testing.T) {
	p := Policy{Name: "p", Services: []string{"cart"}}
	if got, want := p.Key(), "default/p"; got != want {
		t.Errorf("Key: got %q, want %q", got, want)
	}
	tests := []struct {
		ns, svc string
		want    bool
	}{{"default", "cart", true}, {"default", "users", false}, {"shop", "cart", false}}
	for _, tt := range tests {
		if got := p.AppliesTo(tt.ns, tt.svc); got != tt.want {
			t.Errorf("AppliesTo(%q, %q): got %v, want %v", tt.ns, tt.svc, got, tt.want)
		}
	}
	all := Policy{Name: "all", Namespace: "shop"}
	if !all.AppliesTo("shop", "anything") {
		t.Error("a policy without services: got not applying, want applying to every service of its namespace")
	}
}

// meshYAML is the `authorization:` list of a mesh.yaml.
const meshYAML = `
- name: greeter-from-frontend
  namespace: default
  services: [greeter]
  action: ALLOW
  rules:
    - from: [{principals: ["spiffe://cluster.local/ns/default/sa/frontend"]}]
      to: [{methods: [GET, POST], paths: ["/hello*"]}]
- name: deny-bots
  action: DENY
  rules:
    - from: [{namespaces: [bots], notPrincipals: ["spiffe://cluster.local/ns/bots/sa/good"]}]
      to: [{notMethods: [GET], notPaths: ["/health"]}]
- name: deny-all
  namespace: vault
  rules: []
`

func TestDecodeYAML(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader(meshYAML))
	dec.KnownFields(true)
	var got []Policy
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := []Policy{
		{Name: "greeter-from-frontend", Namespace: "default", Services: []string{"greeter"}, Action: ActionAllow, Rules: []Rule{{
			From: []Source{{Principals: []string{"spiffe://cluster.local/ns/default/sa/frontend"}}},
			To:   []Operation{{Methods: []string{"GET", "POST"}, Paths: []string{"/hello*"}}},
		}}},
		{Name: "deny-bots", Action: ActionDeny, Rules: []Rule{{
			From: []Source{{Namespaces: []string{"bots"}, NotPrincipals: []string{"spiffe://cluster.local/ns/bots/sa/good"}}},
			To:   []Operation{{NotMethods: []string{"GET"}, NotPaths: []string{"/health"}}},
		}}},
		{Name: "deny-all", Namespace: "vault", Rules: []Rule{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded policies (-want +got):\n%s", diff)
	}
	for i := range got {
		if err := got[i].Validate(); err != nil {
			t.Errorf("got %v, want a valid policy", err)
		}
	}
}

func TestDecodeYAMLUnknownField(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader("- name: p\n  rules:\n    - from: [{principal: [x]}]\n"))
	dec.KnownFields(true)
	var got []Policy
	err := dec.Decode(&got)
	if err == nil || !strings.Contains(err.Error(), "field principal not found") {
		t.Errorf("got %v, want an unknown field error", err)
	}
}

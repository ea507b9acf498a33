package authz

import (
	"errors"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"
)

// FuzzFromRoute feeds FromRoute arbitrary bytes as the two entries: it
// must never panic, fail only with ErrUnsupported, and give an engine
// that evaluates without panicking.
func FuzzFromRoute(f *testing.F) {
	for _, policies := range [][]Policy{benchPolicies, {{Name: "nothing"}}, {{Name: "all", Action: ActionDeny, Rules: []Rule{{}}}}} {
		cfg, err := ForService(policies, "default", "greeter", td)
		if err != nil {
			f.Fatal(err)
		}
		var deny, allow []byte
		if a := cfg[FilterDeny]; a != nil {
			deny = a.GetValue()
		}
		if a := cfg[FilterAllow]; a != nil {
			allow = a.GetValue()
		}
		f.Add(deny, allow, false)
	}
	f.Add([]byte{0x0a, 0x00}, []byte{0xff}, true)
	fc := "type.googleapis.com/envoy.config.route.v3.FilterConfig"
	pr := "type.googleapis.com/" + string((&rbachttpv3.RBACPerRoute{}).ProtoReflect().Descriptor().FullName())
	f.Fuzz(func(t *testing.T, deny, allow []byte, bare bool) {
		url := fc
		if bare {
			url = pr
		}
		cfg := map[string]*anypb.Any{}
		if deny != nil {
			cfg[FilterDeny] = &anypb.Any{TypeUrl: url, Value: deny}
		}
		if allow != nil {
			cfg[FilterAllow] = &anypb.Any{TypeUrl: url, Value: allow}
		}
		e, err := FromRoute(cfg)
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("got %v, want an error wrapping ErrUnsupported", err)
			}
			return
		}
		for _, r := range []Request{http(frontend, "GET", "/hello?x"), http(plaintext, "POST", "/"), tcp(bot), tcp(plaintext)} {
			e.Evaluate(r)
		}
	})
}

// FuzzRoundTrip decodes policies from YAML, as mesh.yaml holds them, and
// checks that every valid set compiles through ForService and FromRoute
// and decides a request as the model (Istio's semantics, refDecide) does.
func FuzzRoundTrip(f *testing.F) {
	f.Add(meshYAML, frontend, "GET", "/hello/x?y", false)
	f.Add(meshYAML, bot, "POST", "/health", true)
	f.Add(`
- {name: a, services: [greeter], rules: [{from: [{notPrincipals: ["*/sa/x"], namespaces: ["team-*"]}], to: [{paths: ["*.json", "*"]}]}]}
- {name: b, action: DENY, rules: [{from: [{notNamespaces: ["*"]}], to: [{methods: [PUT], notPaths: ["/a*"]}]}]}
`, spiffe("team-1", "y"), "PUT", "/b.json", false)
	f.Add(`[{name: c, rules: [{}]}, {name: d, action: DENY, rules: [{to: [{notMethods: [GET]}]}]}]`, "", "GET", "/", true)
	f.Fuzz(func(t *testing.T, doc, principal, method, path string, isTCP bool) {
		var policies []Policy
		if err := yaml.Unmarshal([]byte(doc), &policies); err != nil {
			return
		}
		valid := true
		for i := range policies {
			if policies[i].AppliesTo("default", "greeter") && policies[i].Validate() != nil {
				valid = false
			}
		}
		cfg, err := ForService(policies, "default", "greeter", td)
		if !valid {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ForService of invalid policies: got %v, want an error wrapping ErrInvalid", err)
			}
			return
		}
		if errors.Is(err, ErrInvalid) && strings.Contains(err.Error(), "defined twice") {
			return
		}
		if err != nil {
			t.Fatalf("ForService of valid policies: %v", err)
		}
		for name, a := range cfg {
			var fc rbachttpv3.RBACPerRoute
			if err := unwrapPerRoute(a, &fc); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := fc.ValidateAll(); err != nil {
				t.Fatalf("%s: got config Envoy refuses: %v", name, err)
			}
		}
		e, err := FromRoute(cfg)
		if err != nil {
			t.Fatalf("FromRoute of what ForService wrote: %v", err)
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r := Request{Principal: principal, Method: method, Path: path, TCP: isTCP}
		if isTCP {
			r.Method, r.Path = "", ""
		}
		if got, want := e.Evaluate(r).Allowed, refDecide(policies, r); got != want {
			t.Fatalf("Evaluate(%+v): got allowed %v, want %v", r, got, want)
		}
	})
}

func unwrapPerRoute(a *anypb.Any, out *rbachttpv3.RBACPerRoute) error {
	var fc routev3.FilterConfig
	if err := a.UnmarshalTo(&fc); err != nil {
		return err
	}
	if !fc.GetIsOptional() {
		return errors.New("filter config not optional")
	}
	return fc.GetConfig().UnmarshalTo(out)
}

// refDecide is the model's decision for default/greeter, written from
// Istio's documentation independently of the RBAC form.
func refDecide(policies []Policy, r Request) bool {
	var hasAllow, allowMatch bool
	for i := range policies {
		p := &policies[i]
		if !p.AppliesTo("default", "greeter") {
			continue
		}
		deny := p.action() == ActionDeny
		matched := slices.ContainsFunc(p.Rules, func(rule Rule) bool { return refRule(&rule, r, deny) })
		if deny && matched {
			return false
		}
		if !deny {
			hasAllow = true
			allowMatch = allowMatch || matched
		}
	}
	return !hasAllow || allowMatch
}

func refRule(rule *Rule, r Request, deny bool) bool {
	from := len(rule.From) == 0 || slices.ContainsFunc(rule.From, func(s Source) bool { return refSource(&s, r.Principal) })
	if !from {
		return false
	}
	if len(rule.To) == 0 {
		return true
	}
	if r.TCP {
		// Every operation names a method or a path (Validate refuses empty
		// ones): ALLOW never matches TCP, DENY ignores them.
		return deny
	}
	path, _, _ := strings.Cut(r.Path, "?")
	path, _, _ = strings.Cut(path, "#")
	return slices.ContainsFunc(rule.To, func(o Operation) bool {
		return refList(o.Methods, false, func(v string) bool { return v == r.Method }) &&
			refList(o.NotMethods, true, func(v string) bool { return v == r.Method }) &&
			refList(o.Paths, false, func(v string) bool { return refPattern(v, path) }) &&
			refList(o.NotPaths, true, func(v string) bool { return refPattern(v, path) })
	})
}

func refSource(s *Source, principal string) bool {
	authenticated := principal != ""
	ns, hasNS := refNamespace(principal)
	principalIs := func(v string) bool {
		if v == "*" {
			return authenticated && strings.HasPrefix(principal, "spiffe://")
		}
		return authenticated && refPattern(v, principal)
	}
	namespaceIs := func(v string) bool {
		switch {
		case !hasNS:
			return false
		case v == "*":
			return true
		case strings.HasSuffix(v, "*"):
			return strings.HasPrefix(ns.name, strings.TrimSuffix(v, "*"))
		}
		return ns.name == v && ns.more
	}
	return refList(s.Principals, false, principalIs) && refList(s.NotPrincipals, true, principalIs) &&
		refList(s.Namespaces, false, namespaceIs) && refList(s.NotNamespaces, true, namespaceIs)
}

// refList: an empty list matches; a list when a value matches; a Not list
// when none does.
func refList(values []string, not bool, match func(string) bool) bool {
	if len(values) == 0 {
		return true
	}
	return slices.ContainsFunc(values, match) != not
}

func refPattern(v, s string) bool {
	switch {
	case v == "*":
		return strings.HasPrefix(s, "/") // paths only; principals handle "*" themselves
	case strings.HasPrefix(v, "*"):
		return strings.HasSuffix(s, v[1:])
	case strings.HasSuffix(v, "*"):
		return strings.HasPrefix(s, v[:len(v)-1])
	}
	return s == v
}

type refNS struct {
	name string
	more bool // the ID goes on after the namespace segment
}

// refNamespace returns the namespace segment of a SPIFFE ID of the trust
// domain td.
func refNamespace(principal string) (refNS, bool) {
	rest, ok := strings.CutPrefix(principal, "spiffe://"+td+"/ns/")
	if !ok {
		return refNS{}, false
	}
	name, _, more := strings.Cut(rest, "/")
	return refNS{name: name, more: more}, true
}

package authz

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid authorization policy")

// DefaultNamespace is the namespace of a policy that names none.
const DefaultNamespace = "default"

// Action is what a policy does to the requests it matches.
type Action string

// The actions. The empty Action is ALLOW.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
)

// Policy is an authorization policy with Istio's AuthorizationPolicy
// semantics, enforced by the sidecar of the services it protects. Its yaml
// form is what mesh.yaml holds; its json form is the spec of the
// AuthorizationPolicy custom resource (whose metadata gives Name and
// Namespace).
type Policy struct {
	Name string `yaml:"name" json:"name,omitempty"`
	// Namespace of the services the policy protects; empty means
	// DefaultNamespace.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
	// Services names the services (in Namespace) the policy applies to;
	// empty: every service of the namespace.
	Services []string `yaml:"services" json:"services,omitempty"`
	// Action is ALLOW (the default when empty) or DENY.
	Action Action `yaml:"action" json:"action,omitempty"`
	// Rules: the policy matches a request when any rule does. A policy
	// with no rules matches nothing, so an ALLOW policy without rules
	// denies every request to its services, and `rules: [{}]` allows all.
	Rules []Rule `yaml:"rules" json:"rules,omitempty"`
}

// Rule matches a request that comes from any of From (or From is empty)
// and goes to any of To (or To is empty).
type Rule struct {
	From []Source    `yaml:"from" json:"from,omitempty"`
	To   []Operation `yaml:"to" json:"to,omitempty"`
}

// Source matches the peer of a request when every non-empty field
// matches: a list matches when any of its values does, a Not list when
// none does. The peer is known by the SPIFFE ID of its mutual TLS
// certificate.
//
// A plaintext peer has no identity: it matches no Principals and no
// Namespaces value, so it does match every NotPrincipals and NotNamespaces
// list. That is Istio's behaviour, and what makes
// `notPrincipals: ["*"]` in a DENY policy refuse plaintext peers.
type Source struct {
	// Principals are SPIFFE IDs, spiffe://TRUST_DOMAIN/ns/NS/sa/SA, or
	// patterns: "*" (any authenticated peer), "prefix*" (the prefix starts
	// with spiffe://) or "*suffix".
	Principals    []string `yaml:"principals" json:"principals,omitempty"`
	NotPrincipals []string `yaml:"notPrincipals" json:"notPrincipals,omitempty"`
	// Namespaces of the peer, read from its SPIFFE ID (of the mesh's trust
	// domain): names, "prefix*" or "*" (any namespace).
	Namespaces    []string `yaml:"namespaces" json:"namespaces,omitempty"`
	NotNamespaces []string `yaml:"notNamespaces" json:"notNamespaces,omitempty"`
}

// Operation matches what a request asks for, field by field as Source
// does. Its fields are HTTP's: a TCP connection never matches an Operation
// of an ALLOW policy, and is matched as if they were absent in a DENY
// policy, so both fail closed.
type Operation struct {
	// Methods are HTTP methods, matched exactly; gRPC calls are POST.
	Methods    []string `yaml:"methods" json:"methods,omitempty"`
	NotMethods []string `yaml:"notMethods" json:"notMethods,omitempty"`
	// Paths are matched against the request path without its query:
	// exact ("/hello"), "prefix*", "*suffix" or "*" (any path). gRPC
	// paths are /package.Service/Method.
	Paths    []string `yaml:"paths" json:"paths,omitempty"`
	NotPaths []string `yaml:"notPaths" json:"notPaths,omitempty"`
}

// Key returns "namespace/name", the name Decisions and logs use.
func (p *Policy) Key() string { return p.namespace() + "/" + p.Name }

func (p *Policy) namespace() string {
	if p.Namespace == "" {
		return DefaultNamespace
	}
	return p.Namespace
}

// action returns the policy's action with the default applied.
func (p *Policy) action() Action {
	if p.Action == "" {
		return ActionAllow
	}
	return p.Action
}

// AppliesTo reports whether p protects service of namespace.
func (p *Policy) AppliesTo(namespace, service string) bool {
	return p.namespace() == namespace && (len(p.Services) == 0 || slices.Contains(p.Services, service))
}

// Validate checks p: a DNS-1123 subdomain name, DNS-1123 label namespace
// and services, action ALLOW or DENY, no empty source or operation, SPIFFE
// IDs or patterns as principals, namespace names or patterns, upper-case
// method tokens and paths or path patterns. Its errors wrap ErrInvalid and
// name the policy and the field.
func (p *Policy) Validate() error {
	if p.Name == "" {
		return p.invalid("name", "required")
	}
	if msgs := dnsSubdomain(p.Name); len(msgs) > 0 {
		return p.invalid("name", "%q: %s", p.Name, strings.Join(msgs, "; "))
	}
	if p.Namespace != "" {
		if msgs := dnsLabel(p.Namespace); len(msgs) > 0 {
			return p.invalid("namespace", "%q: %s", p.Namespace, strings.Join(msgs, "; "))
		}
	}
	for i, s := range p.Services {
		if msgs := dnsLabel(s); len(msgs) > 0 {
			return p.invalid(fmt.Sprintf("services[%d]", i), "%q: %s", s, strings.Join(msgs, "; "))
		}
	}
	switch p.Action {
	case "", ActionAllow, ActionDeny:
	default:
		return p.invalid("action", "%q: want ALLOW or DENY", p.Action)
	}
	for i := range p.Rules {
		if err := p.validateRule(fmt.Sprintf("rules[%d]", i), &p.Rules[i]); err != nil {
			return err
		}
	}
	return nil
}

func (p *Policy) validateRule(field string, r *Rule) error {
	for i := range r.From {
		s := &r.From[i]
		f := fmt.Sprintf("%s.from[%d]", field, i)
		if len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces) == 0 {
			return p.invalid(f, "empty source; leave from out to match every source")
		}
		lists := []struct {
			name   string
			values []string
			check  func(string) error
		}{
			{"principals", s.Principals, checkPrincipal},
			{"notPrincipals", s.NotPrincipals, checkPrincipal},
			{"namespaces", s.Namespaces, checkNamespace},
			{"notNamespaces", s.NotNamespaces, checkNamespace},
		}
		for _, l := range lists {
			if err := p.checkList(f+"."+l.name, l.values, l.check); err != nil {
				return err
			}
		}
	}
	for i := range r.To {
		o := &r.To[i]
		f := fmt.Sprintf("%s.to[%d]", field, i)
		if len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0 {
			return p.invalid(f, "empty operation; leave to out to match every operation")
		}
		lists := []struct {
			name   string
			values []string
			check  func(string) error
		}{
			{"methods", o.Methods, checkMethod},
			{"notMethods", o.NotMethods, checkMethod},
			{"paths", o.Paths, checkPath},
			{"notPaths", o.NotPaths, checkPath},
		}
		for _, l := range lists {
			if err := p.checkList(f+"."+l.name, l.values, l.check); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Policy) checkList(field string, values []string, check func(string) error) error {
	for i, v := range values {
		if err := check(v); err != nil {
			return p.invalid(fmt.Sprintf("%s[%d]", field, i), "%q: %v", v, err)
		}
	}
	return nil
}

// invalid returns an error wrapping ErrInvalid that names the policy and
// the field.
func (p *Policy) invalid(field, format string, args ...any) error {
	name := p.Name
	if name == "" {
		name = "(unnamed)"
	}
	if p.Namespace != "" {
		name = p.Namespace + "/" + name
	}
	return fmt.Errorf("%w %s: %s: %s", ErrInvalid, name, field, fmt.Sprintf(format, args...))
}

// pattern is how a value with '*' wildcards matches.
type pattern int

const (
	patExact  pattern = iota
	patPrefix         // "value*"
	patSuffix         // "*value"
	patAny            // "*"
)

// splitPattern returns the kind of v and its value without the '*'.
func splitPattern(v string) (pattern, string, error) {
	switch {
	case v == "":
		return 0, "", errors.New("empty")
	case v == "*":
		return patAny, "", nil
	case strings.Count(v, "*") > 1:
		return 0, "", errors.New("at most one '*', at the start or the end")
	case strings.HasPrefix(v, "*"):
		return patSuffix, v[1:], nil
	case strings.HasSuffix(v, "*"):
		return patPrefix, v[:len(v)-1], nil
	case strings.Contains(v, "*"):
		return 0, "", errors.New("'*' only at the start or the end")
	}
	return patExact, v, nil
}

// checkPrincipal accepts SPIFFE IDs and the patterns of Source.Principals.
func checkPrincipal(v string) error {
	kind, s, err := splitPattern(v)
	if err != nil {
		return err
	}
	if strings.ContainsFunc(s, badChar) {
		return errors.New("space or control character")
	}
	switch kind {
	case patExact:
		return checkSPIFFE(s)
	case patPrefix:
		if !strings.HasPrefix(s, "spiffe://") {
			return errors.New("a prefix pattern starts with spiffe://")
		}
	}
	return nil
}

// checkSPIFFE accepts spiffe://TRUST_DOMAIN/PATH with a trust domain of
// lower-case letters, digits, '.', '-' and '_' and a path of non-empty
// segments of letters, digits, '.', '-' and '_'.
func checkSPIFFE(s string) error {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return errors.New("not a SPIFFE ID (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT) nor a pattern")
	}
	td, path, ok := strings.Cut(rest, "/")
	if td == "" || !ok || path == "" {
		return errors.New("a SPIFFE ID needs a trust domain and a path")
	}
	if err := checkTDChars(td); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("path segment %q not allowed", seg)
		}
		for _, r := range seg {
			if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '-' && r != '_' {
				return fmt.Errorf("path segment %q: character %q not allowed", seg, r)
			}
		}
	}
	return nil
}

func checkTDChars(td string) error {
	for _, r := range td {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '.' && r != '-' && r != '_' {
			return fmt.Errorf("trust domain %q: character %q not allowed", td, r)
		}
	}
	return nil
}

// checkNamespace accepts namespace names, "prefix*" and "*". A suffix
// pattern cannot be written as the prefix match namespaces compile to.
func checkNamespace(v string) error {
	kind, s, err := splitPattern(v)
	if err != nil {
		return err
	}
	switch kind {
	case patSuffix:
		return errors.New("namespaces take names, \"prefix*\" or \"*\", not \"*suffix\"")
	case patPrefix:
		for _, r := range s {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("character %q not allowed in a namespace", r)
			}
		}
	case patExact:
		if msgs := dnsLabel(s); len(msgs) > 0 {
			return errors.New(strings.Join(msgs, "; "))
		}
	}
	return nil
}

// checkMethod accepts upper-case HTTP method tokens.
func checkMethod(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	for i, r := range v {
		if (r < 'A' || r > 'Z') && (i == 0 || (r < '0' || r > '9') && r != '-' && r != '_') {
			return errors.New("not an upper-case method name such as GET")
		}
	}
	return nil
}

// checkPath accepts paths starting with '/', the same as "prefix*",
// "*suffix" and "*". A query or fragment never matches: paths are
// matched without them.
func checkPath(v string) error {
	kind, s, err := splitPattern(v)
	if err != nil {
		return err
	}
	if strings.ContainsFunc(s, badChar) {
		return errors.New("space or control character")
	}
	if strings.ContainsAny(s, "?#") {
		return errors.New("paths are matched without the query; remove '?' or '#'")
	}
	if (kind == patExact || kind == patPrefix) && !strings.HasPrefix(s, "/") {
		return errors.New("a path starts with '/' (or is \"*suffix\" or \"*\")")
	}
	return nil
}

func badChar(r rune) bool { return r <= ' ' || r == 0x7f }

// dnsLabelRE is an RFC 1123 label, as Kubernetes names namespaces and
// Services. (Not k8s.io's validation: the sidecar links this package and
// must not link apimachinery.)
var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// dnsLabel returns why s is not an RFC 1123 label; nil when it is.
func dnsLabel(s string) []string {
	if len(s) > 63 {
		return []string{"must be no more than 63 characters"}
	}
	if !dnsLabelRE.MatchString(s) {
		return []string{"must be lower-case letters, digits and '-', starting and ending with a letter or digit"}
	}
	return nil
}

// dnsSubdomain returns why s is not an RFC 1123 subdomain (labels joined
// by dots, at most 253 characters); nil when it is.
func dnsSubdomain(s string) []string {
	if len(s) > 253 {
		return []string{"must be no more than 253 characters"}
	}
	for _, l := range strings.Split(s, ".") {
		if msgs := dnsLabel(l); msgs != nil {
			return []string{"each dot-separated part " + msgs[0]}
		}
	}
	return nil
}

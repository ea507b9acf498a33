package authz

import (
	"errors"
	"strings"
)

// ErrUnsupported is wrapped by the errors of FromRoute: the config is not
// the RBAC ForService writes, so the sidecar cannot enforce it exactly and
// must refuse it.
var ErrUnsupported = errors.New("unsupported RBAC config")

// The reasons of decisions not made by a policy.
const (
	ReasonDefault      = "allowed by default: no DENY policy matched and no ALLOW policy applies"
	ReasonNoAllowMatch = "no ALLOW policy matched"
)

// Request is what a decision is made on.
type Request struct {
	// Principal is the peer's SPIFFE ID, "" when the peer is not
	// authenticated (plaintext).
	Principal string
	// Method and Path of an HTTP request (Path may carry a query, which
	// is ignored); empty for TCP.
	Method, Path string
	// TCP marks a connection that is not HTTP.
	TCP bool
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Allowed bool
	// Policy is the "namespace/name" of the policy that decided; "" when
	// the request was decided by default.
	Policy string
	// Reason explains the decision, as "denied by default/deny-bots/rules[0]"
	// or ReasonNoAllowMatch.
	Reason string
}

// Engine decides the requests to one service (one virtual host). It is
// immutable and safe for concurrent use; a nil *Engine allows everything.
type Engine struct {
	deny  []policy // policies of the DENY filter, by name
	allow []policy // of the ALLOW filter
	// hasAllow is set when there is an ALLOW filter, even one without
	// policies (which denies every request).
	hasAllow bool
}

// policy is one compiled Envoy policy: it matches when one of its
// permissions and one of its principals do.
type policy struct {
	key     string // "namespace/name"
	reason  string // "denied by " or "allowed by " and the Envoy policy's name
	perms   []perm
	sources []principal
}

type permOp uint8

const (
	permAny permOp = iota
	permAnd
	permOr
	permNot
	permMethod
	permPath
)

// perm is a compiled Permission.
type perm struct {
	op    permOp
	rules []perm // of And, Or; Not has one
	match stringMatch
	// hasHTTP: a Method or Path rule is in the subtree; onlyHTTP: every
	// leaf of the subtree is one.
	hasHTTP, onlyHTTP bool
}

type principalOp uint8

const (
	idAny principalOp = iota
	idAnd
	idOr
	idNot
	idAuthenticated
)

// principal is a compiled Principal.
type principal struct {
	op    principalOp
	ids   []principal
	match stringMatch
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
)

type stringMatch struct {
	kind matchKind
	s    string
}

func (m *stringMatch) matches(v string) bool {
	switch m.kind {
	case matchPrefix:
		return strings.HasPrefix(v, m.s)
	case matchSuffix:
		return strings.HasSuffix(v, m.s)
	}
	return v == m.s
}

// Evaluate decides r: denied when a DENY policy matches; otherwise, when
// there are ALLOW policies, allowed only if one matches; otherwise
// allowed. It does not allocate.
func (e *Engine) Evaluate(r Request) Decision {
	if e == nil {
		return Decision{Allowed: true, Reason: ReasonDefault}
	}
	path := r.Path
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	for i := range e.deny {
		if p := &e.deny[i]; p.matches(&r, path, true) {
			return Decision{Policy: p.key, Reason: p.reason}
		}
	}
	if !e.hasAllow {
		return Decision{Allowed: true, Reason: ReasonDefault}
	}
	for i := range e.allow {
		if p := &e.allow[i]; p.matches(&r, path, false) {
			return Decision{Allowed: true, Policy: p.key, Reason: p.reason}
		}
	}
	return Decision{Reason: ReasonNoAllowMatch}
}

// matches reports whether one of p's principals and one of its
// permissions match. For TCP both fail closed: in an ALLOW policy a
// permission with an HTTP rule never matches; in a DENY policy the
// HTTP-only parts of a permission are taken as matching.
func (p *policy) matches(r *Request, path string, deny bool) bool {
	ok := false
	for i := range p.sources {
		if p.sources[i].matches(r.Principal) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for i := range p.perms {
		pm := &p.perms[i]
		switch {
		case !r.TCP:
			ok = pm.matches(r.Method, path)
		case deny:
			ok = pm.matchesTCPDeny()
		default:
			ok = !pm.hasHTTP && pm.matches("", "")
		}
		if ok {
			return true
		}
	}
	return false
}

func (p *perm) matches(method, path string) bool {
	switch p.op {
	case permAny:
		return true
	case permAnd:
		for i := range p.rules {
			if !p.rules[i].matches(method, path) {
				return false
			}
		}
		return true
	case permOr:
		for i := range p.rules {
			if p.rules[i].matches(method, path) {
				return true
			}
		}
		return false
	case permNot:
		return !p.rules[0].matches(method, path)
	case permMethod:
		return p.match.matches(method)
	case permPath:
		return p.match.matches(path)
	}
	return false
}

// matchesTCPDeny is matches for a TCP connection in a DENY policy: a
// subtree of HTTP rules only (a method or path condition, or its negation)
// is dropped, that is, matches.
func (p *perm) matchesTCPDeny() bool {
	if p.onlyHTTP {
		return true
	}
	switch p.op {
	case permAny:
		return true
	case permAnd:
		for i := range p.rules {
			if !p.rules[i].matchesTCPDeny() {
				return false
			}
		}
		return true
	case permOr:
		for i := range p.rules {
			if p.rules[i].matchesTCPDeny() {
				return true
			}
		}
		return false
	case permNot:
		return !p.rules[0].matchesTCPDeny()
	}
	return false
}

func (p *principal) matches(id string) bool {
	switch p.op {
	case idAny:
		return true
	case idAnd:
		for i := range p.ids {
			if !p.ids[i].matches(id) {
				return false
			}
		}
		return true
	case idOr:
		for i := range p.ids {
			if p.ids[i].matches(id) {
				return true
			}
		}
		return false
	case idNot:
		return !p.ids[0].matches(id)
	case idAuthenticated:
		return id != "" && p.match.matches(id)
	}
	return false
}

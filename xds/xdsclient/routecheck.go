package xdsclient

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"strings"
)

// The checks a route's values pass, the same in the translator (which
// answers 500 for a rule that fails one, and says so in the route's
// status) and in the sidecar (which does the same for a route it is sent
// that fails one, rather than refuse the whole configuration): one
// contract, so that what the control plane accepts a sidecar follows.

// Bounds on a route's regular expressions: each one, and all of one
// route configuration together, counted in RE2 program instructions
// (what compiling costs in time and memory; `.{1000}` repeated is small
// as text and large as a program).
const (
	MaxRegexLen   = 1024
	MaxRegexInsts = 2000
	// MaxRouteInsts bounds one Gateway API route's regular expressions
	// (the translator's budget), MaxRouteConfigInsts one route
	// configuration's (the sidecar's).
	MaxRouteInsts        = 20_000
	MaxRouteConfigInsts  = 50_000
	maxHeaderValueLength = 4096
	maxPathLength        = 1024
)

// ErrRouteValue wraps every value a route may not carry.
var ErrRouteValue = errors.New("route value refused")

// RegexInsts checks a regular expression (RE2 syntax, Perl flags, as
// Envoy's safe_regex and Go's regexp take it) and returns the size of its
// program.
func RegexInsts(re string) (int, error) {
	if len(re) > MaxRegexLen {
		return 0, fmt.Errorf("%w: regular expression of %d bytes (at most %d)", ErrRouteValue, len(re), MaxRegexLen)
	}
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return 0, fmt.Errorf("%w: regular expression: %w", ErrRouteValue, err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return 0, fmt.Errorf("%w: regular expression: %w", ErrRouteValue, err)
	}
	if n := len(prog.Inst); n > MaxRegexInsts {
		return 0, fmt.Errorf("%w: regular expression of %d instructions (at most %d)", ErrRouteValue, n, MaxRegexInsts)
	}
	return len(prog.Inst), nil
}

// fieldNames the routes may not edit: framing and connection-level
// fields (a removed Content-Length would let a body run as the next
// request), the authority (rewritten with the host rewrite, not as a
// header) and tender's own peer header.
var protectedFields = map[string]bool{
	"content-length": true, "transfer-encoding": true, "connection": true, "keep-alive": true,
	"proxy-connection": true, "upgrade": true, "te": true, "trailer": true, "host": true,
	"x-tender-peer": true,
}

// CheckHeaderName checks the name of a header a route sets, adds or
// removes: an HTTP token, not a pseudo-header, not a protected field.
func CheckHeaderName(name string) error {
	if name == "" || len(name) > 256 {
		return fmt.Errorf("%w: header name %q", ErrRouteValue, name)
	}
	for i := range len(name) {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("%w: header name %q is not an HTTP token", ErrRouteValue, name)
		}
	}
	if protectedFields[strings.ToLower(name)] {
		return fmt.Errorf("%w: header %s cannot be edited by a route", ErrRouteValue, name)
	}
	return nil
}

// CheckHeaderValue checks a header value a route sets: visible
// characters, spaces and tabs only.
func CheckHeaderValue(v string) error {
	if len(v) > maxHeaderValueLength {
		return fmt.Errorf("%w: header value of %d bytes", ErrRouteValue, len(v))
	}
	for i := range len(v) {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: header value with a control character", ErrRouteValue)
		}
	}
	return nil
}

// CheckPath checks a path a route rewrites or redirects to (or the
// substitution that makes one): it starts with '/' and holds only what
// an RFC 3986 path may, percent-encoded bytes included.
func CheckPath(p string) error {
	if !strings.HasPrefix(p, "/") || len(p) > maxPathLength {
		return fmt.Errorf("%w: path %q", ErrRouteValue, p)
	}
	for i := range len(p) {
		if !isPathChar(p[i]) {
			return fmt.Errorf("%w: path %q has a character a path cannot hold", ErrRouteValue, p)
		}
	}
	return nil
}

// CheckHost checks a host a route rewrites or redirects to: a DNS name
// or an IP literal, without a port.
func CheckHost(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%w: host %q", ErrRouteValue, h)
	}
	for i := range len(h) {
		if !isHostChar(h[i]) {
			return fmt.Errorf("%w: host %q", ErrRouteValue, h)
		}
	}
	return nil
}

// CheckScheme checks a redirect's scheme.
func CheckScheme(s string) error {
	if s != "http" && s != "https" {
		return fmt.Errorf("%w: scheme %q (want http or https)", ErrRouteValue, s)
	}
	return nil
}

// isHostChar: a DNS name's characters, and an IPv6 literal's.
func isHostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-.[]:", c) >= 0
}

func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// CheckSubstitution checks a regex rewrite's substitution: a path once
// its group references (\1) are taken out.
func CheckSubstitution(s string) error {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			if i+1 < len(s) && '0' <= s[i+1] && s[i+1] <= '9' {
				i++
				continue
			}
			return fmt.Errorf("%w: substitution %q: a backslash that is not a group reference", ErrRouteValue, s)
		}
		b.WriteByte(s[i])
	}
	if b.Len() == 0 {
		return nil // the whole path from groups
	}
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "\\") {
		return fmt.Errorf("%w: substitution %q does not start with /", ErrRouteValue, s)
	}
	for i := range b.Len() {
		if c := b.String()[i]; !isPathChar(c) {
			return fmt.Errorf("%w: substitution %q has a character a path cannot hold", ErrRouteValue, s)
		}
	}
	return nil
}

// isPathChar: unreserved, sub-delims, ':', '@', '/' and '%'.
func isPathChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~!$&'()*+,;=:@/%", c) >= 0
}

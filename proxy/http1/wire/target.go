package wire

import (
	"bytes"
	"net/netip"
)

// requestTarget checks request-target (RFC 9112 §3.2) in the form method
// calls for:
//
//	request-target = origin-form / absolute-form / authority-form / asterisk-form
//
// authority-form is CONNECT's only form, asterisk-form OPTIONS's.
func requestTarget(method, t []byte) error {
	switch {
	case len(t) == 0:
		return errTarget
	case string(method) == "CONNECT":
		return authorityForm(t)
	case t[0] == '/':
		return originForm(t)
	case len(t) == 1 && t[0] == '*':
		return asteriskForm(method)
	}
	return absoluteForm(t)
}

// originForm checks origin-form = absolute-path [ "?" query ] (RFC 9112
// §3.2.1).
func originForm(t []byte) error { return pathQuery(t) }

// asteriskForm checks asterisk-form = "*" (RFC 9112 §3.2.4), for OPTIONS
// only.
func asteriskForm(method []byte) error {
	if string(method) != "OPTIONS" {
		return errAsterisk
	}
	return nil
}

// authorityForm checks authority-form = uri-host ":" port (RFC 9112 §3.2.3).
func authorityForm(t []byte) error { return authority(t, true) }

// absoluteForm checks absolute-form = absolute-URI (RFC 9112 §3.2.2):
//
//	absolute-URI = scheme ":" hier-part [ "?" query ] (RFC 3986 §4.3)
//	hier-part    = "//" authority path-abempty / path-absolute / path-rootless / path-empty
func absoluteForm(t []byte) error {
	colon := bytes.IndexByte(t, ':')
	if colon < 0 || !scheme(t[:colon]) {
		return errTarget
	}
	rest := t[colon+1:]
	if len(rest) >= 2 && rest[0] == '/' && rest[1] == '/' {
		rest = rest[2:]
		end := bytes.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		if err := authority(rest[:end], false); err != nil {
			return err
		}
		rest = rest[end:]
	}
	return pathQuery(rest)
}

// scheme checks scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC
// 3986 §3.1).
func scheme(s []byte) bool {
	if len(s) == 0 || !isAlpha(s[0]) {
		return false
	}
	for _, c := range s[1:] {
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= lower(c) && lower(c) <= 'z' }

// authority checks
//
//	authority = [ userinfo "@" ] host [ ":" port ] (RFC 3986 §3.2)
//	host      = IP-literal / reg-name
//
// refusing userinfo (RFC 9110 §4.2.4), an empty host (RFC 9110 §4.2.1),
// percent-encoding in the host, IPvFuture and IPv6 zones; a port is
// required in authority-form.
func authority(a []byte, needPort bool) error {
	if bytes.IndexByte(a, '@') >= 0 {
		return errUserinfo
	}
	var port []byte
	if len(a) > 0 && a[0] == '[' {
		end := bytes.IndexByte(a, ']')
		if end < 0 || !ipLiteral(a[1:end]) {
			return errTarget
		}
		port = a[end+1:]
	} else {
		end := bytes.IndexByte(a, ':')
		if end < 0 {
			end = len(a)
		}
		if end == 0 || !all(a[:end], cRegName) {
			return errTarget
		}
		port = a[end:]
	}
	// port = *DIGIT (RFC 3986 §3.2.3), after a colon.
	switch {
	case len(port) == 0:
		if needPort {
			return errTarget
		}
	case port[0] != ':' || !all(port[1:], cDigit) || needPort && len(port) == 1:
		return errTarget
	}
	return nil
}

// ipLiteral checks the inside of IP-literal = "[" IPv6address "]" (RFC 3986
// §3.2.2).
func ipLiteral(a []byte) bool {
	if bytes.IndexByte(a, '%') >= 0 {
		return false // a zone (RFC 6874)
	}
	ip, err := netip.ParseAddr(string(a))
	return err == nil && ip.Is6()
}

// pathQuery checks a path and its optional query, path [ "?" query ] (RFC
// 3986 §3.3, §3.4): bytes of cTarget (obs-text tolerated, as net/http
// does), pct-encoded triplets well formed in the path, no fragment.
func pathQuery(t []byte) error {
	inQuery := false
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case !is(c, cTarget) || c == '#':
			return errTarget
		case c == '?':
			inQuery = true
		case c == '%' && !inQuery:
			// pct-encoded = "%" HEXDIG HEXDIG (RFC 3986 §2.1)
			if i+2 >= len(t) || !is(t[i+1], cHex) || !is(t[i+2], cHex) {
				return errTarget
			}
			i += 2
		}
	}
	return nil
}

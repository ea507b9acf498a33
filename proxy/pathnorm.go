package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// normalizePath gives the path an authorization policy checks and the app
// receives, the same one: dot segments resolved and slashes merged (as
// Istio normalises before its checks), the request rewritten when that
// changed it. A '?' or '#' that came percent-encoded stays encoded for the
// check, so it cannot end the path early. ok is false for an encoded
// slash or backslash, which servers disagree on.
func normalizePath(r *http.Request) (string, bool) {
	esc := r.URL.EscapedPath()
	if strings.Contains(esc, "%") {
		lower := strings.ToLower(esc)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			return "", false
		}
	}
	p := r.URL.Path
	clean := cleanPath(p)
	if clean != p {
		r.URL.Path, r.URL.RawPath = clean, ""
	}
	if strings.ContainsAny(clean, "?#") {
		clean = strings.NewReplacer("?", "%3F", "#", "%23").Replace(clean)
	}
	return clean, true
}

// cleanPath resolves "." and ".." segments and merges repeated slashes;
// a trailing slash stays. The result starts with '/'.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	trailing := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	clean := "/" + strings.Join(out, "/")
	if trailing && clean != "/" {
		clean += "/"
	}
	return clean
}

// normalizeEscapedPath is normalizePath for a path as sent (percent-
// encoded): it returns the path the policy checks, the path to forward
// (esc itself when normalising changed nothing), and ok false for an
// encoded slash or backslash or a bad escape.
func normalizeEscapedPath(esc string) (check, forward string, ok bool) {
	if strings.Contains(esc, "%") {
		lower := strings.ToLower(esc)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
			return "", "", false
		}
	}
	p, err := url.PathUnescape(esc)
	if err != nil {
		return "", "", false
	}
	clean := cleanPath(p)
	forward = esc
	if clean != p {
		forward = (&url.URL{Path: clean}).EscapedPath()
	}
	if strings.ContainsAny(clean, "?#") {
		clean = strings.NewReplacer("?", "%3F", "#", "%23").Replace(clean)
	}
	return clean, forward, true
}

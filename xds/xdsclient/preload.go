package xdsclient

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// MaxPreload bounds the services one sidecar preloads.
const MaxPreload = 256

// ParsePreload reads a preload list (the sidecar's --preload, the
// injector's tender.dev/preload): comma-separated HOST:PORT, a service's
// host name and port. It returns each as the route configuration name
// the control plane serves (lower case, the port in decimal).
func ParsePreload(v string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		host, port, err := net.SplitHostPort(e)
		n, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || n == 0 || !validHost(host) {
			return nil, fmt.Errorf("%.80q: want HOST:PORT, a service's host name and port (greeter.default.svc.cluster.local:8080)", e)
		}
		out = append(out, strings.ToLower(host)+":"+strconv.FormatUint(n, 10))
	}
	if len(out) > MaxPreload {
		return nil, fmt.Errorf("%d services, more than %d", len(out), MaxPreload)
	}
	return out, nil
}

// validHost reports whether h is a DNS name (RFC 1123 labels).
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' || strings.ContainsFunc(l, notLabelRune) {
			return false
		}
	}
	return true
}

// notLabelRune reports whether r may not be in a DNS label.
func notLabelRune(r rune) bool {
	return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-'
}

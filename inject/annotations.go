package inject

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tender-mesh/tender/inject/capture"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// Limits on what a pod's tender.dev annotations may hold. Each value is
// checked for length and syntax before any parser sees it, then for
// range: an annotation is written by whoever may create a pod, and the
// injector shares its process with xDS and the CA.
const (
	maxAnnotationBytes = 256  // a boolean, quantity, level or duration
	maxImageBytes      = 512  // an image reference (registry/name:tag@sha256:…)
	maxListBytes       = 1024 // a port or CIDR list
	maxListItems       = 64   // ports or CIDRs in one list
	maxQuantityBytes   = 24   // "999999999999.999999999Mi" and shorter
	maxCPU             = 1024 // cores, request or limit
	maxDrainTimeout    = time.Hour
)

// maxMemory is the largest memory request or limit taken, 1 TiB.
var maxMemory = resource.MustParse("1Ti")

// quantityRE is the subset of Kubernetes' quantity grammar the injector
// takes from an annotation: a plain decimal number and a binary or
// decimal suffix. The exponent forms ("1e3", "1e-999999999") are refused
// before resource.ParseQuantity, which computes 10^exponent (issue 22).
var quantityRE = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$`)

// imageRE is the character set and shape of an image reference.
var imageRE = regexp.MustCompile(`^[a-z0-9]([a-zA-Z0-9._/:@+-]*[a-zA-Z0-9])?$`)

// overrides are what a pod's annotations change in the injected sidecar;
// nil or zero fields leave the Config's value.
type overrides struct {
	image           string
	native          *bool
	excludeInbound  []int
	excludeOutbound []int
	excludeCIDRs    []string
	hasInbound      bool
	hasOutbound     bool
	hasCIDRs        bool
	cpu, mem        *resource.Quantity // requests
	cpuLim, memLim  *resource.Quantity // limits
	logLevel        string
	drain           *time.Duration
	inboundDeliver  string
	preload         string
}

// AnnotationError names an annotation the injector refuses and why.
type AnnotationError struct {
	Key, Value string
	Reason     string
}

func (e *AnnotationError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return fmt.Sprintf("annotation %s=%q: %s", e.Key, v, e.Reason)
}

// parseAnnotations checks every tender.dev annotation the injector reads
// and returns what they override.
func parseAnnotations(a map[string]string) (overrides, error) {
	var o overrides
	bad := func(key, reason string) error { return &AnnotationError{Key: key, Value: a[key], Reason: reason} }
	if v, ok := a[AnnotationInject]; ok {
		if _, err := parseBool(v); err != nil {
			return o, bad(AnnotationInject, err.Error())
		}
	}
	if v, ok := a[AnnotationProxyImage]; ok && v != "" {
		if len(v) > maxImageBytes || !imageRE.MatchString(v) {
			return o, bad(AnnotationProxyImage, fmt.Sprintf("want an image reference of at most %d bytes", maxImageBytes))
		}
		o.image = v
	}
	if v, ok := a[AnnotationNativeSidecar]; ok {
		b, err := parseBool(v)
		if err != nil {
			return o, bad(AnnotationNativeSidecar, err.Error())
		}
		o.native = &b
	}
	for _, x := range []struct {
		key   string
		ports *[]int
		has   *bool
	}{
		{AnnotationExcludeInbound, &o.excludeInbound, &o.hasInbound},
		{AnnotationExcludeOutbound, &o.excludeOutbound, &o.hasOutbound},
	} {
		v, ok := a[x.key]
		if !ok {
			continue
		}
		if err := checkList(v); err != nil {
			return o, bad(x.key, err.Error())
		}
		ports, err := capture.ParsePorts(v)
		if err != nil {
			return o, bad(x.key, err.Error())
		}
		*x.ports, *x.has = ports, true
	}
	if v, ok := a[AnnotationExcludeOutboundIPs]; ok {
		if err := checkList(v); err != nil {
			return o, bad(AnnotationExcludeOutboundIPs, err.Error())
		}
		prefixes, err := capture.ParseCIDRs(v)
		if err != nil {
			return o, bad(AnnotationExcludeOutboundIPs, err.Error())
		}
		o.excludeCIDRs = make([]string, len(prefixes))
		for i, p := range prefixes {
			o.excludeCIDRs[i] = p.String()
		}
		o.hasCIDRs = true
	}
	for _, x := range []struct {
		key string
		q   **resource.Quantity
		max resource.Quantity
	}{
		{AnnotationProxyCPU, &o.cpu, *resource.NewQuantity(maxCPU, resource.DecimalSI)},
		{AnnotationProxyMemory, &o.mem, maxMemory},
		{AnnotationProxyCPULimit, &o.cpuLim, *resource.NewQuantity(maxCPU, resource.DecimalSI)},
		{AnnotationProxyMemoryLimit, &o.memLim, maxMemory},
	} {
		v, ok := a[x.key]
		if !ok {
			continue
		}
		q, err := parseQuantity(v, x.max)
		if err != nil {
			return o, bad(x.key, err.Error())
		}
		*x.q = &q
	}
	for _, p := range []struct {
		key          string
		req, lim     *resource.Quantity
		reqKey, what string
	}{
		{AnnotationProxyCPULimit, o.cpu, o.cpuLim, AnnotationProxyCPU, "CPU"},
		{AnnotationProxyMemoryLimit, o.mem, o.memLim, AnnotationProxyMemory, "memory"},
	} {
		if p.req != nil && p.lim != nil && p.lim.Cmp(*p.req) < 0 {
			return o, bad(p.key, fmt.Sprintf("the %s limit is below the request %s=%s", p.what, p.reqKey, p.req.String()))
		}
	}
	if v, ok := a[AnnotationLogLevel]; ok {
		switch v {
		case "debug", "info", "warn", "error":
			o.logLevel = v
		default:
			return o, bad(AnnotationLogLevel, "want debug, info, warn or error")
		}
	}
	if v, ok := a[AnnotationInboundDeliver]; ok {
		switch v {
		case "pod-ip", "loopback":
			o.inboundDeliver = v
		default:
			return o, bad(AnnotationInboundDeliver, "want pod-ip or loopback")
		}
	}
	if v, ok := a[AnnotationPreload]; ok {
		p, err := xdsclient.ParsePreload(v)
		if err != nil {
			// The value is in the error already: a short reason.
			return o, bad(AnnotationPreload, fmt.Sprintf("want comma-separated HOST:PORT, a service's host name and port (greeter.default.svc.cluster.local:8080), at most %d", xdsclient.MaxPreload))
		}
		o.preload = strings.Join(p, ",")
	}
	if v, ok := a[AnnotationDrainTimeout]; ok {
		d, err := parseDrain(v)
		if err != nil {
			return o, bad(AnnotationDrainTimeout, err.Error())
		}
		o.drain = &d
	}
	return o, nil
}

// parseBool takes what strconv.ParseBool takes, bounded.
func parseBool(v string) (bool, error) {
	if len(v) > 5 {
		return false, fmt.Errorf("want true or false")
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("want true or false")
	}
	return b, nil
}

// checkList bounds a comma-separated list before it is parsed.
func checkList(v string) error {
	if len(v) > maxListBytes {
		return fmt.Errorf("longer than %d bytes", maxListBytes)
	}
	if n := strings.Count(v, ",") + 1; n > maxListItems {
		return fmt.Errorf("%d items, at most %d", n, maxListItems)
	}
	return nil
}

// parseQuantity reads a positive quantity no larger than limit, in the
// plain form quantityRE allows.
func parseQuantity(v string, limit resource.Quantity) (resource.Quantity, error) {
	if len(v) > maxQuantityBytes || !quantityRE.MatchString(v) {
		return resource.Quantity{}, fmt.Errorf("want a quantity such as 100m, 64Mi or 1 (a decimal number and a suffix, at most %d bytes)", maxQuantityBytes)
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return resource.Quantity{}, err
	}
	if q.Sign() <= 0 {
		return resource.Quantity{}, fmt.Errorf("must be above zero")
	}
	if q.Cmp(limit) > 0 {
		return resource.Quantity{}, fmt.Errorf("above the largest taken, %s", limit.String())
	}
	return q, nil
}

// parseDrain reads a drain timeout in [0, maxDrainTimeout].
func parseDrain(v string) (time.Duration, error) {
	if len(v) > maxAnnotationBytes {
		return 0, fmt.Errorf("longer than %d bytes", maxAnnotationBytes)
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxDrainTimeout {
		return 0, fmt.Errorf("want a duration such as 30s, at most %s", maxDrainTimeout)
	}
	return d, nil
}

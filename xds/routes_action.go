package xds

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// What a route rule does: its backends, filters, timeouts and retry, as
// an Envoy route action.

// invalidCluster names no cluster: the share of requests a rule sends to
// a backend that does not resolve gets 500 (RouteAction's
// cluster_not_found_response_code), as the Gateway API asks.
func invalidCluster(rt *discovery.Route, rule, idx int) string {
	return fmt.Sprintf("%s%s|%d|%d", xdsclient.InvalidClusterPrefix, rt.Key(), rule, idx)
}

// action builds the route every match of a rule shares (its Match is set
// per match).
func (b *routeBuilder) action(rt *discovery.Route, ruleIdx int, r *rule, svc *discovery.Service, port discovery.Port) *routev3.Route {
	route := &routev3.Route{}
	ra := &routev3.RouteAction{ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR}
	route.Action = &routev3.Route_Route{Route: ra}
	// The service's own resilience is the default of every rule.
	if err := setRouteResilience(route, &svc.Policy.Resilience); err != nil {
		b.fail(false, ReasonUnsupportedValue, "rule %d: %v", ruleIdx, err)
	}
	if h := svc.Policy.HashHeader; h != "" {
		ra.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h}}}}
	}
	var redirect *gwv1.HTTPRequestRedirectFilter
	broken := false // a filter the rule needs cannot be programmed: 500
	for _, f := range r.filters {
		switch {
		case f.kind == string(gwv1.HTTPRouteFilterRequestHeaderModifier) && f.reqHdr != nil:
			add, remove, host, err := headerEdits(f.reqHdr, true)
			if err != nil {
				b.fail(false, ReasonUnsupportedValue, "rule %d: RequestHeaderModifier: %v", ruleIdx, err)
				broken = true
				continue
			}
			if host != "" { // the authority is rewritten, as Envoy does it
				ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: host}
			}
			route.RequestHeadersToAdd = append(route.RequestHeadersToAdd, add...)
			route.RequestHeadersToRemove = append(route.RequestHeadersToRemove, remove...)
		case f.kind == string(gwv1.HTTPRouteFilterResponseHeaderModifier) && f.respHdr != nil:
			add, remove, _, err := headerEdits(f.respHdr, false)
			if err != nil {
				b.fail(false, ReasonUnsupportedValue, "rule %d: ResponseHeaderModifier: %v", ruleIdx, err)
				broken = true
				continue
			}
			route.ResponseHeadersToAdd = append(route.ResponseHeadersToAdd, add...)
			route.ResponseHeadersToRemove = append(route.ResponseHeadersToRemove, remove...)
		case f.kind == string(gwv1.HTTPRouteFilterRequestRedirect) && f.redirect != nil:
			if err := checkRedirect(f.redirect); err != nil {
				b.fail(false, ReasonUnsupportedValue, "rule %d: RequestRedirect: %v", ruleIdx, err)
				broken = true
				continue
			}
			if f.redirect.Path != nil && f.redirect.Path.Type == gwv1.PrefixMatchHTTPPathModifier {
				if _, ok := prefixOf(r.matches); !ok {
					b.fail(false, ReasonUnsupportedValue, "rule %d: RequestRedirect: ReplacePrefixMatch needs every match of the rule to be the same PathPrefix", ruleIdx)
					broken = true
					continue
				}
			}
			redirect = f.redirect
		case f.kind == string(gwv1.HTTPRouteFilterURLRewrite) && f.rewrite != nil:
			if msg := setRewrite(ra, f.rewrite, r.matches); msg != "" {
				b.fail(false, ReasonUnsupportedValue, "rule %d: URLRewrite: %s", ruleIdx, msg)
				broken = true
			}
		case f.kind == string(gwv1.HTTPRouteFilterRequestMirror) && f.mirror != nil:
			cluster, reason, msg := b.backendCluster(rt, f.mirror.BackendRef)
			if reason != "" {
				b.fail(true, reason, "rule %d: mirror: %s", ruleIdx, msg)
				continue // a mirror that does not resolve mirrors nothing
			}
			mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: cluster}
			if fr := mirrorFraction(f.mirror); fr != nil {
				mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fr}
			}
			ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, mp)
		default:
			b.fail(false, ReasonUnsupportedValue, "rule %d: filter %s is not supported", ruleIdx, f.kind)
			broken = true
		}
	}
	setRuleResilience(ra, r, func(msg string) {
		b.fail(false, ReasonUnsupportedValue, "rule %d: %s", ruleIdx, msg)
	})
	if broken {
		return directResponse(route, 500)
	}
	if redirect != nil {
		route.Action = &routev3.Route_Redirect{Redirect: redirectAction(redirect, r.matches)}
		return route
	}
	var weighted []*routev3.WeightedCluster_ClusterWeight
	var total uint32
	for k, be := range r.backends {
		if be.weight <= 0 {
			continue // a weight of 0 takes no traffic
		}
		cluster, reason, msg := b.backendCluster(rt, be.ref)
		if reason == "" && be.filters > 0 {
			reason, msg = ReasonUnsupportedValue, "filters on a backendRef are not supported"
		}
		if reason != "" {
			b.fail(true, reason, "rule %d backendRef %d: %s", ruleIdx, k, msg)
			cluster = invalidCluster(rt, ruleIdx, k)
		}
		weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: cluster, Weight: wrapperspb.UInt32(uint32(be.weight))})
		total += uint32(be.weight)
	}
	switch {
	case total == 0:
		// No backend, or every weight 0: the Gateway API answers 500.
		return directResponse(route, 500)
	case len(weighted) == 1:
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: weighted[0].Name}
	default:
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	return route
}

// foreignService says why a route may not name svc ("" when it may): a
// route from a source other than mesh.yaml (the operator's file) names
// only services of its own source, so that whoever may write routes in a
// Kubernetes namespace cannot take over the Consul or Eureka services
// registered under the same name.
func foreignService(rt *discovery.Route, svc *discovery.Service) string {
	if rt.Source == "" || rt.Source == "file" || svc.Source == rt.Source {
		return ""
	}
	return fmt.Sprintf("Service %s comes from %s; a route from %s names only services of its own source", svc.Key(), svc.Source, rt.Source)
}

// backendCluster resolves a backend reference to its cluster name, or
// says why it does not resolve (a reason and a message).
func (b *routeBuilder) backendCluster(rt *discovery.Route, ref gwv1.BackendObjectReference) (cluster, reason, msg string) {
	routeNS := rt.Meta().Namespace
	if !isServiceRef(ref.Group, ref.Kind) {
		return "", ReasonInvalidKind, "only Services are supported as backends"
	}
	ns := routeNS
	if ref.Namespace != nil && string(*ref.Namespace) != "" {
		ns = string(*ref.Namespace)
	}
	if ns != routeNS {
		return "", ReasonRefNotPermitted, fmt.Sprintf("Service %s/%s is in another namespace (ReferenceGrant is not supported yet)", ns, ref.Name)
	}
	svc := b.services[ns+"/"+string(ref.Name)]
	if svc == nil {
		return "", ReasonBackendNotFound, fmt.Sprintf("Service %s/%s not found", ns, ref.Name)
	}
	if msg := foreignService(rt, svc); msg != "" {
		return "", ReasonBackendNotFound, msg
	}
	if ref.Port == nil {
		return "", ReasonUnsupportedValue, fmt.Sprintf("Service %s/%s: a backendRef needs a port", ns, ref.Name)
	}
	for _, p := range svc.Ports {
		if p.Number == uint32(*ref.Port) {
			return ClusterName(svc, p), "", ""
		}
	}
	return "", ReasonBackendNotFound, fmt.Sprintf("Service %s/%s has no port %d", ns, ref.Name, *ref.Port)
}

// headerEdits turns a header modifier into Envoy's headers to add and to
// remove, each checked as the sidecar checks them (xdsclient). On the
// request side a Host set is the authority's rewrite (host); Host may not
// be added or removed, nor may framing fields or tender's own.
func headerEdits(f *gwv1.HTTPHeaderFilter, request bool) (add []*corev3.HeaderValueOption, remove []string, host string, err error) {
	for _, h := range f.Set {
		name := strings.ToLower(string(h.Name))
		if request && name == "host" {
			if err := xdsclient.CheckHost(h.Value); err != nil {
				return nil, nil, "", err
			}
			host = h.Value
			continue
		}
		if err := errors.Join(xdsclient.CheckHeaderName(name), xdsclient.CheckHeaderValue(h.Value)); err != nil {
			return nil, nil, "", err
		}
		add = append(add, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range f.Add {
		name := strings.ToLower(string(h.Name))
		if err := errors.Join(xdsclient.CheckHeaderName(name), xdsclient.CheckHeaderValue(h.Value)); err != nil {
			return nil, nil, "", err
		}
		add = append(add, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	for _, n := range f.Remove {
		name := strings.ToLower(n)
		if err := xdsclient.CheckHeaderName(name); err != nil {
			return nil, nil, "", err
		}
		remove = append(remove, name)
	}
	return add, remove, host, nil
}

// checkRedirect checks a redirect's scheme, host and path as the sidecar
// does.
func checkRedirect(f *gwv1.HTTPRequestRedirectFilter) error {
	var errs []error
	if f.Scheme != nil {
		errs = append(errs, xdsclient.CheckScheme(*f.Scheme))
	}
	if f.Hostname != nil {
		errs = append(errs, xdsclient.CheckHost(string(*f.Hostname)))
	}
	if p := f.Path; p != nil {
		switch {
		case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
			errs = append(errs, xdsclient.CheckPath(*p.ReplaceFullPath))
		case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
			errs = append(errs, xdsclient.CheckPath(*p.ReplacePrefixMatch))
		default:
			errs = append(errs, fmt.Errorf("path modifier %q without its path", p.Type))
		}
	}
	return errors.Join(errs...)
}

// prefixOf is the PathPrefix the rule's matches share, for
// ReplacePrefixMatch; ok is false when they do not all match one prefix.
func prefixOf(matches []match) (string, bool) {
	prefix, ok := "", false
	for _, m := range matches {
		if !m.isPrefix || ok && m.prefix != prefix {
			return "", false
		}
		prefix, ok = m.prefix, true
	}
	return prefix, ok
}

// setRewrite programs a URLRewrite; it returns why it cannot, "" when it
// can.
func setRewrite(ra *routev3.RouteAction, f *gwv1.HTTPURLRewriteFilter, matches []match) string {
	if f.Hostname != nil {
		if err := xdsclient.CheckHost(string(*f.Hostname)); err != nil {
			return err.Error()
		}
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: string(*f.Hostname)}
	}
	if f.Path == nil {
		return ""
	}
	switch f.Path.Type {
	case gwv1.FullPathHTTPPathModifier:
		if f.Path.ReplaceFullPath == nil {
			return "ReplaceFullPath without a path"
		}
		if err := xdsclient.CheckPath(*f.Path.ReplaceFullPath); err != nil {
			return err.Error()
		}
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^/.*$"},
			Substitution: *f.Path.ReplaceFullPath,
		}
	case gwv1.PrefixMatchHTTPPathModifier:
		if f.Path.ReplacePrefixMatch == nil {
			return "ReplacePrefixMatch without a prefix"
		}
		if err := xdsclient.CheckPath(*f.Path.ReplacePrefixMatch); err != nil {
			return err.Error()
		}
		prefix, ok := prefixOf(matches)
		if !ok {
			return "ReplacePrefixMatch needs every match of the rule to be the same PathPrefix"
		}
		repl := *f.Path.ReplacePrefixMatch
		ra.RegexRewrite = prefixRewrite(prefix, repl)
	default:
		return fmt.Sprintf("path modifier %q", f.Path.Type)
	}
	return ""
}

// prefixRewrite replaces a matched path prefix element-wise, as the
// Gateway API says: /foo → /bar takes /foo/x to /bar/x; /foo → / takes
// it to /x.
func prefixRewrite(prefix, repl string) *matcherv3.RegexMatchAndSubstitute {
	pattern := "^" + regexp.QuoteMeta(prefix)
	if strings.HasSuffix(repl, "/") {
		pattern += "/?"
	}
	return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: repl}
}

func redirectAction(f *gwv1.HTTPRequestRedirectFilter, matches []match) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}
	if f.Scheme != nil {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Hostname != nil {
		ra.HostRedirect = string(*f.Hostname)
	}
	if f.Port != nil {
		ra.PortRedirect = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		switch *f.StatusCode {
		case 301:
			ra.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
		case 303:
			ra.ResponseCode = routev3.RedirectAction_SEE_OTHER
		case 307:
			ra.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
		case 308:
			ra.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
		}
	}
	if p := f.Path; p != nil {
		switch {
		case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: *p.ReplaceFullPath}
		case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
			if prefix, ok := prefixOf(matches); ok {
				ra.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: prefixRewrite(prefix, *p.ReplacePrefixMatch)}
			}
		}
	}
	return ra
}

func mirrorFraction(f *gwv1.HTTPRequestMirrorFilter) *typev3.FractionalPercent {
	switch {
	case f.Percent != nil:
		return &typev3.FractionalPercent{Numerator: uint32(max(0, min(100, *f.Percent))) * 10_000, Denominator: typev3.FractionalPercent_MILLION}
	case f.Fraction != nil:
		den := int32(100)
		if f.Fraction.Denominator != nil && *f.Fraction.Denominator > 0 {
			den = *f.Fraction.Denominator
		}
		num := max(0, min(f.Fraction.Numerator, den))
		return &typev3.FractionalPercent{Numerator: uint32(int64(num) * 1_000_000 / int64(den)), Denominator: typev3.FractionalPercent_MILLION}
	}
	return nil
}

// setRuleResilience applies a rule's timeouts and retry (GEP-1294,
// GEP-1731) over the service's own: request is the whole request's
// timeout, backendRequest each try's.
func setRuleResilience(ra *routev3.RouteAction, r *rule, fail func(string)) {
	if t := r.timeouts; t != nil {
		if t.Request != nil {
			d, err := time.ParseDuration(string(*t.Request))
			if err != nil {
				fail("timeouts.request: " + err.Error())
			} else {
				ra.Timeout = durationpb.New(d)
				ra.MaxStreamDuration = nil
				if d > 0 {
					ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(d)}
				}
			}
		}
		if t.BackendRequest != nil {
			d, err := time.ParseDuration(string(*t.BackendRequest))
			if err != nil {
				fail("timeouts.backendRequest: " + err.Error())
			} else {
				if ra.RetryPolicy == nil {
					// A per-try timeout with no retries: no condition to
					// retry on (grpc-go refuses num_retries 0).
					ra.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(1)}
				}
				ra.RetryPolicy.PerTryTimeout = durationpb.New(d)
			}
		}
	}
	if rt := r.retry; rt != nil {
		p := ra.RetryPolicy
		if p == nil {
			p = &routev3.RetryPolicy{}
			ra.RetryPolicy = p
		}
		on := []string{"connect-failure", "refused-stream", "reset"}
		p.RetriableStatusCodes = nil
		for _, c := range rt.Codes {
			p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(c))
		}
		if len(p.RetriableStatusCodes) > 0 {
			on = append(on, "retriable-status-codes")
		}
		p.RetryOn = strings.Join(on, ",")
		if rt.Attempts != nil {
			p.NumRetries = wrapperspb.UInt32(uint32(max(0, *rt.Attempts)))
		}
		if rt.Backoff != nil {
			d, err := time.ParseDuration(string(*rt.Backoff))
			switch {
			case err != nil:
				fail("retry.backoff: " + err.Error())
			case d > 0: // grpc-go refuses a zero base interval
				p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(d)}
			default:
				p.RetryBackOff = nil
			}
		}
		if p.GetNumRetries().GetValue() == 0 && p.NumRetries != nil {
			// attempts: 0 turns retries off (the sidecar's default retry
			// of connect failures too); grpc-go refuses num_retries 0, so
			// no condition to retry on says it.
			p.NumRetries, p.RetryOn, p.RetriableStatusCodes = wrapperspb.UInt32(1), "", nil
		}
	}
}

func directResponse(route *routev3.Route, status uint32) *routev3.Route {
	route.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status}}
	return route
}

// cloneRoute copies the shared parts of a rule's route for one match.
func cloneRoute(r *routev3.Route) *routev3.Route {
	c := &routev3.Route{
		Action:                  r.Action,
		RequestHeadersToAdd:     r.RequestHeadersToAdd,
		RequestHeadersToRemove:  r.RequestHeadersToRemove,
		ResponseHeadersToAdd:    r.ResponseHeadersToAdd,
		ResponseHeadersToRemove: r.ResponseHeadersToRemove,
		TypedPerFilterConfig:    r.TypedPerFilterConfig,
	}
	return c
}

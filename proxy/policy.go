package proxy

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/security/authz"
)

// buildPolicy reads a cluster's resilience from the standard fields: its
// circuit breakers and outlier detection, and its route's timeout, retry
// policy and fault filter config. state carries the counters over from the
// cluster's previous version. base is the cluster's part alone, which
// other routes to the cluster start from.
func buildPolicy(c *clusterv3.Cluster, rc *routev3.RouteConfiguration, state *interceptor.PolicyState) (p, base *interceptor.Policy, _ *balancer.OutlierPolicy, _ error) {
	base, outlier := clusterPolicy(c, state)
	route := firstRoute(rc)
	if route == nil {
		return base, base, outlier, nil
	}
	p, err := routePolicy(base, route)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: route %s: %w", ErrInvalidConfig, rc.GetName(), err)
	}
	return p, base, outlier, nil
}

// clusterPolicy is the cluster's part of a policy: circuit breakers and
// outlier detection.
func clusterPolicy(c *clusterv3.Cluster, state *interceptor.PolicyState) (*interceptor.Policy, *balancer.OutlierPolicy) {
	if state == nil {
		state = &interceptor.PolicyState{}
	}
	// Envoy's defaults for what the cluster leaves out: 1024 requests and
	// 3 retries in flight; a budget of 20%, at least 3, when a budget is
	// given, and then max retries does not apply.
	p := &interceptor.Policy{State: state, MaxRequests: 1024, MaxRetries: 3}
	var outlier *balancer.OutlierPolicy
	if ts := c.GetCircuitBreakers().GetThresholds(); len(ts) > 0 {
		t := ts[0] // DEFAULT priority; tender does not route by priority
		if v := t.GetMaxRequests(); v != nil {
			p.MaxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			p.MaxRetries = int64(v.GetValue())
		}
		if b := t.GetRetryBudget(); b != nil {
			p.MaxRetries = 0
			p.BudgetPercent, p.MinRetryConcurrency = 20, 3
			if v := b.GetBudgetPercent(); v != nil {
				p.BudgetPercent = v.GetValue()
			}
			if v := b.GetMinRetryConcurrency(); v != nil {
				p.MinRetryConcurrency = int64(v.GetValue())
			}
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		o := &balancer.OutlierPolicy{
			BaseEjectionTime:   od.GetBaseEjectionTime().AsDuration(),
			MaxEjectionPercent: od.GetMaxEjectionPercent().GetValue(),
		}
		// Envoy's defaults: consecutive 5xx on (5, enforced), gateway
		// errors off unless enforced.
		if od.GetEnforcingConsecutive_5Xx() == nil || od.GetEnforcingConsecutive_5Xx().GetValue() > 0 {
			o.Consecutive5xx = 5
			if v := od.GetConsecutive_5Xx(); v != nil {
				o.Consecutive5xx = v.GetValue()
			}
		}
		if od.GetEnforcingConsecutiveGatewayFailure().GetValue() > 0 {
			o.ConsecutiveGateway = 5
			if v := od.GetConsecutiveGatewayFailure(); v != nil {
				o.ConsecutiveGateway = v.GetValue()
			}
		}
		if od.GetMaxEjectionPercent() == nil {
			o.MaxEjectionPercent = 10
		}
		o.Interval = od.GetInterval().AsDuration()
		o.MaxEjectionTime = od.GetMaxEjectionTime().AsDuration()
		// Success rate: on unless not enforced, with Envoy's defaults.
		if od.GetEnforcingSuccessRate() == nil || od.GetEnforcingSuccessRate().GetValue() > 0 {
			o.SuccessRateStdevFactor, o.SuccessRateMinimumHosts, o.SuccessRateRequestVolume = 1900, 5, 100
			if v := od.GetSuccessRateStdevFactor(); v != nil {
				o.SuccessRateStdevFactor = v.GetValue()
			}
			if v := od.GetSuccessRateMinimumHosts(); v != nil {
				o.SuccessRateMinimumHosts = v.GetValue()
			}
			if v := od.GetSuccessRateRequestVolume(); v != nil {
				o.SuccessRateRequestVolume = v.GetValue()
			}
		}
		outlier = o
	}
	return p, outlier
}

// routePolicy is base with a route's timeout, retry policy and fault
// filter config; the breaker's counters stay base's.
func routePolicy(base *interceptor.Policy, route *routev3.Route) (*interceptor.Policy, error) {
	if base == nil {
		return nil, nil
	}
	cp := *base
	p := &cp
	action := route.GetRoute()
	p.Timeout = action.GetTimeout().AsDuration()
	if rp := action.GetRetryPolicy(); rp != nil {
		attempts := 1 // Envoy's default num_retries
		if n := rp.GetNumRetries(); n != nil {
			attempts = int(n.GetValue())
		}
		p.Retry = &interceptor.RetryPolicy{
			Attempts:      attempts,
			On:            interceptor.ParseRetryOn(rp.GetRetryOn()),
			PerTryTimeout: rp.GetPerTryTimeout().AsDuration(),
			BackoffBase:   rp.GetRetryBackOff().GetBaseInterval().AsDuration(),
			BackoffMax:    rp.GetRetryBackOff().GetMaxInterval().AsDuration(),
			StatusCodes:   rp.GetRetriableStatusCodes(),
		}
	}
	if a := route.GetTypedPerFilterConfig()[wellknown.Fault]; a != nil {
		var f faultv3.HTTPFault
		if err := a.UnmarshalTo(&f); err != nil {
			return nil, fmt.Errorf("fault: %w", err)
		}
		p.Fault = &interceptor.FaultPolicy{
			DelayPercent: percent(f.GetDelay().GetPercentage()),
			Delay:        f.GetDelay().GetFixedDelay().AsDuration(),
			AbortPercent: percent(f.GetAbort().GetPercentage()),
			AbortStatus:  int(f.GetAbort().GetHttpStatus()),
		}
		if p.Fault.AbortPercent > 0 && (p.Fault.AbortStatus < 200 || p.Fault.AbortStatus > 599) {
			return nil, fmt.Errorf("fault abort needs an http_status 200-599")
		}
	}
	return p, nil
}

func firstRoute(rc *routev3.RouteConfiguration) *routev3.Route {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute() != nil {
				return r
			}
		}
	}
	return nil
}

// percent turns a FractionalPercent into a percentage.
func percent(f *typev3.FractionalPercent) float64 {
	if f == nil {
		return 0
	}
	d := map[typev3.FractionalPercent_DenominatorType]float64{
		typev3.FractionalPercent_HUNDRED: 100, typev3.FractionalPercent_TEN_THOUSAND: 10_000,
		typev3.FractionalPercent_MILLION: 1_000_000,
	}[f.GetDenominator()]
	return float64(f.GetNumerator()) * 100 / d
}

// authzRequest is what an authorization policy sees of an HTTP request.
func authzRequest(x *interceptor.Exchange, path string) authz.Request {
	return authz.Request{Principal: x.SourcePrincipal, Method: x.Req.Method(), Path: path}
}

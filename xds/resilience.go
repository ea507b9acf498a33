package xds

import (
	"cmp"
	"math"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tender-mesh/tender/discovery"
)

// setRouteResilience carries a service's timeout, retries and fault
// injection in the standard RouteAction fields and the fault filter's
// per-route config, as Envoy and grpc-go read them.
func setRouteResilience(route *routev3.Route, r *discovery.Resilience) error {
	action := route.GetRoute()
	// 0 disables Envoy's default 15 s route timeout: streams may be long.
	action.Timeout = durationpb.New(r.Timeout)
	if r.Timeout > 0 {
		// grpc-go reads the stream deadline from here.
		action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(r.Timeout)}
	}
	if rp := r.Retries; rp != nil && rp.Attempts == 0 {
		// attempts: 0 turns retries off, the sidecar's default retry of
		// connect failures included: a policy that retries on nothing
		// (grpc-go refuses num_retries 0).
		action.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(1)}
	} else if rp != nil {
		p := &routev3.RetryPolicy{
			RetryOn:              strings.Join(rp.On, ","),
			NumRetries:           wrapperspb.UInt32(rp.Attempts),
			RetriableStatusCodes: rp.StatusCodes,
		}
		if rp.PerTryTimeout > 0 {
			p.PerTryTimeout = durationpb.New(rp.PerTryTimeout)
		}
		if rp.BackoffBase > 0 {
			p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(rp.BackoffBase)}
			if rp.BackoffMax > 0 {
				p.RetryBackOff.MaxInterval = durationpb.New(rp.BackoffMax)
			}
		}
		action.RetryPolicy = p
	}
	if f := r.Fault; f != nil && (f.DelayPercent > 0 || f.AbortPercent > 0) {
		fault := &faultv3.HTTPFault{}
		if f.DelayPercent > 0 {
			fault.Delay = &faultcommonv3.FaultDelay{
				FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.Delay)},
				Percentage:         perMillion(f.DelayPercent),
			}
		}
		if f.AbortPercent > 0 {
			fault.Abort = &faultv3.FaultAbort{
				ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: f.AbortStatus},
				Percentage: perMillion(f.AbortPercent),
			}
		}
		a, err := anypb.New(fault)
		if err != nil {
			return err
		}
		route.TypedPerFilterConfig = map[string]*anypb.Any{wellknown.Fault: a}
	}
	return nil
}

func perMillion(percent float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(percent * 10_000), Denominator: typev3.FractionalPercent_MILLION}
}

// Retry budget defaults: a service with retries but neither a budget nor
// a max retries limit gets this budget, so that retries cannot multiply
// the load on a failing service (Linkerd's budget is 20% too) while a few
// retries are always allowed.
const (
	DefaultBudgetPercent       = 20
	DefaultMinRetryConcurrency = 10
)

// unlimited is the threshold of a limit the mesh does not set. Envoy would
// otherwise apply its own defaults (1024 requests, 3 retries in flight),
// which surprise more than they protect; Istio does the same.
const unlimited = math.MaxUint32

// setClusterResilience carries circuit breakers, the retry budget and
// outlier detection in the Cluster's standard fields. Every threshold is
// explicit, so Envoy, proxyless clients and tender's sidecar apply the
// same limits.
func setClusterResilience(c *clusterv3.Cluster, r *discovery.Resilience) {
	cb, rp := r.CircuitBreaker, r.Retries
	if cb == nil {
		cb = &discovery.CircuitBreaker{}
	}
	t := &clusterv3.CircuitBreakers_Thresholds{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     uint32Value(cmp.Or(cb.MaxConnections, unlimited)),
		MaxPendingRequests: uint32Value(cmp.Or(cb.MaxPendingRequests, unlimited)),
		MaxRequests:        uint32Value(cmp.Or(cb.MaxRequests, unlimited)),
		MaxRetries:         uint32Value(cmp.Or(cb.MaxRetries, unlimited)),
	}
	// A budget, when there is one, overrides max retries (as in Envoy):
	// one is set when asked for, and by default unless max retries is.
	if rp != nil && (rp.BudgetPercent > 0 || rp.MinRetryConcurrency > 0 || cb.MaxRetries == 0) {
		// Both fields explicit: Envoy's own defaults (20%, 3) differ.
		t.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: cmp.Or(rp.BudgetPercent, DefaultBudgetPercent)},
			MinRetryConcurrency: uint32Value(cmp.Or(rp.MinRetryConcurrency, DefaultMinRetryConcurrency)),
		}
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	if od := r.OutlierDetection; od != nil {
		o := &clusterv3.OutlierDetection{
			Consecutive_5Xx:           uint32Value(od.Consecutive5xx),
			ConsecutiveGatewayFailure: uint32Value(od.ConsecutiveGatewayErrors),
			MaxEjectionPercent:        uint32Value(od.MaxEjectionPercent),
			SuccessRateMinimumHosts:   uint32Value(od.SuccessRateMinimumHosts),
			SuccessRateRequestVolume:  uint32Value(od.SuccessRateRequestVolume),
			SuccessRateStdevFactor:    uint32Value(od.SuccessRateStdevFactor),
		}
		if od.Interval > 0 {
			o.Interval = durationpb.New(od.Interval)
		}
		if od.BaseEjectionTime > 0 {
			o.BaseEjectionTime = durationpb.New(od.BaseEjectionTime)
		}
		// Envoy enforces consecutive 5xx by default but not the others:
		// enforce exactly what was configured.
		o.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enforce(od.Consecutive5xx > 0))
		o.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enforce(od.ConsecutiveGatewayErrors > 0))
		o.EnforcingSuccessRate = wrapperspb.UInt32(enforce(od.SuccessRateStdevFactor > 0))
		c.OutlierDetection = o
	}
}

func uint32Value(v uint32) *wrapperspb.UInt32Value {
	if v == 0 {
		return nil
	}
	return wrapperspb.UInt32(v)
}

func enforce(on bool) uint32 {
	if on {
		return 100
	}
	return 0
}

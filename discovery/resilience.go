package discovery

import (
	"fmt"
	"slices"
	"time"
)

// RetryOn conditions, named as in Envoy's x-envoy-retry-on and
// x-envoy-retry-grpc-on.
const (
	RetryOn5xx                  = "5xx"
	RetryOnGatewayError         = "gateway-error" // 502, 503, 504
	RetryOnReset                = "reset"
	RetryOnConnectFailure       = "connect-failure"
	RetryOnRetriableStatusCodes = "retriable-status-codes"
	RetryOnCancelled            = "cancelled"
	RetryOnDeadlineExceeded     = "deadline-exceeded"
	RetryOnResourceExhausted    = "resource-exhausted"
	RetryOnUnavailable          = "unavailable"
)

var retryOnKnown = []string{RetryOn5xx, RetryOnGatewayError, RetryOnReset, RetryOnConnectFailure,
	RetryOnRetriableStatusCodes, RetryOnCancelled, RetryOnDeadlineExceeded, RetryOnResourceExhausted, RetryOnUnavailable}

// RetryPolicy says when and how a failed request is tried again.
type RetryPolicy struct {
	// Attempts is the number of retries after the first try.
	Attempts uint32 `json:"attempts"`
	// On lists the conditions that make a try fail (RetryOn*).
	On []string `json:"on"`
	// PerTryTimeout bounds each try until its response headers; 0: none.
	PerTryTimeout time.Duration `json:"perTryTimeout,omitempty"`
	// BackoffBase and BackoffMax bound the jittered exponential pause
	// between tries; defaults 25 ms and 10 × base.
	BackoffBase time.Duration `json:"backoffBase,omitempty"`
	BackoffMax  time.Duration `json:"backoffMax,omitempty"`
	// StatusCodes are retried under retriable-status-codes.
	StatusCodes []uint32 `json:"statusCodes,omitempty"`
	// BudgetPercent caps retries in flight at this share of the requests
	// in flight (default 20), but always allows MinRetryConcurrency
	// (default 3): a failing service does not get a retry storm.
	BudgetPercent       float64 `json:"budgetPercent,omitempty"`
	MinRetryConcurrency uint32  `json:"minRetryConcurrency,omitempty"`
}

// CircuitBreaker caps what clients send to a service at once (Envoy's
// circuit_breakers thresholds); zero fields take Envoy's defaults.
type CircuitBreaker struct {
	MaxConnections     uint32 `json:"maxConnections,omitempty"`
	MaxPendingRequests uint32 `json:"maxPendingRequests,omitempty"`
	MaxRequests        uint32 `json:"maxRequests,omitempty"`
	MaxRetries         uint32 `json:"maxRetries,omitempty"`
}

// OutlierDetection ejects endpoints that fail (Envoy's outlier_detection).
type OutlierDetection struct {
	// Consecutive5xx ejects after this many 5xx (or connect failures) in a
	// row; 0 turns the check off.
	Consecutive5xx uint32 `json:"consecutive5xx,omitempty"`
	// ConsecutiveGatewayErrors does the same for 502, 503, 504 and
	// connect failures only.
	ConsecutiveGatewayErrors uint32 `json:"consecutiveGatewayErrors,omitempty"`
	// Interval is how often success rates are computed; default 10 s.
	Interval time.Duration `json:"interval,omitempty"`
	// BaseEjectionTime times the number of ejections so far is how long
	// an ejection lasts; default 30 s.
	BaseEjectionTime time.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent of a service's endpoints may be ejected at once;
	// default 10, at least one endpoint.
	MaxEjectionPercent uint32 `json:"maxEjectionPercent,omitempty"`
	// SuccessRate ejects endpoints whose success rate is below the mean
	// by StdevFactor/1000 standard deviations, once MinimumHosts have
	// RequestVolume requests in an interval; StdevFactor 0 turns it off.
	SuccessRateMinimumHosts  uint32 `json:"successRateMinimumHosts,omitempty"`
	SuccessRateRequestVolume uint32 `json:"successRateRequestVolume,omitempty"`
	SuccessRateStdevFactor   uint32 `json:"successRateStdevFactor,omitempty"`
}

// Fault injects delays and aborts into a share of requests, for testing
// how clients cope.
type Fault struct {
	DelayPercent float64       `json:"delayPercent,omitempty"`
	Delay        time.Duration `json:"delay,omitempty"`
	AbortPercent float64       `json:"abortPercent,omitempty"`
	AbortStatus  uint32        `json:"abortStatus,omitempty"`
}

// Resilience is a service's error handling, applied by its clients.
type Resilience struct {
	// Timeout bounds a whole request, retries included; 0: none.
	Timeout          time.Duration     `json:"timeout,omitempty"`
	Retries          *RetryPolicy      `json:"retries,omitempty"`
	CircuitBreaker   *CircuitBreaker   `json:"circuitBreaker,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	Fault            *Fault            `json:"fault,omitempty"`
}

// Validate checks the values a client could not apply.
func (r *Resilience) Validate() error {
	if r.Timeout < 0 {
		return fmt.Errorf("timeout %s is negative", r.Timeout)
	}
	if rp := r.Retries; rp != nil {
		for _, on := range rp.On {
			if !slices.Contains(retryOnKnown, on) {
				return fmt.Errorf("retries: unknown condition %q (want one of %v)", on, retryOnKnown)
			}
		}
		if rp.PerTryTimeout < 0 || rp.BackoffBase < 0 || rp.BackoffMax < 0 {
			return fmt.Errorf("retries: negative duration")
		}
		if rp.BackoffMax > 0 && rp.BackoffMax < rp.BackoffBase {
			return fmt.Errorf("retries: backoff max %s below base %s", rp.BackoffMax, rp.BackoffBase)
		}
		if rp.BudgetPercent < 0 || rp.BudgetPercent > 100 {
			return fmt.Errorf("retries: budget %v%% out of 0-100", rp.BudgetPercent)
		}
		for _, c := range rp.StatusCodes {
			if c < 100 || c > 599 {
				return fmt.Errorf("retries: status code %d out of 100-599", c)
			}
		}
	}
	if od := r.OutlierDetection; od != nil {
		if od.MaxEjectionPercent > 100 {
			return fmt.Errorf("outlierDetection: maxEjectionPercent %d over 100", od.MaxEjectionPercent)
		}
		if od.Interval < 0 || od.BaseEjectionTime < 0 {
			return fmt.Errorf("outlierDetection: negative duration")
		}
	}
	if f := r.Fault; f != nil {
		if f.DelayPercent < 0 || f.DelayPercent > 100 || f.AbortPercent < 0 || f.AbortPercent > 100 {
			return fmt.Errorf("fault: percentages must be 0-100")
		}
		if f.AbortPercent > 0 && (f.AbortStatus < 200 || f.AbortStatus > 599) {
			return fmt.Errorf("fault: abort status %d out of 200-599", f.AbortStatus)
		}
		if f.Delay < 0 {
			return fmt.Errorf("fault: negative delay")
		}
	}
	return nil
}

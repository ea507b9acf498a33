package interceptor

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Retry conditions, as bits.
const (
	retry5xx uint32 = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryStatusCodes
	retryCancelled
	retryDeadlineExceeded
	retryResourceExhausted
	retryUnavailable
)

var retryNames = map[string]uint32{
	"5xx": retry5xx, "gateway-error": retryGatewayError, "reset": retryReset,
	"connect-failure": retryConnectFailure, "retriable-status-codes": retryStatusCodes,
	"cancelled": retryCancelled, "deadline-exceeded": retryDeadlineExceeded,
	"resource-exhausted": retryResourceExhausted, "unavailable": retryUnavailable,
}

// ParseRetryOn reads Envoy's comma-separated retry_on; unknown conditions
// are ignored, as Envoy ignores them.
func ParseRetryOn(s string) uint32 {
	var on uint32
	for _, c := range strings.Split(s, ",") {
		on |= retryNames[strings.TrimSpace(c)]
	}
	return on
}

// RetryPolicy is a destination's retry_policy.
type RetryPolicy struct {
	Attempts      int
	On            uint32 // ParseRetryOn
	PerTryTimeout time.Duration
	BackoffBase   time.Duration
	BackoffMax    time.Duration
	StatusCodes   []uint32
}

// RetryOnHeader lets a client opt a request into retries that its method
// would not get (POST, PATCH), naming the conditions (Envoy's
// x-envoy-retry-on). The sidecar removes it.
const RetryOnHeader = "X-Tender-Retry-On"

// MaxReplayBytes bounds the request body a retry may resend; a request
// whose body went beyond it is not retried.
const MaxReplayBytes = 64 << 10

// DefaultRetry is the retry policy of a destination whose route names
// none: a connect failure, where nothing reached the upstream, goes to
// another endpoint, at most twice, whatever the method (Istio's and
// Linkerd's sidecars do the same). An endpoint that went away before its
// removal reached the sidecar (a scale-down, a rollout, a node's pod
// deleted) then costs no request. A route's own policy replaces it;
// attempts: 0 there turns retries off, this one included.
//
// Its retries in flight are bounded by Envoy's default budget (20% of the
// requests in flight, at least 3), whatever the cluster's limits say,
// and a client's RetryOnHeader does not widen it: only a route's own
// policy opts into more.
var DefaultRetry = &RetryPolicy{Attempts: 2, On: retryConnectFailure}

// admitDefault is DefaultRetry's budget.
func admitDefault(st *PolicyState) bool {
	return st.Retrying.Load() < max(3, st.Active.Load()*20/100)
}

// Retry sends a failed request again, to another endpoint when there is
// one, as its destination's policy says: on the conditions it names, after
// a jittered exponential backoff, each try bounded by the per-try timeout,
// while the retry budget and max retries allow. Requests that are not safe
// to repeat (POST and PATCH without RetryOnHeader, bodies beyond
// MaxReplayBytes) are retried only when nothing reached the upstream
// (connect failure). A try that runs out of its per-try timeout before its
// response counts as a gateway error. next sends one try; it reads the
// endpoints tried so far from the Exchange.
func Retry(metrics *ResilienceMetrics) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(e *Exchange) (Response, error) {
			var rp *RetryPolicy
			if e.Policy != nil {
				if rp = e.Policy.Retry; rp == nil {
					rp = DefaultRetry
				}
			}
			on := uint32(0)
			if rp != nil {
				on = rp.On
			}
			optIn := ""
			if e.Req != nil {
				if optIn = e.Req.Header(RetryOnHeader); optIn != "" {
					e.Req.DelHeader(RetryOnHeader)
					if rp == DefaultRetry {
						optIn = "" // the route names no retries to opt into
					} else {
						on = ParseRetryOn(optIn)
					}
				}
			}
			if rp == nil || rp.Attempts == 0 || on == 0 {
				return tryOnce(next, e, rp)
			}
			safe := optIn != "" || idempotent(e.Req)
			st := e.Policy.State
			// A retry is in flight, for the budget, from its admission
			// (backoff included) until its response head.
			for attempt := 0; ; attempt++ {
				resp, err := tryOnce(next, e, rp)
				if attempt > 0 {
					st.Retrying.Add(-1)
				}
				cond := classify(resp, err)
				if e.Unprocessed {
					cond |= retryConnectFailure
				}
				if resp != nil && !slices.Contains(rp.StatusCodes, uint32(resp.StatusCode())) {
					cond &^= retryStatusCodes
				}
				switch {
				case cond&on == 0:
					return resp, err
				case attempt >= rp.Attempts:
					e.Flags |= FlagRetryLimit
					return resp, err
				case !safe && cond&retryConnectFailure == 0:
					return resp, err
				case !admitRetry(e.Policy) || rp == DefaultRetry && !admitDefault(e.Policy.State):
					e.Flags |= FlagRetryOverflow
					metrics.overflow(e.Service, "retries")
					return resp, err
				case e.Body != nil && !e.Body.Rewind():
					return resp, err // the body cannot be sent again
				}
				if resp != nil {
					resp.Discard()
				}
				e.Retries++
				metrics.retry(e.Service)
				st.Retrying.Add(1)
				wait := backoff(rp, attempt)
				if !e.Deadline.IsZero() {
					if left := time.Until(e.Deadline); left < wait {
						time.Sleep(max(left, 0))
						st.Retrying.Add(-1)
						return nil, ErrTimeout
					}
				}
				time.Sleep(wait)
			}
		})
	}
}

// tryOnce sends one try, bounded by the per-try timeout until its
// response head arrives; the body then streams under the request's own
// deadline.
func tryOnce(next Handler, e *Exchange, rp *RetryPolicy) (Response, error) {
	e.Attempt++
	e.Unprocessed = false
	if rp == nil || rp.PerTryTimeout <= 0 {
		return next.Handle(e)
	}
	e.TryDeadline = time.Now().Add(rp.PerTryTimeout)
	resp, err := next.Handle(e)
	e.TryDeadline = time.Time{}
	return resp, err
}

// classify names the retry conditions a try's outcome meets.
func classify(resp Response, err error) uint32 {
	if err != nil {
		switch {
		case errors.Is(err, ErrClientGone), errors.Is(err, ErrTimeout):
			return 0 // the request itself is over
		case errors.Is(err, ErrPerTryTimeout):
			return retry5xx | retryGatewayError | retryReset
		case errors.Is(err, ErrConnect):
			return retryConnectFailure | retry5xx | retryGatewayError
		}
		return retryReset | retry5xx
	}
	var cond uint32
	switch c := resp.StatusCode(); {
	case c == http.StatusBadGateway, c == http.StatusServiceUnavailable, c == http.StatusGatewayTimeout:
		cond |= retry5xx | retryGatewayError
	case c >= 500:
		cond |= retry5xx
	}
	cond |= retryStatusCodes
	// A trailers-only gRPC response carries its status in the headers
	// (named in lower case: an HTTP/2 response looks it up without a copy).
	switch resp.Header("grpc-status") {
	case "1":
		cond |= retryCancelled
	case "4":
		cond |= retryDeadlineExceeded
	case "8":
		cond |= retryResourceExhausted
	case "14":
		cond |= retryUnavailable
	}
	return cond
}

// idempotent reports whether repeating r is safe by its method. gRPC
// calls are POSTs, but a policy that names gRPC codes asks for them to be
// retried, as gRPC's own retry policy does.
func idempotent(r Request) bool {
	if r == nil {
		return false
	}
	return IdempotentMethod(r.Method()) || IsGRPC(r)
}

// IdempotentMethod reports whether a request of method m may be sent
// twice (RFC 9110 §9.2.2).
func IdempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// admitRetry applies the retry budget, when the policy has one, else max
// retries; with neither, every retry is admitted.
func admitRetry(p *Policy) bool {
	st := p.State
	retrying := st.Retrying.Load()
	if p.BudgetPercent > 0 {
		allowed := max(p.MinRetryConcurrency, int64(float64(st.Active.Load())*p.BudgetPercent/100))
		return retrying < allowed
	}
	return p.MaxRetries <= 0 || retrying < p.MaxRetries
}

// backoff is the jittered wait before retry attempt+1: full jitter over
// base·2^attempt, capped at max (default 10·base).
func backoff(rp *RetryPolicy, attempt int) time.Duration {
	base := rp.BackoffBase
	if base <= 0 {
		base = 25 * time.Millisecond
	}
	ceiling := rp.BackoffMax
	if ceiling <= 0 {
		ceiling = 10 * base
	}
	d := min(base<<min(attempt, 20), ceiling)
	return rand.N(d) + 1
}

// Replay records a request body as tries read it, up to MaxReplayBytes,
// so a retry can send it again: the Body of a forwarder whose transport
// reads the body in a goroutine of its own (HTTP/2). Each try reads
// through its own reader; Rewind cuts the previous one off, so a
// transport still reading a failed try's body cannot take bytes from the
// next.
type Replay struct {
	mu       sync.Mutex // guards the fields below
	srcMu    sync.Mutex // held while reading src
	src      io.ReadCloser
	buf      bytes.Buffer
	overflow bool
	eof      bool
	gen      int
}

// NewReplay records src.
func NewReplay(src io.ReadCloser) *Replay { return &Replay{src: src} }

// Rewind starts the body over for the next try, when it fit.
func (r *Replay) Rewind() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.overflow {
		return false
	}
	r.gen++
	return true
}

// Reader returns the current try's body.
func (r *Replay) Reader() io.ReadCloser {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &replayReader{r: r, gen: r.gen}
}

type replayReader struct {
	r   *Replay
	gen int
	pos int
}

var errSuperseded = errors.New("request body: superseded by a retry")

func (rr *replayReader) Read(p []byte) (int, error) {
	r := rr.r
	for {
		r.mu.Lock()
		switch {
		case rr.gen != r.gen:
			r.mu.Unlock()
			return 0, errSuperseded
		case rr.pos < r.buf.Len():
			n := copy(p, r.buf.Bytes()[rr.pos:])
			rr.pos += n
			r.mu.Unlock()
			return n, nil
		case r.eof:
			r.mu.Unlock()
			return 0, io.EOF
		}
		r.mu.Unlock()
		// One reader of the client's body at a time, and without holding
		// mu: a streaming client may take its time.
		r.srcMu.Lock()
		r.mu.Lock()
		if rr.pos < r.buf.Len() || r.eof { // a superseded try read meanwhile
			r.mu.Unlock()
			r.srcMu.Unlock()
			continue
		}
		r.mu.Unlock()
		n, err := r.src.Read(p)
		r.mu.Lock()
		// Record even for a superseded try: the next one needs the bytes.
		if n > 0 && !r.overflow {
			if r.buf.Len()+n > MaxReplayBytes {
				r.overflow = true
				r.buf = bytes.Buffer{}
			} else {
				r.buf.Write(p[:n])
			}
		}
		if errors.Is(err, io.EOF) {
			r.eof = true
		}
		superseded := rr.gen != r.gen
		if !r.overflow {
			rr.pos = r.buf.Len()
		}
		r.mu.Unlock()
		r.srcMu.Unlock()
		if superseded {
			return 0, errSuperseded
		}
		return n, err
	}
}

func (rr *replayReader) Close() error { return nil }

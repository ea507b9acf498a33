package interceptor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
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

// Retry sends a failed request again, to another endpoint when there is
// one, as its destination's policy says: on the conditions it names, after
// a jittered exponential backoff, each try bounded by the per-try timeout,
// while the retry budget and max retries allow. Requests that are not safe
// to repeat (POST and PATCH without RetryOnHeader, bodies beyond
// MaxReplayBytes) are retried only when nothing reached the upstream
// (connect failure). A try that runs out of its per-try timeout before its
// response counts as a gateway error. next sends one try; it reads the
// endpoints tried so far from the Exchange.
func Retry(metrics *ResilienceMetrics) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			e := FromContext(req.Context())
			var rp *RetryPolicy
			if e != nil && e.Policy != nil {
				rp = e.Policy.Retry
			}
			on := uint32(0)
			if rp != nil {
				on = rp.On
			}
			optIn := req.Header.Get(RetryOnHeader)
			if optIn != "" {
				on = ParseRetryOn(optIn)
				req.Header.Del(RetryOnHeader)
			}
			if rp == nil || rp.Attempts == 0 || on == 0 {
				return tryOnce(next, req, rp)
			}
			safe := optIn != "" || idempotent(req)
			body := newReplay(req.Body)
			st := e.Policy.State
			// A retry is in flight, for the budget, from its admission
			// (backoff included) until its response headers.
			for attempt := 0; ; attempt++ {
				try := req.Clone(req.Context())
				try.Body = body.reader()
				if try.Body == nil {
					try.Body = http.NoBody
				}
				resp, err := tryOnce(next, try, rp)
				if attempt > 0 {
					st.Retrying.Add(-1)
				}
				cond := classify(resp, err, req)
				if resp != nil && !slices.Contains(rp.StatusCodes, uint32(resp.StatusCode)) {
					cond &^= retryStatusCodes
				}
				retriable := cond&on != 0
				switch {
				case !retriable:
					return resp, err
				case attempt >= rp.Attempts:
					e.Flags |= FlagRetryLimit
					return resp, err
				case !safe && cond&retryConnectFailure == 0, !body.replayable():
					return resp, err
				case !admitRetry(e.Policy):
					e.Flags |= FlagRetryOverflow
					metrics.overflow(e.Service, "retries")
					return resp, err
				}
				if resp != nil {
					// Read a little, so the connection can be reused.
					io.CopyN(io.Discard, resp.Body, 4<<10) //nolint:errcheck // best effort
					resp.Body.Close()
				}
				e.Retries++
				metrics.retry(e.Service)
				st.Retrying.Add(1)
				t := time.NewTimer(backoff(rp, attempt))
				select {
				case <-t.C:
				case <-req.Context().Done():
					t.Stop()
					st.Retrying.Add(-1)
					return nil, req.Context().Err()
				}
			}
		})
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ErrPerTryTimeout is a try that got no response within its per-try
// timeout.
var ErrPerTryTimeout = errors.New("per-try timeout")

// tryOnce sends one try, bounded by the per-try timeout until its
// response headers arrive; the body then streams under the request's own
// deadline.
func tryOnce(next http.RoundTripper, req *http.Request, rp *RetryPolicy) (*http.Response, error) {
	if rp == nil || rp.PerTryTimeout <= 0 {
		return next.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	t := time.AfterFunc(rp.PerTryTimeout, func() { cancel(ErrPerTryTimeout) })
	resp, err := next.RoundTrip(req.WithContext(ctx))
	if !t.Stop() || err != nil {
		cancel(nil)
		if errors.Is(context.Cause(ctx), ErrPerTryTimeout) && req.Context().Err() == nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ErrPerTryTimeout
		}
		return resp, err
	}
	resp.Body = OnClose(resp.Body, func() { cancel(nil) })
	return resp, nil
}

// OnClose returns body calling done once, after it is closed. A body that
// is also an io.Writer (the connection of a 101 Switching Protocols
// response) stays one.
func OnClose(body io.ReadCloser, done func()) io.ReadCloser {
	c := &onClose{ReadCloser: body, done: done}
	if w, ok := body.(io.Writer); ok {
		return &onCloseRW{onClose: c, Writer: w}
	}
	return c
}

type onClose struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (c *onClose) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.done)
	return err
}

type onCloseRW struct {
	*onClose
	io.Writer
}

// classify names the retry conditions a try's outcome meets.
func classify(resp *http.Response, err error, req *http.Request) uint32 {
	if err != nil {
		if req.Context().Err() != nil {
			return 0 // the request itself is over
		}
		if errors.Is(err, ErrPerTryTimeout) {
			return retry5xx | retryGatewayError | retryReset
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return retryConnectFailure | retry5xx | retryGatewayError
		}
		return retryReset | retry5xx
	}
	var cond uint32
	switch c := resp.StatusCode; {
	case c == http.StatusBadGateway, c == http.StatusServiceUnavailable, c == http.StatusGatewayTimeout:
		cond |= retry5xx | retryGatewayError
	case c >= 500:
		cond |= retry5xx
	}
	cond |= retryStatusCodes
	// A trailers-only gRPC response carries its status in the headers.
	switch resp.Header.Get("Grpc-Status") {
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

// idempotent reports whether repeating req is safe by its method. gRPC
// calls are POSTs, but a policy that names gRPC codes asks for them to be
// retried, as gRPC's own retry policy does.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return IsGRPC(req)
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

// replay records a request body as tries read it, up to MaxReplayBytes,
// so a retry can send it again. Each try reads through its own reader;
// starting a new try cuts the previous one off, so a transport still
// reading a failed try's body cannot take bytes from the next.
type replay struct {
	mu       sync.Mutex // guards the fields below
	srcMu    sync.Mutex // held while reading src
	src      io.ReadCloser
	buf      bytes.Buffer
	overflow bool
	eof      bool
	gen      int
}

func newReplay(src io.ReadCloser) *replay {
	if src == nil || src == http.NoBody {
		return nil
	}
	return &replay{src: src}
}

func (r *replay) replayable() bool {
	if r == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.overflow
}

// reader starts a new try's body.
func (r *replay) reader() io.ReadCloser {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	return &replayReader{r: r, gen: r.gen}
}

type replayReader struct {
	r   *replay
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

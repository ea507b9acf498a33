package greeter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Fault makes an instance misbehave on purpose, for resilience tests and
// demos: stall every request for a while, or answer it with an error
// status. It applies to every HTTP request but /healthz and /fault, and to
// every unary gRPC call; health checks keep passing, as they do for an
// application that is up but broken. The zero Fault does nothing.
type Fault struct {
	status atomic.Int32
	delay  atomic.Int64

	mu      sync.Mutex
	changed chan struct{} // closed by the next Set
}

// Set changes the fault: status 0 answers normally, else 400..599; delay
// 0 does not stall. Requests stalled by the previous fault go on at once.
func (f *Fault) Set(status int, delay time.Duration) error {
	if status != 0 && (status < 400 || status > 599) {
		return fmt.Errorf("fault status %d: want 0 or 400..599", status)
	}
	if delay < 0 {
		return fmt.Errorf("fault delay %v: want >= 0", delay)
	}
	f.status.Store(int32(status))
	f.delay.Store(int64(delay))
	f.mu.Lock()
	if f.changed != nil {
		close(f.changed) // requests stalled by the old fault go on
		f.changed = nil
	}
	f.mu.Unlock()
	return nil
}

func (f *Fault) changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

// Get returns the fault's status and delay.
func (f *Fault) Get() (status int, delay time.Duration) {
	return int(f.status.Load()), time.Duration(f.delay.Load())
}

// wait stalls for the delay, until the fault changes, or until ctx ends;
// it reports whether the request should go on.
func (f *Fault) wait(ctx context.Context) bool {
	changed := f.changes()
	d := time.Duration(f.delay.Load())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-changed:
		return true
	case <-ctx.Done():
		return false
	}
}

// HTTP wraps h: GET /fault shows the fault, PUT /fault?status=503&delay=1s
// changes it; other requests but /healthz get the fault.
func (f *Fault) HTTP(h http.Handler, instance string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			h.ServeHTTP(w, r)
			return
		case "/fault":
			f.serveAdmin(w, r)
			return
		}
		if !f.wait(r.Context()) {
			return // the client gave up
		}
		if code := int(f.status.Load()); code != 0 {
			w.Header().Set(InstanceHeader, instance)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "fault: " + http.StatusText(code)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (f *Fault) serveAdmin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPut, http.MethodPost:
		code, delay := 0, time.Duration(0)
		var err error
		if v := r.URL.Query().Get("status"); v != "" {
			if code, err = strconv.Atoi(v); err != nil {
				http.Error(w, "status: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		if v := r.URL.Query().Get("delay"); v != "" {
			if delay, err = time.ParseDuration(v); err != nil {
				http.Error(w, "delay: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		if err := f.Set(code, delay); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	default:
		w.Header().Set("Allow", "GET, PUT, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	code, delay := f.Get()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": code, "delay": delay.String()})
}

// UnaryInterceptor gives unary gRPC calls but health checks the fault, the
// status mapped to its gRPC code (503 UNAVAILABLE, 504 DEADLINE_EXCEEDED,
// 429 RESOURCE_EXHAUSTED, other 5xx INTERNAL, 4xx INVALID_ARGUMENT).
func (f *Fault) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if info.FullMethod == "/grpc.health.v1.Health/Check" {
			return handler(ctx, req)
		}
		if !f.wait(ctx) {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if code := int(f.status.Load()); code != 0 {
			return nil, status.Error(grpcCodeFor(code), "fault: "+http.StatusText(code))
		}
		return handler(ctx, req)
	}
}

func grpcCodeFor(httpStatus int) codes.Code {
	switch {
	case httpStatus == http.StatusServiceUnavailable:
		return codes.Unavailable
	case httpStatus == http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case httpStatus == http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case httpStatus >= 500:
		return codes.Internal
	}
	return codes.InvalidArgument
}

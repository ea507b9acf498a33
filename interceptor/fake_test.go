package interceptor

import (
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRequest is a Request over a map, its keys lower-cased.
type fakeRequest struct {
	method, authority, path, query, proto string
	header                                map[string]string
}

// newRequest makes a request for target ("http://host:port/path?q" or
// "/path"), HTTP/1.1.
func newRequest(method, target string) *fakeRequest {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	host := u.Host
	if host == "" {
		host = "example.com"
	}
	return &fakeRequest{method: method, authority: host, path: u.EscapedPath(), query: u.RawQuery,
		proto: "HTTP/1.1", header: map[string]string{}}
}

// grpcRequest makes a gRPC call to /greeter.Greeter/SayHello.
func grpcRequest() *fakeRequest {
	r := newRequest("POST", "/greeter.Greeter/SayHello")
	r.proto = "HTTP/2.0"
	r.SetHeader("Content-Type", "application/grpc")
	return r
}

func (r *fakeRequest) Method() string            { return r.method }
func (r *fakeRequest) Authority() string         { return r.authority }
func (r *fakeRequest) Path() string              { return r.path }
func (r *fakeRequest) Proto() string             { return r.proto }
func (r *fakeRequest) Header(name string) string { return r.header[strings.ToLower(name)] }
func (r *fakeRequest) SetHeader(name, value string) {
	r.header[strings.ToLower(name)] = value
}
func (r *fakeRequest) DelHeader(name string)  { delete(r.header, strings.ToLower(name)) }
func (r *fakeRequest) SetPath(escaped string) { r.path = escaped }

// headers returns a copy of the header.
func (r *fakeRequest) headers() map[string]string {
	h := make(map[string]string, len(r.header))
	for k, v := range r.header {
		h[k] = v
	}
	return h
}

// fakeResponse is an upstream's response head.
type fakeResponse struct {
	status    int
	header    map[string]string // lower-case keys
	discarded atomic.Int32
}

func response(status int, kv ...string) *fakeResponse {
	r := &fakeResponse{status: status, header: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		r.header[strings.ToLower(kv[i])] = kv[i+1]
	}
	return r
}

func (r *fakeResponse) StatusCode() int           { return r.status }
func (r *fakeResponse) Header(name string) string { return r.header[strings.ToLower(name)] }
func (r *fakeResponse) Discard()                  { r.discarded.Add(1) }

// fakeBody is a request body whose Rewind answers ok.
type fakeBody struct {
	ok      bool
	rewinds int
}

func (b *fakeBody) Rewind() bool { b.rewinds++; return b.ok }

// run answers x with h as the engine does: it marks gRPC requests, calls
// h, records the status (of the response, or of the local reply for an
// error) and the gRPC status, then finishes the exchange. It returns
// what the engine would send: the response, a local reply, or nil (the
// client went away).
func run(h Handler, x *Exchange) (Response, error) {
	x.GRPC = IsGRPC(x.Req)
	resp, err := h.Handle(x)
	if err != nil {
		if lr := ReplyFor(x, err, nil); lr != nil {
			resp = lr
		} else {
			resp = nil
		}
	}
	switch r := resp.(type) {
	case nil:
	case *LocalReply:
		x.Status = r.Status
		if x.GRPC {
			x.SetGRPCStatus(r.GRPCStatus())
			x.Status = 200
		}
	default:
		x.Status = r.StatusCode()
		if x.GRPC {
			x.SetGRPCStatus(r.Header("Grpc-Status"))
		}
	}
	x.Finish()
	return resp, err
}

// final is an innermost handler answering with resp.
func final(resp func(*Exchange) Response) Handler {
	return HandlerFunc(func(x *Exchange) (Response, error) { return resp(x), nil })
}

var (
	_ Request  = (*fakeRequest)(nil)
	_ Response = (*fakeResponse)(nil)
	_ Body     = (*fakeBody)(nil)
)

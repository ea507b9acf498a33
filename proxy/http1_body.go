package proxy

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/http1/wire"
)

// bodyPump copies a request body that is not read whole (large, chunked,
// or waiting for 100-continue) from the client to the upstream in a
// goroutine of its own, so the upstream can answer before it has read it
// all.
type bodyPump struct {
	done chan struct{}
	uc   *upConn
	n    int64 // body bytes copied
	end  int   // where the body ended in the connection's buffer
	err  error
}

// startPump copies the current request's body to uc.
func (c *h1conn) startPump(uc *upConn) {
	pm := &bodyPump{done: make(chan struct{}), uc: uc}
	c.pump = pm
	// The copy uses the buffer after the head, which the head's fields do
	// not reach; leave it room.
	if len(c.in.b)-c.headLen < 4<<10 {
		nb := make([]byte, c.headLen+h1BufSize)
		copy(nb, c.in.b[:c.in.w])
		c.in.b = nb                         // the old one is dropped: the chain's strings point into it
		c.req.ParseRequest(c.in.b[:c.in.w]) //nolint:errcheck // parsed before, parses again
	}
	rq := &c.req
	go func() {
		defer close(pm.done)
		if rq.Chunked {
			pm.n, pm.end, pm.err = c.copyChunked(uc)
		} else {
			pm.n, pm.end, pm.err = c.copyLength(uc, rq.ContentLength)
		}
	}()
}

// copyLength copies n body bytes; the buffer after the head serves the
// copy, and what follows the body stays in it for the next request.
func (c *h1conn) copyLength(uc *upConn, n int64) (int64, int, error) {
	b := &c.in
	pos := c.headLen
	var sent int64
	for {
		avail := int64(b.w - pos)
		take := min(avail, n-sent)
		if take > 0 {
			if _, err := uc.Write(b.b[pos : pos+int(take)]); err != nil {
				return sent, 0, err
			}
			sent += take
			pos += int(take)
		}
		if sent == n {
			return sent, pos, nil
		}
		// Everything buffered is sent: read the next part over it.
		var err error
		if pos, err = c.refillBody(); err != nil {
			return sent, 0, err
		}
	}
}

// refillBody reads the next part of a streamed body over the part already
// sent, right after the head (which stays where the request's fields
// point); it returns where the new bytes start.
func (c *h1conn) refillBody() (int, error) {
	b := &c.in
	b.w = c.headLen
	m, err := c.src.Read(b.b[b.w:])
	b.w += m
	if m == 0 && err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return c.headLen, nil
}

// copyChunked copies a chunked body as it came, up to the end of its
// trailer section.
func (c *h1conn) copyChunked(uc *upConn) (int64, int, error) {
	b := &c.in
	pos := c.headLen
	var ch wire.Chunked
	var sent int64
	for {
		n, done, err := ch.Scan(b.b[pos:b.w])
		if err != nil {
			return sent, 0, fmt.Errorf("request body: %w", err)
		}
		if n > 0 {
			if _, err := uc.Write(b.b[pos : pos+n]); err != nil {
				return sent, 0, err
			}
			sent += int64(n)
			pos += n
		}
		if done {
			return sent, pos, nil
		}
		if pos, err = c.refillBody(); err != nil {
			return sent, 0, err
		}
	}
}

// h1Body is the current request's body as the chain sees it. A whole
// body is in the buffer and can be sent any number of times; a copied
// one, only until the copy starts.
type h1Body struct{ c *h1conn }

// Rewind reports whether a retry can send the body again.
func (b *h1Body) Rewind() bool { return b.c.whole || b.c.pump == nil }

// h1Request is the current request head as the chain sees it: the parsed
// fields, less those deleted, plus those added.
type h1Request struct {
	c      *h1conn
	del    [2]uint64 // bit i: Fields[i] deleted (wire.MaxHeaders ≤ 128)
	added  []addedField
	target string // a rewritten request-target; "" keeps the one sent
	// authority is a rewritten Host; "" keeps the one sent.
	authority string
}

type addedField struct{ name, value string }

func (r *h1Request) reset() {
	r.del = [2]uint64{}
	clear(r.added)
	r.added = r.added[:0]
	r.target, r.authority = "", ""
}

func (r *h1Request) deleted(i int) bool { return r.del[i>>6]&(1<<(i&63)) != 0 }

// Method is the request method.
func (r *h1Request) Method() string { return b2s(r.c.req.Method) }

// Authority is the Host field.
func (r *h1Request) Authority() string {
	if r.authority != "" {
		return r.authority
	}
	return b2s(r.c.req.Host)
}

// SetAuthority rewrites the Host field.
func (r *h1Request) SetAuthority(v string) {
	r.SetHeader("Host", v)
	r.authority = v
}

// Query is the request-target's query, without the '?'.
func (r *h1Request) Query() string {
	t := b2s(r.c.req.Target)
	if r.target != "" {
		t = r.target
	}
	if i := strings.IndexByte(t, '?'); i >= 0 {
		return t[i+1:]
	}
	return ""
}

// HasHeader reports whether the named field is present.
func (r *h1Request) HasHeader(name string) bool {
	for _, f := range r.added {
		if strings.EqualFold(f.name, name) {
			return true
		}
	}
	for i, f := range r.c.req.Fields {
		if !r.deleted(i) && strings.EqualFold(b2s(f.Name), name) {
			return true
		}
	}
	return false
}

// AddHeader adds a field, keeping those of the same name.
func (r *h1Request) AddHeader(name, value string) {
	r.added = append(r.added, addedField{name, value})
}

// Path is the request path as sent, without the query.
func (r *h1Request) Path() string {
	t := b2s(r.c.req.Target)
	if r.target != "" {
		t = r.target
	}
	return pathOf(t)
}

// pathOf is the path of a request-target: origin form, or absolute form
// whose path it takes.
func pathOf(t string) string {
	if len(t) > 0 && t[0] != '/' {
		// absolute-form: scheme://authority/path
		if i := strings.Index(t, "://"); i >= 0 {
			t = t[i+3:]
			j := 0
			for j < len(t) && t[j] != '/' && t[j] != '?' {
				j++
			}
			t = t[j:]
			if t == "" || t[0] == '?' {
				return "/"
			}
		}
	}
	for i := range len(t) {
		if t[i] == '?' {
			return t[:i]
		}
	}
	return t
}

// Proto is HTTP/1.1 or HTTP/1.0.
func (r *h1Request) Proto() string {
	if r.c.req.Minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// Header returns the first value of the named field.
func (r *h1Request) Header(name string) string {
	for i := len(r.added) - 1; i >= 0; i-- {
		if strings.EqualFold(r.added[i].name, name) {
			return r.added[i].value
		}
	}
	for i, f := range r.c.req.Fields {
		if !r.deleted(i) && strings.EqualFold(b2s(f.Name), name) {
			return b2s(f.Value)
		}
	}
	return ""
}

// SetHeader replaces the named fields with one.
func (r *h1Request) SetHeader(name, value string) {
	r.DelHeader(name)
	r.added = append(r.added, addedField{name, value})
}

// DelHeader removes the named fields.
func (r *h1Request) DelHeader(name string) {
	for i, f := range r.c.req.Fields {
		if strings.EqualFold(b2s(f.Name), name) {
			r.del[i>>6] |= 1 << (i & 63)
		}
	}
	kept := r.added[:0]
	for _, f := range r.added {
		if !strings.EqualFold(f.name, name) {
			kept = append(kept, f)
		}
	}
	clear(r.added[len(kept):])
	r.added = kept
}

// SetPath rewrites the request path, keeping the query.
func (r *h1Request) SetPath(escaped string) {
	t := b2s(r.c.req.Target)
	q := ""
	for i := range len(t) {
		if t[i] == '?' {
			q = t[i:]
			break
		}
	}
	r.target = escaped + q
}

// h1Response is the current response head as the chain sees it.
type h1Response struct{ c *h1conn }

// StatusCode is the response status.
func (r *h1Response) StatusCode() int { return r.c.resp.Status }

// Header returns the first value of the named response field.
func (r *h1Response) Header(name string) string { return b2s(r.c.resp.Get(name)) }

// Discard drops the response of a try that is retried, and its
// connection.
func (r *h1Response) Discard() {
	c := r.c
	if c.uc != nil {
		c.uc.Close()
		c.uc = nil
	}
}

// bufPool recycles the engine's 16 KiB connection buffers; grown ones
// are dropped.
type bufPoolT struct{ p sync.Pool }

func newBufPool() *bufPoolT {
	return &bufPoolT{p: sync.Pool{New: func() any { b := make([]byte, h1BufSize); return &b }}}
}

func (bp *bufPoolT) get() *[]byte { return bp.p.Get().(*[]byte) }

func (bp *bufPoolT) put(b *[]byte) {
	if b != nil && cap(*b) == h1BufSize {
		*b = (*b)[:h1BufSize]
		bp.p.Put(b)
	}
}

var (
	_ routable             = (*h1Request)(nil)
	_ interceptor.Response = (*h1Response)(nil)
	_ interceptor.Body     = (*h1Body)(nil)
)

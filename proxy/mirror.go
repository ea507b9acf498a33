package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Request mirroring (the Gateway API's RequestMirror, Envoy's
// request_mirror_policies): a copy of the request goes to another
// cluster, its answer is dropped, and the client never waits for it.

// maxMirrors bounds the mirrored requests in flight: past it, copies are
// dropped (and counted), so a slow mirror costs the sidecar neither
// memory nor goroutines without end.
const maxMirrors = 64

// mirrorTimeout bounds one mirrored request; mirrorAnswer how much of
// its answer is read before the connection is closed.
const (
	mirrorTimeout = 10 * time.Second
	mirrorAnswer  = 64 << 10
)

// mirror sends copies of the current HTTP/1.1 request to the route's
// mirrors. Only a request whose body is whole in the buffer (none, or
// small) is copied; one whose body streams is counted and not mirrored.
func (c *h1conn) mirror() {
	for _, m := range c.rt.mirrors {
		if m.perMillion < 1_000_000 && rand.Uint32N(1_000_000) >= m.perMillion {
			continue
		}
		if !c.whole {
			c.p.Stats.MirrorsSkipped.Add(1)
			continue
		}
		c.p.sendMirror(m.cl, c.mirrorRequest())
	}
}

// mirrorRequest renders the request as it is forwarded, with "-shadow"
// added to its host (as Envoy marks mirrored requests) and its body.
func (c *h1conn) mirrorRequest() []byte {
	rq := &c.req
	body := c.in.b[c.headLen:c.bodyEnd]
	b := make([]byte, 0, 512+len(body))
	b = append(b, rq.Method...)
	b = append(b, ' ')
	if c.view.target != "" {
		b = append(b, c.view.target...)
	} else {
		b = append(b, rq.Target...)
	}
	b = append(b, " HTTP/1.1\r\n"...)
	for i, f := range rq.Fields {
		name := b2s(f.Name)
		if c.view.deleted(i) || rq.IsHopByHop(f) || strings.EqualFold(name, "Host") || strings.EqualFold(name, "Content-Length") {
			continue
		}
		b = appendField(b, f.Name, f.Value)
	}
	for _, f := range c.view.added {
		if strings.EqualFold(f.name, "Host") {
			continue
		}
		b = appendFieldString(b, f.name, f.value)
	}
	b = appendFieldString(b, "Host", shadowHost(c.view.Authority()))
	if rq.Chunked { // a whole chunked body goes as it came
		b = append(b, "Transfer-Encoding: chunked"...)
	} else {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
	}
	b = append(b, "\r\nConnection: close\r\n\r\n"...)
	return append(b, body...)
}

// shadowHost is host with "-shadow" after its name, before any port.
func shadowHost(host string) string {
	if h, port, ok := splitHostPort(host); ok {
		return h + "-shadow:" + port
	}
	return host + "-shadow"
}

// sendMirror sends req to an endpoint of cl in the background and drops
// the answer.
func (p *Proxy) sendMirror(cl *Cluster, req []byte) {
	select {
	case p.mirrors <- struct{}{}:
	default:
		p.Stats.MirrorsDropped.Add(1)
		return
	}
	p.Stats.Mirrored.Add(1)
	go func() {
		defer func() { <-p.mirrors }()
		ep := p.pick(cl, 0, nil)
		if ep == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
		defer cancel()
		uc, err := p.dialUpstream(ctx, poolKey{addr: ep.Addr, mesh: p.meshed(ep)})
		if err != nil {
			return
		}
		defer uc.Close()
		uc.SetDeadline(time.Now().Add(mirrorTimeout)) //nolint:errcheck // a failed set shows on the write
		if _, err := uc.Write(req); err != nil {
			return
		}
		// The answer is dropped unparsed: whoever owns the mirror cannot
		// make the sidecar hold its head or body, only wait for at most
		// mirrorAnswer bytes of it until the timeout.
		io.Copy(io.Discard, io.LimitReader(uc, mirrorAnswer)) //nolint:errcheck // the answer is dropped
	}()
}

package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/security/authz"
)

// forwardTCP copies bytes both ways between c and to, passing on half
// closes; br holds bytes already read from c. The kernel splices where it
// can (io.Copy between TCP connections). registered is called once the
// connection is tracked for draining; e describes it to the TCP observers.
func (p *Proxy) forwardTCP(c net.Conn, br *bufio.Reader, to netip.AddrPort, st *balancer.Stats, mesh meshPeer, registered func(), e *interceptor.Exchange) {
	p.mu.Lock()
	p.tcp[c] = &tcpConn{e: e}
	p.tcpWG.Add(1)
	p.mu.Unlock()
	registered()
	defer func() {
		p.mu.Lock()
		delete(p.tcp, c)
		p.mu.Unlock()
		p.tcpWG.Done()
	}()
	defer c.Close()
	e.Upstream = to
	for _, o := range p.opts.TCPObservers {
		o.TCPOpen(e)
	}
	defer func() {
		e.Duration = time.Since(e.Start)
		for _, o := range p.opts.TCPObservers {
			o.TCPClose(e)
		}
	}()
	if st != nil {
		st.Active.Add(1)
		st.Total.Add(1)
		defer st.Active.Add(-1)
	}
	var up net.Conn
	var err error
	if mesh.on {
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.DialTimeout)
		var tc *tls.Conn
		tc, e.DestinationPrincipal, err = p.dialMTLS(ctx, &net.Dialer{}, to.String(), alpnTCP, mesh.ids)
		cancel()
		if err == nil {
			up, e.MTLS = tc, true
		} else {
			p.opts.Security.HandshakeFailed(interceptor.Outbound)
		}
	} else {
		up, err = net.DialTimeout("tcp", to.String(), p.opts.DialTimeout)
	}
	if err != nil {
		if st != nil {
			st.Failed.Add(1)
		}
		e.Flags |= interceptor.FlagUpstreamConnectFailure
		p.opts.Logger.Debug("tcp upstream unreachable", "upstream", to, "err", err)
		return
	}
	defer up.Close()
	// Drain's deadline closes the upstream too: one that ignores the
	// half close would hold the copy below, and Shutdown, for ever.
	p.mu.Lock()
	tc, tracked := p.tcp[c]
	if tracked {
		tc.up = up
	}
	p.mu.Unlock()
	if !tracked {
		return // closed by a drain's deadline while dialing
	}
	var src io.Reader = c
	if br != nil {
		src = br
	}
	done := make(chan struct{})
	go func() {
		n, _ := io.Copy(up, src) //nolint:errcheck // either side closing ends the copy
		e.AddRequestBytes(n)
		closeWrite(up)
		close(done)
	}()
	n, _ := io.Copy(c, up) //nolint:errcheck // either side closing ends the copy
	e.ResponseBytes = n
	closeWrite(c)
	<-done
}

// tcpConn is a forwarded TCP connection as drain and policy changes see
// it.
type tcpConn struct {
	up net.Conn // nil while dialing
	// e describes the connection; its direction, original destination
	// and peer are set before it is tracked and not changed after.
	e *interceptor.Exchange
}

// recheckTCP closes the inbound TCP connections that t's modes or
// policies refuse: a switch to STRICT or a new DENY applies to
// connections already open, not only to new ones.
func (p *Proxy) recheckTCP(t *Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, tc := range p.tcp {
		e := tc.e
		if e.Direction != interceptor.Inbound {
			continue
		}
		refused := !e.MTLS && t.Strict(e.OriginalDst)
		if !refused {
			refused = !authorize(t.InboundClusters(e.OriginalDst), authz.Request{Principal: e.SourcePrincipal, TCP: true}).Allowed
		}
		if !refused {
			continue
		}
		p.opts.Logger.Info("open TCP connection closed: the new config refuses it", "remote", e.Downstream, "dst", e.OriginalDst)
		c.Close()
		if tc.up != nil {
			tc.up.Close()
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() //nolint:errcheck // best effort half close
	}
}

// dialUpstream opens an HTTP/1.1 upstream connection: plaintext, or the
// mesh's mutual TLS offering tender/http1.1.
func (p *Proxy) dialUpstream(ctx context.Context, key poolKey) (*upConn, error) {
	addr := key.addr.String()
	d := net.Dialer{Timeout: p.opts.DialTimeout, KeepAlive: 30 * time.Second}
	if key.mesh.on {
		tc, id, err := p.dialMTLS(ctx, &d, addr, alpnHTTP1, key.mesh.ids)
		if err != nil {
			p.opts.Security.HandshakeFailed(interceptor.Outbound)
			p.opts.Logger.Warn("mTLS to upstream failed", "upstream", addr, "err", err)
			return nil, fmt.Errorf("mTLS to %s: %w", addr, err)
		}
		return newUpConn(tc, key, id), nil
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newUpConn(c, key, ""), nil
}

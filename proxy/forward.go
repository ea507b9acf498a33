package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// newReverseProxy builds the one ReverseProxy every request goes through:
// streaming both ways (no buffering), hop-by-hop headers removed, trailers
// and Upgrade (WebSocket) passed on, HTTP/2 upstream for HTTP/2 clients.
func (p *Proxy) newReverseProxy() *httputil.ReverseProxy {
	opts := p.opts
	dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	h1 := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	h2 := &http.Transport{
		DialContext:        dialer.DialContext,
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
		Protocols:          new(http.Protocols),
		HTTP2:              &http.HTTP2Config{MaxReceiveBufferPerStream: 4 << 20, MaxReceiveBufferPerConnection: 16 << 20},
	}
	h2.Protocols.SetUnencryptedHTTP2(true)
	// The same over the mesh's mutual TLS: the tunnel is the transports'
	// "plain" connection, its ALPN value says what runs inside.
	h1m, h2m := h1, h2
	if p.clientTLS != nil {
		h1m, h2m = h1.Clone(), h2.Clone()
		h1m.DialContext = p.meshDialer(dialer, alpnHTTP1)
		h2m.DialContext = p.meshDialer(dialer, alpnHTTP2)
	}
	return &httputil.ReverseProxy{
		// The host is set per try, in attempt.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.Host = pr.In.Host
		},
		// Retry wraps the tries; each try picks its endpoint.
		Transport: interceptor.Retry(opts.Resilience)(roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.ProtoMajor == 2 {
				return p.attempt(r, h2, h2m)
			}
			return p.attempt(r, h1, h1m)
		})),
		// 0: a response with a length is written in one go when it ends
		// (a flush per write cost a syscall per write, a quarter of the
		// sidecar's CPU at full load); ReverseProxy still flushes every
		// write of streaming responses (no length: gRPC, chunked, SSE).
		FlushInterval: 0,
		ErrorLog:      nil,
		ModifyResponse: func(resp *http.Response) error {
			req, _ := resp.Request.Context().Value(requestKey{}).(*request)
			if req == nil {
				return nil
			}
			if req.ex.Direction == interceptor.Outbound {
				if v := resp.Header.Get(interceptor.PeerHeader); v != "" {
					if peer, ok := interceptor.ParsePeer(v); ok {
						req.ex.Destination = peer
					}
					resp.Header.Del(interceptor.PeerHeader)
				}
			} else if req.peered {
				resp.Header.Set(interceptor.PeerHeader, p.self)
			}
			if resp.StatusCode >= 500 {
				p.Stats.Upstream5xx.Add(1)
			}
			return nil
		},
		ErrorHandler: p.forwardError,
	}
}

// forwardError answers a request that got no response, as Envoy does:
// 504 and flag UT when its timeout (or a per-try timeout) ran out, 503
// with UH, UF or UC when there was no endpoint, no connection, or the
// connection broke; nothing when the client itself went away (DC).
func (p *Proxy) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	req, _ := r.Context().Value(requestKey{}).(*request)
	var e *interceptor.Exchange
	if req != nil {
		e = &req.ex
	} else {
		e = &interceptor.Exchange{} // flags go nowhere
	}
	var op *net.OpError
	switch {
	case errors.Is(err, errNoEndpoint):
		e.Flags |= interceptor.FlagNoHealthyUpstream
		interceptor.WriteError(w, r, http.StatusServiceUnavailable, "no healthy upstream for "+e.Service)
	case errors.Is(r.Context().Err(), context.DeadlineExceeded), errors.Is(err, interceptor.ErrPerTryTimeout):
		e.Flags |= interceptor.FlagUpstreamTimeout
		p.opts.Resilience.Timeout(e.Service)
		interceptor.WriteError(w, r, http.StatusGatewayTimeout, "upstream request timeout")
	case r.Context().Err() != nil:
		e.Flags |= interceptor.FlagDownstreamReset // the client went away
	case errors.As(err, &op) && op.Op == "dial":
		e.Flags |= interceptor.FlagUpstreamConnectFailure
		p.opts.Logger.Debug("upstream connect failed", "service", e.Service, "upstream", e.Upstream, "err", err)
		interceptor.WriteError(w, r, http.StatusServiceUnavailable, "upstream connect error: "+err.Error())
	default:
		e.Flags |= interceptor.FlagUpstreamReset
		p.opts.Logger.Debug("upstream request failed", "service", e.Service, "upstream", e.Upstream, "err", err)
		interceptor.WriteError(w, r, http.StatusServiceUnavailable, "upstream reset before response: "+err.Error())
	}
}

// meshDialer dials an upstream over the mesh's mutual TLS, offering alpn,
// and remembers the SPIFFE ID the upstream presented.
func (p *Proxy) meshDialer(d *net.Dialer, alpn string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		tc, id, err := p.dialMTLS(ctx, d, addr, alpn)
		if err != nil {
			p.opts.Security.HandshakeFailed(interceptor.Outbound)
			p.opts.Logger.Warn("mTLS to upstream failed", "upstream", addr, "err", err)
			return nil, err
		}
		p.peerIDs.Store(addr, id)
		return upstreamConn{tc}, nil
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// forwardTCP copies bytes both ways between c and to, passing on half
// closes; br holds bytes already read from c. The kernel splices where it
// can (io.Copy between TCP connections). registered is called once the
// connection is tracked for draining; e describes it to the TCP observers.
func (p *Proxy) forwardTCP(c net.Conn, br *bufio.Reader, to netip.AddrPort, st *balancer.Stats, meshed bool, registered func(), e *interceptor.Exchange) {
	p.mu.Lock()
	p.tcp[c] = struct{}{}
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
	if meshed && p.opts.MTLS != nil && p.opts.MTLS.Ready() {
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.DialTimeout)
		var tc *tls.Conn
		tc, e.DestinationPrincipal, err = p.dialMTLS(ctx, &net.Dialer{}, to.String(), alpnTCP)
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

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() //nolint:errcheck // best effort half close
	}
}

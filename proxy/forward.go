package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
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
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			req, _ := pr.In.Context().Value(requestKey{}).(*request)
			pr.Out.URL.Scheme = "http"
			if req != nil {
				pr.Out.URL.Host = req.ex.Upstream.String()
			}
			pr.Out.Host = pr.In.Host
		},
		Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.ProtoMajor == 2 {
				return h2.RoundTrip(r)
			}
			return h1.RoundTrip(r)
		}),
		FlushInterval: -1,
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
				if req.stats != nil {
					req.stats.Failed.Add(1)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			req, _ := r.Context().Value(requestKey{}).(*request)
			if req != nil && req.stats != nil {
				req.stats.Failed.Add(1)
			}
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				if req != nil {
					req.ex.Flags |= interceptor.FlagDownstreamReset
				}
				return // the client went away
			}
			if req != nil {
				var op *net.OpError
				if errors.As(err, &op) && op.Op == "dial" {
					req.ex.Flags |= interceptor.FlagUpstreamConnectFailure
				} else {
					req.ex.Flags |= interceptor.FlagUpstreamReset
				}
			}
			opts.Logger.Debug("upstream request failed", "err", err)
			writeError(w, r, http.StatusBadGateway, "upstream: "+err.Error())
		},
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// writeError answers a failed request the way its client understands:
// gRPC clients get a trailers-only UNAVAILABLE, others an HTTP status.
func writeError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(14)) // UNAVAILABLE
		h.Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("X-Tender-Error", msg)
	http.Error(w, "tender: "+msg, code)
}

// forwardTCP copies bytes both ways between c and to, passing on half
// closes; br holds bytes already read from c. The kernel splices where it
// can (io.Copy between TCP connections). registered is called once the
// connection is tracked for draining; e describes it to the TCP observers.
func (p *Proxy) forwardTCP(c net.Conn, br *bufio.Reader, to netip.AddrPort, st *balancer.Stats, registered func(), e *interceptor.Exchange) {
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
	up, err := net.DialTimeout("tcp", to.String(), p.opts.DialTimeout)
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

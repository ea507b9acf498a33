package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/security/authz"
)

// Direction says which listener a connection came through.
type Direction int

// Directions.
const (
	Outbound Direction = iota
	Inbound
)

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger
	// DetectTimeout bounds protocol sniffing; default 100 ms.
	DetectTimeout time.Duration
	// RegistryOnly refuses outbound connections to unknown destinations
	// instead of passing them through.
	RegistryOnly bool
	// DialTimeout bounds upstream connects; default 5 s.
	DialTimeout time.Duration
	// InboundAddr is where inbound traffic is delivered; default 127.0.0.1.
	InboundAddr netip.Addr
	// Self names this sidecar's workload in metrics, spans and the peer
	// header; unknown/unknown when empty.
	Self interceptor.Peer
	// Interceptors wrap every HTTP request, the first outermost; see
	// package interceptor for the order they expect.
	Interceptors []interceptor.Middleware
	// TCPObservers are told about opaque TCP connections.
	TCPObservers []interceptor.TCPObserver
	// Resilience counts retries, overflows, ejections and timeouts; nil
	// counts nothing.
	Resilience *interceptor.ResilienceMetrics
	// MTLS makes the sidecar speak mutual TLS to meshed endpoints and
	// accept it inbound; nil: plaintext only, and no STRICT mode.
	MTLS MeshTLS
	// Security counts handshake failures, refused plaintext and denied
	// requests; nil counts nothing.
	Security *interceptor.SecurityMetrics
}

// Stats counts what the proxy did.
type Stats struct {
	Requests    [2]atomic.Uint64 // by Direction
	Connections [2]atomic.Uint64
	NoEndpoint  atomic.Uint64
	Upstream5xx atomic.Uint64
}

// Proxy is the sidecar's data plane.
type Proxy struct {
	opts  Options
	table atomic.Pointer[Table]
	Stats Stats

	rp      *httputil.ReverseProxy
	chain   http.Handler
	self    string // opts.Self as interceptor.PeerHeader's value
	servers [2]*http.Server
	lis     [2]*chanListener

	mu        sync.Mutex // guards listeners and tcp
	listeners []net.Listener
	tcp       map[net.Conn]struct{}
	tcpWG     sync.WaitGroup
	closing   bool
	// handoff counts accepted connections not yet handed to an HTTP
	// server or registered as TCP; Shutdown waits for it so no accepted
	// connection is dropped between the two.
	handoff sync.WaitGroup

	// With Options.MTLS: the inbound side's config, the outbound side's by
	// ALPN value, and the SPIFFE ID each upstream address presented.
	serverTLS *tls.Config
	clientTLS map[string]*tls.Config
	peerIDs   sync.Map // "ip:port" → SPIFFE ID
	// inboundOpen: with mutual TLS, inbound connections wait for the first
	// complete config (modes, policies): before it they are refused, not
	// let through unchecked.
	inboundOpen atomic.Bool
}

// New returns a Proxy with an empty table.
func New(opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DetectTimeout <= 0 {
		opts.DetectTimeout = 100 * time.Millisecond
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if !opts.InboundAddr.IsValid() {
		opts.InboundAddr = netip.MustParseAddr("127.0.0.1")
	}
	if opts.Self.Workload == "" || opts.Self.Namespace == "" {
		opts.Self = unknownPeer
	}
	p := &Proxy{opts: opts, tcp: map[net.Conn]struct{}{}, self: opts.Self.String()}
	p.inboundOpen.Store(opts.MTLS == nil)
	if opts.MTLS != nil {
		p.serverTLS = opts.MTLS.ServerConfig()
		p.clientTLS = map[string]*tls.Config{}
		for _, alpn := range []string{alpnHTTP1, alpnHTTP2, alpnTCP} {
			p.clientTLS[alpn] = opts.MTLS.ClientConfig(alpn)
		}
	}
	p.table.Store(NewTable())
	p.rp = p.newReverseProxy()
	p.chain = interceptor.Chain(http.HandlerFunc(p.serveUpstream), opts.Interceptors...)
	for d := range p.servers {
		p.lis[d] = newChanListener()
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		p.servers[d] = &http.Server{
			Handler:           p.handler(Direction(d)),
			Protocols:         protocols,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       5 * time.Minute,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				if sc, ok := c.(*sniffedConn); ok {
					return context.WithValue(ctx, connKey{}, sc)
				}
				return ctx
			},
			ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
		}
		go p.servers[d].Serve(p.lis[d]) //nolint:errcheck // ends with Shutdown
	}
	return p
}

// SetTable installs a new routing table; requests already routed finish on
// the old one.
func (p *Proxy) SetTable(t *Table) { p.table.Store(t) }

// Table returns the current routing table.
func (p *Proxy) Table() *Table { return p.table.Load() }

// OpenInbound lets inbound connections in: the sidecar calls it once the
// first complete config is applied. Without mutual TLS they are let in
// from the start.
func (p *Proxy) OpenInbound() { p.inboundOpen.Store(true) }

// Serve accepts connections of one direction on lis until it is closed.
func (p *Proxy) Serve(lis net.Listener, d Direction) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return net.ErrClosed
	}
	p.listeners = append(p.listeners, lis)
	p.mu.Unlock()
	for {
		c, err := lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			c.Close()
			return nil
		}
		p.handoff.Add(1)
		p.mu.Unlock()
		go p.handle(c, d)
	}
}

// sniffedConn is a downstream connection with its first bytes buffered
// and what the proxy decided about it.
type sniffedConn struct {
	net.Conn
	br  *bufio.Reader
	dst netip.AddrPort
	dir Direction
	// mtls: the connection came over the mesh's mutual TLS from peer (a
	// SPIFFE ID).
	mtls bool
	peer string
}

func (c *sniffedConn) Read(b []byte) (int, error) { return c.br.Read(b) }

type connKey struct{}

// handle routes one accepted connection; it calls p.handoff.Done once the
// connection is owned by an HTTP server or registered as TCP.
func (p *Proxy) handle(c net.Conn, d Direction) {
	var once sync.Once
	release := func() { once.Do(p.handoff.Done) }
	defer release()
	p.Stats.Connections[d].Add(1)
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return
	}
	dst, err := OriginalDst(tc)
	if err != nil {
		p.opts.Logger.Debug("no original destination; closing", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	t := p.table.Load()
	var cl *Cluster
	protocol := ""
	switch d {
	case Outbound:
		cl = t.ByVIP[dst]
		if cl == nil {
			if p.opts.RegistryOnly {
				p.opts.Logger.Debug("refused: destination not in the registry", "dst", dst)
				p.refuseTCP(c, p.tcpExchange(c, d, nil), interceptor.FlagNoRoute)
				return
			}
			// A pod address (headless service, StatefulSet) of a meshed
			// endpoint gets mutual TLS too.
			p.forwardTCP(c, nil, dst, nil, t.MeshedAddrs[dst], release, p.tcpExchange(c, d, nil))
			return
		}
		protocol = cl.Protocol
	case Inbound:
		if !p.inboundOpen.Load() {
			p.opts.Logger.Debug("inbound connection refused: no config yet", "remote", c.RemoteAddr().String(), "dst", dst)
			c.Close()
			return
		}
		cl = t.Endpoint(dst)
	}
	br := bufio.NewReaderSize(c, 16<<10)
	var peer string
	secure := false
	if d == Inbound {
		var tc *tls.Conn
		tc, peer, ok = p.inboundSecurity(c, br, dst, t)
		if !ok {
			return
		}
		if tc != nil {
			// The app protocol is inside the tunnel, named by ALPN.
			c, br, secure = tc, bufio.NewReaderSize(tc, 16<<10), true
			switch tc.ConnectionState().NegotiatedProtocol {
			case alpnTCP:
				protocol = "TCP"
			default:
				protocol = "HTTP"
			}
		}
	}
	switch protocol {
	case "HTTP", "HTTP2", "GRPC":
		protocol = detectHTTP
	case "TCP":
	default:
		protocol = sniff(c, br, p.opts.DetectTimeout)
	}
	if protocol == detectHTTP {
		p.lis[d].push(&sniffedConn{Conn: c, br: br, dst: dst, dir: d, mtls: secure, peer: peer})
		release()
		return
	}
	e := p.tcpExchange(c, d, cl)
	if d == Inbound {
		e.MTLS, e.SourcePrincipal = secure, peer
		if dec := authorize(t.InboundClusters(dst), authz.Request{Principal: peer, TCP: true}); !dec.Allowed {
			p.deny(e, dec, "", "")
			p.refuseTCP(c, e, interceptor.FlagRBACDenied)
			return
		}
		p.forwardTCP(c, br, netip.AddrPortFrom(p.opts.InboundAddr, dst.Port()), nil, false, release, e)
		return
	}
	var h uint64
	if cl.Hashing {
		src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		h = balancer.HashString(src.Addr().String())
	}
	ep := cl.Picker.Pick(h)
	if ep == nil {
		p.Stats.NoEndpoint.Add(1)
		p.opts.Logger.Debug("no healthy endpoint; closing", "cluster", cl.Name)
		p.refuseTCP(c, e, interceptor.FlagNoHealthyUpstream)
		return
	}
	p.forwardTCP(c, br, ep.Addr, ep.Stats, ep.Meshed, release, e)
}

// inboundSecurity terminates the mesh's mutual TLS on an inbound
// connection, or holds one without it to the destination's mode. It
// returns the TLS connection (nil for plaintext, or an app's own TLS) and
// the client's SPIFFE ID; ok is false when it refused the connection and
// closed it.
func (p *Proxy) inboundSecurity(c net.Conn, br *bufio.Reader, dst netip.AddrPort, t *Table) (tc *tls.Conn, peer string, ok bool) {
	if p.serverTLS != nil {
		if meshALPN(c, br, p.opts.DetectTimeout) {
			tc, peer, err := p.acceptMTLS(c, br)
			if err != nil {
				p.opts.Security.HandshakeFailed(interceptor.Inbound)
				p.opts.Logger.Warn("mTLS handshake refused", "remote", c.RemoteAddr().String(), "dst", dst, "err", err)
				c.Close()
				return nil, "", false
			}
			return tc, peer, true
		}
	}
	if t.Strict(dst) {
		cl := t.Endpoint(dst)
		e := p.tcpExchange(c, Inbound, cl)
		p.opts.Security.PlaintextRefused(e.Service)
		p.opts.Logger.Info("plaintext connection refused: the destination takes mutual TLS only (STRICT)",
			"remote", c.RemoteAddr().String(), "dst", dst, "service", e.Service)
		p.refuseTCP(c, e, interceptor.FlagNoMTLS)
		return nil, "", false
	}
	return nil, "", true
}

// authorize decides a request to a destination served by clusters (an
// address in several services gets the policies of all): the first
// denial wins.
func authorize(clusters []*Cluster, r authz.Request) authz.Decision {
	for _, cl := range clusters {
		if dec := cl.Authz.Evaluate(r); !dec.Allowed {
			return dec
		}
	}
	return authz.Decision{Allowed: true}
}

// deny records a request or connection an authorization policy refused.
func (p *Proxy) deny(e *interceptor.Exchange, dec authz.Decision, method, path string) {
	e.Flags |= interceptor.FlagRBACDenied
	p.opts.Security.Denied(e.Service, dec.Policy)
	principal := e.SourcePrincipal
	if principal == "" {
		principal = "(plaintext)"
	}
	p.opts.Logger.Info("denied by authorization policy", "service", e.Service, "source_principal", principal,
		"source", e.Source.String(), "method", method, "path", path, "policy", dec.Policy, "reason", dec.Reason)
}

// refuseTCP closes a connection the proxy will not forward, and tells the
// observers why.
func (p *Proxy) refuseTCP(c net.Conn, e *interceptor.Exchange, why interceptor.Flags) {
	c.Close()
	e.Flags |= why
	for _, o := range p.opts.TCPObservers {
		o.TCPOpen(e)
		o.TCPClose(e)
	}
}

var unknownPeer = interceptor.Peer{Workload: interceptor.Unknown, Namespace: interceptor.Unknown}

// tcpExchange describes an opaque connection for the observers. TCP
// carries no peer header, so the far side's workload is unknown.
func (p *Proxy) tcpExchange(c net.Conn, d Direction, cl *Cluster) *interceptor.Exchange {
	e := &interceptor.Exchange{Start: time.Now(), Downstream: c.RemoteAddr().String(),
		Source: unknownPeer, Destination: unknownPeer}
	if d == Inbound {
		e.Direction, e.Destination = interceptor.Inbound, p.opts.Self
	} else {
		e.Direction, e.Source = interceptor.Outbound, p.opts.Self
	}
	if cl != nil {
		e.Service = cl.Host
	}
	return e
}

// request is the proxy's state of one HTTP request; its Exchange is what
// the interceptors see.
type request struct {
	ex  interceptor.Exchange
	cl  *Cluster
	dst netip.AddrPort // the original destination
	// peered is set when the downstream is a sidecar that sent its
	// identity; the inbound side then answers with its own.
	peered bool
}

type requestKey struct{}

// handler resolves where an HTTP request goes, records it in the request's
// Exchange, and runs the interceptor chain around serveUpstream.
func (p *Proxy) handler(d Direction) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Stats.Requests[d].Add(1)
		sc, _ := r.Context().Value(connKey{}).(*sniffedConn)
		if sc == nil {
			http.Error(w, "tender: no connection info", http.StatusInternalServerError)
			return
		}
		req := &request{dst: sc.dst}
		e := &req.ex
		e.Start = time.Now()
		e.Downstream = r.RemoteAddr
		t := p.table.Load()
		// No h2c upgrade through the sidecar: the upgraded stream would
		// escape the per-request checks (as Envoy refuses it).
		if strings.EqualFold(r.Header.Get("Upgrade"), "h2c") {
			r.Header.Del("Upgrade")
			r.Header.Del("Http2-Settings")
		}
		if d == Outbound {
			e.Direction, e.Source, e.Destination = interceptor.Outbound, p.opts.Self, unknownPeer
			if req.cl = t.ByVIP[sc.dst]; req.cl != nil {
				e.Service = req.cl.Host
				e.Policy = req.cl.Resilience
				r.Header.Set(interceptor.PeerHeader, p.self)
			}
		} else {
			e.Direction, e.Source, e.Destination = interceptor.Inbound, unknownPeer, p.opts.Self
			e.MTLS, e.SourcePrincipal = sc.mtls, sc.peer
			if v := r.Header.Get(interceptor.PeerHeader); v != "" {
				if peer, ok := interceptor.ParsePeer(v); ok {
					e.Source, req.peered = peer, true
				}
				r.Header.Del(interceptor.PeerHeader)
			}
			if req.cl = t.Endpoint(sc.dst); req.cl != nil {
				e.Service = req.cl.Host
			}
		}
		ctx := context.WithValue(interceptor.WithExchange(r.Context(), e), requestKey{}, req)
		p.chain.ServeHTTP(w, r.WithContext(ctx))
	})
}

// serveUpstream forwards; it is the innermost handler of the chain. The
// endpoint is picked per try, in attempt.
func (p *Proxy) serveUpstream(w http.ResponseWriter, r *http.Request) {
	req, _ := r.Context().Value(requestKey{}).(*request)
	if req == nil {
		http.Error(w, "tender: no request state", http.StatusInternalServerError)
		return
	}
	e := &req.ex
	switch {
	case e.Direction == interceptor.Inbound:
		if clusters := p.table.Load().InboundClusters(req.dst); hasAuthz(clusters) {
			// The policy sees the path the app gets: normalised, and
			// forwarded so.
			path, ok := normalizePath(r)
			if !ok {
				interceptor.WriteError(w, r, http.StatusBadRequest, "path with an encoded slash or backslash refused")
				return
			}
			if dec := authorize(clusters, authz.Request{Principal: e.SourcePrincipal, Method: r.Method, Path: path}); !dec.Allowed {
				p.deny(e, dec, r.Method, r.URL.Path)
				interceptor.WriteError(w, r, http.StatusForbidden, "RBAC: access denied")
				return
			}
		}
		e.Upstream = netip.AddrPortFrom(p.opts.InboundAddr, req.dst.Port())
	case req.cl == nil:
		// Not (or no longer) a registered service, e.g. a kept-alive
		// connection whose service went away: send the request where it
		// was going.
		e.Upstream = req.dst
	}
	if r.ProtoMajor == 1 {
		// Stream both ways at once: an upstream may answer before it has
		// read the whole request (echo, bidirectional streaming), and the
		// proxy flushes response headers as they come.
		http.NewResponseController(w).EnableFullDuplex() //nolint:errcheck // only fails for HTTP/2, excluded here
	}
	p.rp.ServeHTTP(w, r)
}

// errNoEndpoint is a try with no endpoint to go to.
var errNoEndpoint = errors.New("no healthy endpoint")

// attempt sends one try of a request: to an endpoint it picks for a
// registered service (another than those tried, none ejected, when it
// can), else to the fixed upstream. It feeds the outcome to outlier
// detection.
func (p *Proxy) attempt(r *http.Request, plain, meshed http.RoundTripper) (*http.Response, error) {
	req, _ := r.Context().Value(requestKey{}).(*request)
	if req == nil {
		return plain.RoundTrip(r)
	}
	e := &req.ex
	rt := plain
	var ep *balancer.Endpoint
	if req.cl != nil && e.Direction == interceptor.Outbound {
		if ep = p.pick(req, r); ep == nil {
			p.Stats.NoEndpoint.Add(1)
			e.Flags |= interceptor.FlagNoHealthyUpstream
			return nil, errNoEndpoint
		}
		e.Upstream = ep.Addr
		e.Tried = append(e.Tried, ep.Addr)
		if e.MTLS = p.meshed(ep); e.MTLS {
			rt = meshed
		}
		ep.Stats.Active.Add(1)
		ep.Stats.Total.Add(1)
	}
	// r is this try's own outgoing request (the reverse proxy's copy, or
	// Retry's clone): point it at the endpoint in place.
	r.URL.Host = e.Upstream.String()
	if deadline, ok := r.Context().Deadline(); ok && interceptor.IsGRPC(r) {
		// The upstream gets what is left of the deadline.
		r.Header.Set("Grpc-Timeout", interceptor.FormatGRPCTimeout(time.Until(deadline)))
	}
	resp, err := rt.RoundTrip(r)
	if ep == nil {
		return resp, err
	}
	if e.MTLS {
		if id, ok := p.peerIDs.Load(r.URL.Host); ok {
			e.DestinationPrincipal = id.(string)
		}
	}
	status, connectFailed := 0, false
	if err != nil {
		var op *net.OpError
		connectFailed = errors.As(err, &op) && op.Op == "dial"
		switch {
		case errors.Is(context.Cause(r.Context()), interceptor.ErrPerTryTimeout):
			status = http.StatusGatewayTimeout // the endpoint was too slow
		case r.Context().Err() != nil:
			status = 0 // the client left or the request's deadline passed: not the endpoint's fault
		default:
			status = http.StatusServiceUnavailable
		}
	} else {
		status = resp.StatusCode
		if resp.Header.Get("Grpc-Status") == "14" { // UNAVAILABLE, trailers-only
			status = http.StatusServiceUnavailable
		}
	}
	if status >= 500 || connectFailed {
		ep.Stats.Failed.Add(1)
	}
	if rs := req.cl.Resilience; rs != nil && (status != 0 || connectFailed) {
		rs.Outlier.RecordOutcome(ep.Stats, req.cl.Endpoints, status, connectFailed, time.Now(), func(x *balancer.Endpoint) {
			p.opts.Resilience.Ejection(e.Service)
			p.opts.Logger.Info("outlier ejected", "cluster", req.cl.Name, "endpoint", x.Addr,
				"ejections", x.Stats.Ejections.Load(), "until", time.Unix(0, x.Stats.EjectedUntil.Load()))
		})
	}
	if err != nil {
		ep.Stats.Active.Add(-1)
		return nil, err
	}
	resp.Body = interceptor.OnClose(resp.Body, func() { ep.Stats.Active.Add(-1) })
	return resp, nil
}

// meshed reports whether the sidecar reaches ep over mutual TLS: ep takes
// it and the sidecar has a certificate (before its first one it speaks
// plaintext, which PERMISSIVE endpoints take).
func (p *Proxy) meshed(ep *balancer.Endpoint) bool {
	return ep.Meshed && p.opts.MTLS != nil && p.opts.MTLS.Ready()
}

// pick chooses an endpoint for a try: not ejected and not tried before,
// when the picker offers one; otherwise the first it offers (Envoy's
// "panic mode": better a doubtful endpoint than none).
func (p *Proxy) pick(req *request, r *http.Request) *balancer.Endpoint {
	cl := req.cl
	var h uint64
	if cl.Hashing {
		// Hash on the header, else on the client address.
		key := r.Header.Get(cl.HashHeader)
		if cl.HashHeader == "" {
			key, _, _ = net.SplitHostPort(r.RemoteAddr)
		}
		h = balancer.HashString(key)
	}
	now := time.Now().UnixNano()
	var first *balancer.Endpoint
	for i := range len(cl.Endpoints) + 1 {
		// Hashing pickers move off an excluded endpoint with the key.
		ep := cl.Picker.Pick(h + uint64(i)*0x9e3779b97f4a7c15)
		if ep == nil {
			return nil
		}
		if first == nil {
			first = ep
		}
		if !ep.Stats.Ejected(now) && !slices.Contains(req.ex.Tried, ep.Addr) {
			return ep
		}
	}
	return first
}

// Shutdown drains: stops accepting, lets in-flight requests and
// connections finish until ctx ends, then closes what is left.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for _, l := range p.listeners {
		l.Close()
	}
	p.mu.Unlock()
	p.handoff.Wait()
	var errs []error
	for _, s := range p.servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			s.Close() //nolint:errcheck // forcing what did not drain
		}
	}
	done := make(chan struct{})
	go func() { p.tcpWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.mu.Lock()
		for c := range p.tcp {
			c.Close()
		}
		p.mu.Unlock()
		<-done
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// chanListener hands sniffed connections to an http.Server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

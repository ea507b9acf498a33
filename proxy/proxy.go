package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
	"github.com/tender-mesh/tender/security/authz"
)

// Direction says which listener a connection came through: the
// direction its requests go, as metrics and spans name it.
type Direction = interceptor.Direction

// Directions.
const (
	Outbound = interceptor.Outbound
	Inbound  = interceptor.Inbound
)

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger
	// DetectTimeout bounds protocol sniffing; default 100 ms.
	DetectTimeout time.Duration
	// OnDemand, if set, is asked about an outbound destination the table
	// does not know before it is taken as unknown: it may fetch the
	// destination's config (xdsclient.Client.Resolve), waiting at most
	// OnDemandTimeout (default 5 s). It hears of every outbound
	// connection to a known destination (Used).
	OnDemand        Resolver
	OnDemandTimeout time.Duration
	// RegistryOnly refuses outbound connections to unknown destinations
	// instead of passing them through.
	RegistryOnly bool
	// DialTimeout bounds upstream connects; default 5 s.
	DialTimeout time.Duration
	// InboundAddr is where inbound traffic is delivered. Unset (the
	// default), it goes to the pod address it was sent to, as Istio does
	// since 1.10: a port the app binds to loopback only stays unreachable
	// from the network, and the app sees a pod address, not loopback, as
	// its caller. 127.0.0.1 is the opt-out for apps that bind to
	// loopback only.
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
	// IdleTimeout closes a keep-alive connection with no request for that
	// long; default 5 min. HeaderTimeout bounds the wait for a request
	// head once its first byte came; default 10 s. MaxHeaderBytes bounds
	// a request head; default 60 KiB (431 beyond).
	IdleTimeout, HeaderTimeout time.Duration
	MaxHeaderBytes             int
	// OwnPorts are the sidecar's listener ports: connections to them on
	// this pod's addresses are refused, not forwarded back to itself.
	OwnPorts []uint16
	// MaxConnections caps the downstream connections open at once in
	// each direction (inbound, outbound: a flood from the network does
	// not take the app's outbound calls with it); one more is closed at
	// accept and counted
	// (Stats.Overflow), as Envoy's max_downstream_connections. 0: no cap.
	MaxConnections int
}

// Stats counts what the proxy did.
type Stats struct {
	Requests    [2]atomic.Uint64 // by Direction
	Connections [2]atomic.Uint64
	NoEndpoint  atomic.Uint64
	Upstream5xx atomic.Uint64
	// BadRequests counts request heads refused before routing (400, 431).
	BadRequests atomic.Uint64
	// AcceptErrors counts failed accepts the listeners went on after
	// (EMFILE and the like); SelfRefused connections to the sidecar's own
	// ports, which would loop.
	AcceptErrors, SelfRefused atomic.Uint64
	// Overflow counts connections closed at accept because
	// Options.MaxConnections were open.
	Overflow atomic.Uint64
	// Mirrored counts request copies sent to a route's mirror;
	// MirrorsDropped those dropped because maxMirrors were in flight,
	// MirrorsSkipped those not made because the body streamed (HTTP/1.1
	// beyond the whole-body size, and every HTTP/2 request).
	Mirrored, MirrorsDropped, MirrorsSkipped atomic.Uint64
}

// temporaryAccept reports whether an accept error leaves the listener
// usable: resource exhaustion and aborted connections.
func temporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EAGAIN, syscall.EINTR, syscall.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Proxy is the sidecar's data plane.
type Proxy struct {
	opts  Options
	table atomic.Pointer[Table]
	Stats Stats

	self  string                   // opts.Self as interceptor.PeerHeader's value
	local atomic.Pointer[localSet] // the pod's addresses, for isLocal
	open  [2]atomic.Int64          // downstream connections open per Direction, with MaxConnections
	// Upstream connections: HTTP/1.1 (one request at a time) and HTTP/2
	// (multiplexed).
	pool   pool
	h2pool h2pool

	mu        sync.Mutex // guards listeners, tcp, h1conns and closing
	listeners []net.Listener
	tcp       map[net.Conn]*tcpConn
	tcpWG     sync.WaitGroup
	h1conns   map[*h1conn]struct{}
	h1WG      sync.WaitGroup
	h2conns   map[*h2conn]struct{}
	h2WG      sync.WaitGroup
	closing   bool
	// mirrors holds a token per mirrored request in flight.
	mirrors chan struct{}
	// handoff counts accepted connections not yet handed to an HTTP
	// server or registered as TCP; Shutdown waits for it so no accepted
	// connection is dropped between the two.
	handoff sync.WaitGroup

	// With Options.MTLS: the inbound side's config, the outbound side's by
	// ALPN value.
	serverTLS *tls.Config
	clientTLS map[string]*tls.Config
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
	if opts.Self.Workload == "" || opts.Self.Namespace == "" {
		opts.Self = unknownPeer
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = 10 * time.Second
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 60 << 10
	}
	p := &Proxy{opts: opts, tcp: map[net.Conn]*tcpConn{}, h1conns: map[*h1conn]struct{}{}, h2conns: map[*h2conn]struct{}{}, self: opts.Self.String(),
		mirrors: make(chan struct{}, maxMirrors)}
	p.inboundOpen.Store(opts.MTLS == nil)
	if opts.MTLS != nil {
		p.serverTLS = opts.MTLS.ServerConfig()
		p.clientTLS = map[string]*tls.Config{}
		for _, alpn := range []string{alpnHTTP1, alpnHTTP2, alpnTCP} {
			p.clientTLS[alpn] = opts.MTLS.ClientConfig(alpn)
		}
	}
	p.table.Store(NewTable())
	p.pool.dial = p.dialUpstream
	return p
}

// SetTable installs a new routing table; requests already routed finish on
// the old one.
// Inbound TCP connections the new table refuses are closed; HTTP
// requests are checked one by one.
func (p *Proxy) SetTable(t *Table) {
	lt := *t // the caller's table stays as it was; the maps are shared, read-only
	lt.Localize(p.opts.Self.Namespace, LocalAddrs())
	if lt.defaults == nil && p.opts.MTLS == nil {
		// No defaults (a control plane of an earlier release) and no
		// mutual TLS to ask for: STRICT could only refuse everything.
		lt.ownStrict = false
	}
	t = &lt
	p.table.Store(t)
	p.recheckTCP(t)
}

// Trim closes the upstream connections that have been idle longer than
// the pool keeps them and returns how many; the sidecar calls it now and
// then, so that an endpoint called once does not hold its connections
// for ever.
func (p *Proxy) Trim() int { return p.pool.reap(time.Now()) }

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
	var backoff time.Duration
	for {
		c, err := lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if temporaryAccept(err) {
				// Out of file descriptors or memory, or a connection that
				// was reset before it was accepted: wait and go on, as
				// net/http does; the listener itself is fine.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.Stats.AcceptErrors.Add(1)
				p.opts.Logger.Warn("accept failed; retrying", "listener", lis.Addr().String(), "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: %s listener: %w", d, err)
		}
		backoff = 0
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			c.Close()
			return nil
		}
		p.handoff.Add(1)
		p.mu.Unlock()
		open := &p.open[d]
		if limit := int64(p.opts.MaxConnections); limit > 0 && open.Add(1) > limit {
			open.Add(-1)
			p.handoff.Done()
			p.Stats.Overflow.Add(1)
			if p.Stats.Overflow.Load()%1000 == 1 { // not a line per connection under a flood
				p.opts.Logger.Warn("connection refused: too many open", "listener", lis.Addr().String(), "max_connections", limit,
					"refused_so_far", p.Stats.Overflow.Load())
			}
			c.Close()
			continue
		}
		go func() {
			p.handle(c, d) // returns when the connection is done
			if p.opts.MaxConnections > 0 {
				open.Add(-1)
			}
		}()
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

// Resolver fetches the config of destinations on demand.
type Resolver interface {
	// Resolve returns true once ip's config is in the table, false when
	// nothing is known at ip or wait ended first. Once ip is answered it
	// must return at once: it is asked per request.
	Resolve(ip netip.Addr, wait time.Duration) bool
	// Used notes traffic to ip (a connection, a request).
	Used(ip netip.Addr)
}

// onDemand is what OnDemand makes of an outbound destination the table t
// maps to cl: unknown (and not a meshed pod address), or known but its
// endpoints not come yet (another connection's resolve under way), it
// waits for the answer and returns the table and cluster after it; and
// it notes the traffic. Without OnDemand it returns t and cl.
func (p *Proxy) onDemand(t *Table, dst netip.AddrPort, cl *Cluster) (*Table, *Cluster) {
	od := p.opts.OnDemand
	if od == nil {
		return t, cl
	}
	if _, meshed := t.MeshedAddrs[dst]; (cl == nil && !meshed || cl.pending()) && p.resolve(dst.Addr()) {
		t = p.table.Load()
		cl = t.ByVIP[dst]
	}
	od.Used(dst.Addr())
	return t, cl
}

// resolve asks OnDemand about ip, waiting at most OnDemandTimeout.
func (p *Proxy) resolve(ip netip.Addr) bool {
	timeout := p.opts.OnDemandTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	start := time.Now()
	ok := p.opts.OnDemand.Resolve(ip, timeout)
	if d := time.Since(start); d > time.Millisecond {
		p.opts.Logger.Debug("on-demand config", "addr", ip, "found", ok, "waited", d)
	}
	return ok
}

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
	dst, err := originalDst(tc)
	if err != nil {
		p.opts.Logger.Debug("no original destination; closing", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	if slices.Contains(p.opts.OwnPorts, dst.Port()) && (d == Inbound || p.isLocal(dst.Addr())) {
		// A connection to one of the sidecar's own ports (POD_IP:15006,
		// :15001) would be forwarded to the sidecar again, and again:
		// refused, as Istio's blackhole rules do.
		p.Stats.SelfRefused.Add(1)
		p.opts.Logger.Debug("refused: a connection to the sidecar's own port", "remote", c.RemoteAddr(), "dst", dst)
		c.Close()
		return
	}
	t := p.table.Load()
	var cl *Cluster
	protocol := ""
	switch d {
	case Outbound:
		t, cl = p.onDemand(t, dst, t.ByVIP[dst])
		if cl == nil {
			if p.opts.RegistryOnly {
				p.opts.Logger.Debug("refused: destination not in the registry", "dst", dst)
				p.refuseTCP(c, p.tcpExchange(c, d, dst, nil), interceptor.FlagNoRoute)
				return
			}
			// A pod address (headless service, StatefulSet) of a meshed
			// endpoint gets mutual TLS too.
			p.forwardTCP(c, nil, dst, nil, p.meshedAddr(dst), release, p.tcpExchange(c, d, dst, nil))
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
		sc := &sniffedConn{Conn: c, br: br, dst: dst, dir: d, mtls: secure, peer: peer}
		if isH2(sc, p.opts.HeaderTimeout) {
			p.serveH2(sc, d, release)
			return
		}
		release()
		p.serveHTTP1(sc)
		return
	}
	e := p.tcpExchange(c, d, dst, cl)
	if d == Inbound {
		e.MTLS, e.SourcePrincipal = secure, peer
		if dec := authorize(t.InboundClusters(dst), authz.Request{Principal: peer, TCP: true}); !dec.Allowed {
			p.deny(e, dec, "", "")
			p.refuseTCP(c, e, interceptor.FlagRBACDenied)
			return
		}
		to, ok := p.inboundTarget(dst)
		if !ok {
			p.refuseTCP(c, e, interceptor.FlagNoRoute)
			return
		}
		p.forwardTCP(c, br, to, nil, meshPeer{}, release, e)
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
	p.forwardTCP(c, br, ep.Addr, ep.Stats, p.meshed(ep), release, e)
}

// inboundSecurity terminates the mesh's mutual TLS on an inbound
// connection, or holds one without it to the destination's mode. It
// returns the TLS connection (nil for plaintext, or an app's own TLS) and
// the client's SPIFFE ID; ok is false when it refused the connection and
// closed it.
func (p *Proxy) inboundSecurity(c net.Conn, br *bufio.Reader, dst netip.AddrPort, t *Table) (tc *tls.Conn, peer string, ok bool) {
	if p.serverTLS != nil {
		// How long to wait for a client's first bytes: a server-first
		// protocol (the app speaks first) shows as silence, which only
		// an undeclared or TCP port taking plaintext can be. Anywhere
		// else a mesh client's hello may come late (a loaded node, a
		// post-quantum key share) and must not be taken for plaintext.
		wait := p.opts.DetectTimeout
		if t.Strict(dst) || clientFirst(t.Endpoint(dst)) {
			wait = helloWait
		}
		if meshALPN(c, br, wait) {
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
		e := p.tcpExchange(c, Inbound, dst, cl)
		p.opts.Security.PlaintextRefused(e.Service)
		p.opts.Logger.Info("plaintext connection refused: the destination takes mutual TLS only (STRICT)",
			"remote", c.RemoteAddr().String(), "dst", dst, "service", e.Service)
		p.refuseTCP(c, e, interceptor.FlagNoMTLS)
		return nil, "", false
	}
	return nil, "", true
}

// helloWait is how long the inbound side waits for a client's first
// bytes where silence cannot be a server-first protocol: far beyond a
// mesh client's hello on a loaded node, short enough that silent
// connections do not hold --max-connections slots for long.
const helloWait = 3 * time.Second

// clientFirst reports whether cl's port speaks a protocol whose client
// sends first (HTTP/1.1, HTTP/2, gRPC).
func clientFirst(cl *Cluster) bool {
	if cl == nil {
		return false
	}
	switch cl.Protocol {
	case "HTTP", "HTTP2", "GRPC":
		return true
	}
	return false
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
func (p *Proxy) tcpExchange(c net.Conn, d Direction, dst netip.AddrPort, cl *Cluster) *interceptor.Exchange {
	e := &interceptor.Exchange{Start: time.Now(), Downstream: c.RemoteAddr().String(),
		Source: unknownPeer, Destination: unknownPeer, OriginalDst: dst}
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
	// HTTP/1.1: idle connections close now, busy ones after their
	// response.
	p.mu.Lock()
	for c := range p.h1conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			c.c.Close()
		}
	}
	// HTTP/2: GOAWAY, and the streams in flight finish.
	for c := range p.h2conns {
		c.drain()
	}
	p.mu.Unlock()
	var errs []error
	done := make(chan struct{})
	go func() { p.tcpWG.Wait(); p.h1WG.Wait(); p.h2WG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// Both sides close at the deadline: an upstream that ignores a
		// half close must not hold the drain.
		p.mu.Lock()
		for c, tc := range p.tcp {
			c.Close()
			if tc.up != nil {
				tc.up.Close()
			}
			delete(p.tcp, c)
		}
		for c := range p.h1conns {
			c.closeBoth()
		}
		for c := range p.h2conns {
			go c.fail(errH2Closed)
		}
		p.mu.Unlock()
		<-done
		errs = append(errs, ctx.Err())
	}
	p.pool.closeIdle()
	p.h2pool.closeAll()
	return errors.Join(errs...)
}

// LocalAddrs lists this host's (pod's) addresses, loopback aside.
func LocalAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && !ip.IsLoopback() {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// isLocal reports whether a is one of this host's (pod's) addresses.
// The addresses are read once and again at most every second, when one
// is not found (a pod's addresses seldom change).
func (p *Proxy) isLocal(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	if l := p.local.Load(); l != nil && (slices.Contains(l.addrs, a) || time.Since(l.read) < time.Second) {
		return slices.Contains(l.addrs, a)
	}
	l := &localSet{addrs: LocalAddrs(), read: time.Now()}
	p.local.Store(l)
	return slices.Contains(l.addrs, a)
}

// localSet is what isLocal last read of the pod's addresses.
type localSet struct {
	addrs []netip.Addr
	read  time.Time
}

// inboundTarget is where an inbound connection sent to dst is delivered:
// InboundAddr when set, else dst itself, one of the pod's own addresses.
// A destination that is not the pod's (a packet an attacker addressed to
// another host, which REDIRECT takes in all the same) is refused, not
// dialled: the sidecar is no relay.
func (p *Proxy) inboundTarget(dst netip.AddrPort) (netip.AddrPort, bool) {
	if p.opts.InboundAddr.IsValid() {
		return netip.AddrPortFrom(p.opts.InboundAddr, dst.Port()), true
	}
	// Loopback too: a captured connection never legitimately goes to
	// it, and a packet sent from the network to 127.0.0.1 (REDIRECT
	// takes it in before the kernel's martian check) would otherwise
	// reach the ports the app binds to loopback only.
	if a := dst.Addr().Unmap(); a.IsLoopback() || a.IsUnspecified() || !p.isLocal(a) {
		p.opts.Logger.Debug("refused: inbound destination is not this pod's address", "dst", dst)
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), true
}

package proxy

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// The steps every HTTP request takes, HTTP/1.1 and HTTP/2 alike: route
// to a cluster, run the chain, choose where each try goes.

// routed is where routing sent a request.
type routed struct {
	// cl is the cluster the request goes to; nil: the original
	// destination (not a registered service), or inbound.
	cl     *Cluster
	peered bool
	// entry is the route the request matched; nil when its service has
	// no routes of its own.
	entry *routeEntry
	// reply answers the request instead of an upstream: a redirect, a
	// direct response, no route (404), no cluster.
	reply *interceptor.LocalReply
}

// route finds a request's destination and records it in x: outbound, the
// cluster the routes of the VIP's service choose (its own when it has
// none), inbound the cluster of this pod's address; and the peer
// sidecar's identity. HTTP/1.1 and HTTP/2 both route here.
func (p *Proxy) route(x *interceptor.Exchange, d Direction, sc *sniffedConn) (r routed) {
	t := p.table.Load()
	x.OriginalDst = sc.dst
	if d == Outbound {
		x.Direction, x.Source, x.Destination = interceptor.Outbound, p.opts.Self, unknownPeer
		// Per request: a kept-alive connection keeps its subscription,
		// and finds its destination's config again should it have gone.
		_, cl := p.onDemand(t, sc.dst, t.ByVIP[sc.dst])
		if cl == nil {
			x.Req.DelHeader(interceptor.PeerHeader) // the app's own is not passed off as a sidecar's
			return routed{}
		}
		x.Service = cl.Host
		x.Policy = cl.Resilience
		x.Req.SetHeader(interceptor.PeerHeader, p.self)
		if rt := cl.Routes; rt != nil && !rt.simple {
			return p.routeRequest(x, rt)
		}
		return routed{cl: cl}
	}
	x.Direction, x.Source, x.Destination = interceptor.Inbound, unknownPeer, p.opts.Self
	x.MTLS, x.SourcePrincipal = sc.mtls, sc.peer
	if v := x.Req.Header(interceptor.PeerHeader); v != "" {
		if peer, ok := p.peerClaim(v, x.SourcePrincipal, x.MTLS); ok {
			x.Source, r.peered = interceptor.Peer{Workload: strings.Clone(peer.Workload), Namespace: strings.Clone(peer.Namespace)}, true
		}
		x.Req.DelHeader(interceptor.PeerHeader)
	}
	if r.cl = t.Endpoint(sc.dst); r.cl != nil {
		x.Service = r.cl.Host
	}
	return r
}

// peerClaim is what a peer sidecar's PeerHeader says of it, as far as it
// can be believed; it names workloads in telemetry only (authorization
// reads the certificate alone). Over mutual TLS the claimed namespace
// must be the one of the peer's certificate, else only the certificate's
// namespace is kept. In plaintext, from a sidecar of a mesh with mutual
// TLS, the peer is no one the mesh vouches for: the claim is ignored. In
// a mesh without mutual TLS there is nothing better, and it is taken.
func (p *Proxy) peerClaim(v, principal string, mtls bool) (interceptor.Peer, bool) {
	if !mtls && p.opts.MTLS != nil {
		return interceptor.Peer{}, false
	}
	peer, ok := interceptor.ParsePeer(v)
	if !mtls {
		return peer, ok
	}
	ns := namespaceOf(principal)
	if ns == "" {
		return interceptor.Peer{}, false
	}
	if !ok || peer.Namespace != ns {
		return interceptor.Peer{Workload: interceptor.Unknown, Namespace: ns}, true
	}
	return peer, true
}

// namespaceOf is the namespace of a SPIFFE ID the mesh's certificates
// carry (spiffe://TD/ns/NAMESPACE/sa/ACCOUNT, checked when the handshake
// read it), without allocating; "" for any other shape.
func namespaceOf(principal string) string {
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return ""
	}
	_, path, _ := strings.Cut(rest, "/")
	rest, ok = strings.CutPrefix(path, "ns/")
	if !ok {
		return ""
	}
	ns, _, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || strings.Contains(ns, "/") {
		return ""
	}
	return ns
}

// routeRequest follows a service's routes: the first that matches
// chooses a cluster by weight (or answers itself) and edits the request.
// A request that matches none is refused (404, NR), as GAMMA says.
func (p *Proxy) routeRequest(x *interceptor.Exchange, rt *routeTable) routed {
	q := x.Req.(routable)
	path, query := q.Path(), q.Query()
	e := rt.match(q, path, query)
	if e == nil {
		x.Policy = nil
		x.Flags |= interceptor.FlagNoRoute
		return routed{reply: noRoute}
	}
	switch {
	case e.reply != nil:
		x.Policy = nil
		return routed{entry: e, reply: e.reply}
	case e.redirect != nil:
		x.Policy = nil
		return routed{entry: e, reply: e.redirectReply(q, path, query)}
	}
	tg := e.pick()
	if tg.cl == nil {
		x.Policy = nil
		x.Flags |= interceptor.FlagNoRoute
		return routed{entry: e, reply: e.notFound}
	}
	e.applyRequest(q, path)
	x.Service, x.Policy = tg.cl.Host, tg.policy
	return routed{cl: tg.cl, entry: e}
}

var noRoute = interceptor.Reply(http.StatusNotFound, "no route matched the request")

// chain is the whole per-request chain, outermost first: the sidecar's
// interceptors (metrics, access log, tracing, fault, timeout, circuit
// breaker; see cmd/sidecar), then authorization (inbound), then Retry
// around try, which sends one try to an endpoint it picks.
func (p *Proxy) chain(try interceptor.Handler) interceptor.Handler {
	mws := make([]interceptor.Middleware, 0, len(p.opts.Interceptors)+2)
	mws = append(mws, p.opts.Interceptors...)
	mws = append(mws, p.authorize, interceptor.Retry(p.opts.Resilience))
	return interceptor.Chain(try, mws...)
}

// authorize applies the authorization policies of the destination's
// services to an inbound request, on the path the app gets: normalised,
// and forwarded so.
func (p *Proxy) authorize(next interceptor.Handler) interceptor.Handler {
	return interceptor.HandlerFunc(func(x *interceptor.Exchange) (interceptor.Response, error) {
		if x.Direction != interceptor.Inbound {
			return next.Handle(x)
		}
		clusters := p.table.Load().InboundClusters(x.OriginalDst)
		if !x.MTLS && strict(clusters) {
			// The connection came in plaintext while that was allowed; the
			// destination is STRICT now, so no more of its requests are.
			x.Flags |= interceptor.FlagNoMTLS
			p.opts.Security.PlaintextRefused(x.Service)
			return interceptor.Reply(http.StatusForbidden, "plaintext refused: the destination takes mutual TLS only (STRICT)"), nil
		}
		if !hasAuthz(clusters) {
			return next.Handle(x)
		}
		raw := x.Req.Path()
		path, clean, ok := normalizeEscapedPath(raw)
		if !ok {
			return interceptor.Reply(http.StatusBadRequest, "path with an encoded slash or backslash refused"), nil
		}
		if clean != raw {
			x.Req.SetPath(clean)
		}
		if dec := authorize(clusters, authzRequest(x, path)); !dec.Allowed {
			p.deny(x, dec, x.Req.Method(), path)
			return interceptor.Reply(http.StatusForbidden, "RBAC: access denied"), nil
		}
		return next.Handle(x)
	})
}

// errNotLocal answers an inbound request whose destination is not one of
// the pod's addresses (503, UH): the sidecar relays to its own pod only.
var errNotLocal = fmt.Errorf("%w: inbound destination is not this pod's address", interceptor.ErrNoEndpoint)

// choose picks where a try goes: an endpoint of the cluster (another
// than those tried, when it can), the app (inbound), or the original
// destination (not a registered service).
func (p *Proxy) choose(x *interceptor.Exchange, cl *Cluster, hashKey string) (poolKey, *balancer.Endpoint, error) {
	switch {
	case x.Direction == interceptor.Inbound:
		to, ok := p.inboundTarget(x.OriginalDst)
		if !ok {
			return poolKey{}, nil, errNotLocal
		}
		x.Upstream = to
		return poolKey{addr: x.Upstream}, nil, nil
	case cl == nil:
		// Not (or no longer) a registered service, e.g. a kept-alive
		// connection whose service went away: send the request where it
		// was going.
		x.Upstream = x.OriginalDst
		return poolKey{addr: x.Upstream, mesh: p.meshedAddr(x.Upstream)}, nil, nil
	}
	var h uint64
	if cl.Hashing {
		h = balancer.HashString(hashKey)
	}
	ep := p.pick(cl, h, x.Tried)
	if ep == nil {
		p.Stats.NoEndpoint.Add(1)
		return poolKey{}, nil, interceptor.ErrNoEndpoint
	}
	x.Upstream = ep.Addr
	x.Tried = append(x.Tried, ep.Addr)
	return poolKey{addr: ep.Addr, mesh: p.meshed(ep)}, ep, nil
}

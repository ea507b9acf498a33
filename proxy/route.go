package proxy

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/tender-mesh/tender/interceptor"
	"github.com/tender-mesh/tender/proxy/balancer"
)

// The steps every HTTP request takes, HTTP/1.1 and HTTP/2 alike: route
// to a cluster, run the chain, choose where each try goes.

// route finds a request's destination and records it in x: the cluster
// of the VIP it was sent to (outbound), or of this pod's address
// (inbound), and the peer sidecar's identity. HTTP/1.1 and HTTP/2 both
// route here.
func (p *Proxy) route(x *interceptor.Exchange, d Direction, sc *sniffedConn) (cl *Cluster, peered bool) {
	t := p.table.Load()
	x.OriginalDst = sc.dst
	if d == Outbound {
		x.Direction, x.Source, x.Destination = interceptor.Outbound, p.opts.Self, unknownPeer
		if cl = t.ByVIP[sc.dst]; cl != nil {
			x.Service = cl.Host
			x.Policy = cl.Resilience
			x.Req.SetHeader(interceptor.PeerHeader, p.self)
		} else {
			x.Req.DelHeader(interceptor.PeerHeader) // the app's own is not passed off as a sidecar's
		}
		return cl, false
	}
	x.Direction, x.Source, x.Destination = interceptor.Inbound, unknownPeer, p.opts.Self
	x.MTLS, x.SourcePrincipal = sc.mtls, sc.peer
	if v := x.Req.Header(interceptor.PeerHeader); v != "" {
		if peer, ok := interceptor.ParsePeer(v); ok {
			x.Source, peered = interceptor.Peer{Workload: strings.Clone(peer.Workload), Namespace: strings.Clone(peer.Namespace)}, true
		}
		x.Req.DelHeader(interceptor.PeerHeader)
	}
	if cl = t.Endpoint(sc.dst); cl != nil {
		x.Service = cl.Host
	}
	return cl, peered
}

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

// choose picks where a try goes: an endpoint of the cluster (another
// than those tried, when it can), the app (inbound), or the original
// destination (not a registered service).
func (p *Proxy) choose(x *interceptor.Exchange, cl *Cluster, hashKey string) (poolKey, *balancer.Endpoint, error) {
	switch {
	case x.Direction == interceptor.Inbound:
		x.Upstream = netip.AddrPortFrom(p.opts.InboundAddr, x.OriginalDst.Port())
		return poolKey{addr: x.Upstream}, nil, nil
	case cl == nil:
		// Not (or no longer) a registered service, e.g. a kept-alive
		// connection whose service went away: send the request where it
		// was going.
		x.Upstream = x.OriginalDst
		return poolKey{addr: x.Upstream, meshed: p.meshedAddr(x.Upstream)}, nil, nil
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
	return poolKey{addr: ep.Addr, meshed: p.meshed(ep)}, ep, nil
}

package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/tender-mesh/tender/interceptor"
)

// The upstream side of the HTTP/2 relay: pooled connections to an
// endpoint (h2c, or h2 inside the mesh's mutual TLS), each multiplexing
// the streams of many clients.

// upstreamIdle closes an upstream HTTP/2 connection without streams for
// this long.
const upstreamIdle = 60 * time.Second

// h2pool keeps the upstream HTTP/2 connections per endpoint.
type h2pool struct {
	mu    sync.Mutex
	conns map[poolKey][]*h2conn
}

// get returns a connection to key with room for a stream, dialing one
// when none has.
func (pl *h2pool) get(p *Proxy, key poolKey) (*h2conn, error) {
	pl.mu.Lock()
	for _, hc := range pl.conns[key] {
		hc.mu.Lock()
		ok := !hc.closed && !hc.goaway && hc.active < int(hc.peerStreams) && hc.nextID < 1<<31
		hc.mu.Unlock()
		if ok {
			pl.mu.Unlock()
			return hc, nil
		}
	}
	pl.mu.Unlock()
	hc, err := p.dialH2(key)
	if err != nil {
		return nil, err
	}
	pl.mu.Lock()
	if pl.conns == nil {
		pl.conns = map[poolKey][]*h2conn{}
	}
	pl.conns[key] = append(pl.conns[key], hc)
	pl.mu.Unlock()
	return hc, nil
}

// remove drops a connection that closed or goes away.
func (pl *h2pool) remove(hc *h2conn) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	list := pl.conns[hc.key]
	for i, c := range list {
		if c == hc {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(pl.conns, hc.key)
	} else {
		pl.conns[hc.key] = list
	}
}

// closeAll closes every upstream connection (the proxy shuts down).
func (pl *h2pool) closeAll() {
	pl.mu.Lock()
	var all []*h2conn
	for _, list := range pl.conns {
		all = append(all, list...)
	}
	clear(pl.conns)
	pl.mu.Unlock()
	for _, hc := range all {
		hc.fail(errH2Closed)
	}
}

// dialH2 opens an upstream HTTP/2 connection.
func (p *Proxy) dialH2(key poolKey) (*h2conn, error) {
	addr := key.addr.String()
	d := net.Dialer{Timeout: p.opts.DialTimeout, KeepAlive: 30 * time.Second}
	var c net.Conn
	var id string
	if key.mesh.on {
		tc, peer, err := p.dialMTLS(context.Background(), &d, addr, alpnHTTP2, key.mesh.ids)
		if err != nil {
			p.opts.Security.HandshakeFailed(interceptor.Outbound)
			p.opts.Logger.Warn("mTLS to upstream failed", "upstream", addr, "err", err)
			return nil, fmt.Errorf("mTLS to %s: %w", addr, err)
		}
		c, id = tc, peer
	} else {
		var err error
		if c, err = d.Dial("tcp", addr); err != nil {
			return nil, err
		}
	}
	hc := newH2Conn(c, bufio.NewReaderSize(c, 16<<10), false, p.opts.MaxHeaderBytes)
	hc.key, hc.peerID, hc.nextID = key, id, 1
	hc.neverRead.Store(true)
	hc.idle = time.AfterFunc(upstreamIdle, func() {
		hc.mu.Lock()
		idle := hc.active == 0
		hc.mu.Unlock()
		if idle {
			p.h2pool.remove(hc)
			hc.goAway(0, http2.ErrCodeNo, "idle")
		}
	})
	hc.start()
	go p.readUp(hc)
	return hc, nil
}

// readUp reads an upstream's frames until its connection ends.
func (p *Proxy) readUp(hc *h2conn) {
	err := p.readUpFrames(hc)
	p.h2pool.remove(hc)
	hc.idle.Stop()
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		p.opts.Logger.Debug("upstream HTTP/2 protocol error; closing", "upstream", hc.key.addr, "err", err)
		hc.goAway(0, http2.ErrCode(ce), "")
		return
	}
	hc.fail(err)
}

func (p *Proxy) readUpFrames(hc *h2conn) error {
	for {
		f, err := hc.rfr.ReadFrame()
		if errors.Is(err, http2.ErrFrameTooLarge) {
			return http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				hc.mu.Lock()
				hc.reset(se.StreamID, se.Code)
				hc.mu.Unlock()
				if s := hc.stream(se.StreamID); s != nil {
					s.upReset(hc, se.Code, false)
				}
				continue
			}
			return err
		}
		hc.neverRead.Store(false)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := hc.stream(f.StreamID); s != nil {
				s.onRespHeaders(hc, f)
			}
		case *http2.DataFrame:
			if err := hc.takeData(f.Length); err != nil {
				return err
			}
			if s := hc.stream(f.StreamID); s != nil {
				s.onRespData(hc, f)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				if err := hc.windowUpdate(f.Increment); err != nil {
					return err
				}
			} else if s := hc.stream(f.StreamID); s != nil {
				if err := s.onWindow(hc, f.Increment); err != nil {
					s.upReset(hc, http2.ErrCodeFlowControl, false)
				}
			}
		case *http2.SettingsFrame:
			if err := hc.applySettings(f); err != nil {
				return err
			}
		case *http2.PingFrame:
			if err := hc.ping(f); err != nil {
				return err
			}
		case *http2.RSTStreamFrame:
			if s := hc.stream(f.StreamID); s != nil {
				s.upReset(hc, f.ErrCode, f.ErrCode == http2.ErrCodeRefusedStream)
			}
		case *http2.GoAwayFrame:
			p.upGoAway(hc, f.LastStreamID)
		case *http2.PushPromiseFrame:
			return http2.ConnectionError(http2.ErrCodeProtocol) // push is off
		}
		if hc.flooded() {
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
	}
}

// upGoAway takes an upstream's GOAWAY: no new streams on the connection;
// those it did not take go again elsewhere; it closes once the others
// are done.
func (p *Proxy) upGoAway(hc *h2conn, last uint32) {
	p.h2pool.remove(hc)
	hc.mu.Lock()
	hc.goaway = true
	var refused []*h2stream
	for id, s := range hc.streams {
		if id > last {
			refused = append(refused, s)
		}
	}
	done := hc.active == 0
	hc.mu.Unlock()
	for _, s := range refused {
		s.upReset(hc, http2.ErrCodeRefusedStream, true)
	}
	if done {
		hc.fail(io.EOF)
	}
}

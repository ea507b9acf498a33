package security

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxRemembered bounds the tokens a FailureCache remembers and the peers
// a PeerLimiter keeps a bucket for.
const maxRemembered = 4096

// FailureCache is an Authenticator that remembers, for TTL, the tokens
// the one it wraps refused (errors wrapping ErrUnauthenticated), and
// refuses them again without asking: a caller retrying a bad token costs
// one TokenReview per TTL, not one per call, and cannot starve the
// client-go rate limiter the control plane's informers share. Errors of
// the authenticator itself (the API server unreachable) are not
// remembered.
type FailureCache struct {
	next Authenticator
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex // guards refused
	refused map[[sha256.Size]byte]refusal
}

type refusal struct {
	err   error
	until time.Time
}

// NewFailureCache wraps next; ttl 0 remembers nothing.
func NewFailureCache(next Authenticator, ttl time.Duration) *FailureCache {
	return &FailureCache{next: next, ttl: ttl, now: time.Now, refused: map[[sha256.Size]byte]refusal{}}
}

// Name implements Authenticator.
func (c *FailureCache) Name() string { return c.next.Name() }

// Authenticate implements Authenticator.
func (c *FailureCache) Authenticate(ctx context.Context, token string) (Caller, error) {
	if c.ttl <= 0 {
		return c.next.Authenticate(ctx, token)
	}
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	r, ok := c.refused[key]
	if ok && now.After(r.until) {
		delete(c.refused, key)
		ok = false
	}
	c.mu.Unlock()
	if ok {
		return Caller{}, r.err
	}
	caller, err := c.next.Authenticate(ctx, token)
	if err != nil && errors.Is(err, ErrUnauthenticated) {
		c.mu.Lock()
		if len(c.refused) >= maxRemembered {
			for k, v := range c.refused {
				if now.After(v.until) || len(c.refused) >= maxRemembered {
					delete(c.refused, k)
				}
			}
		}
		c.refused[key] = refusal{err: err, until: now.Add(c.ttl)}
		c.mu.Unlock()
	}
	return caller, err
}

// PeerLimiter is a token bucket (x/time/rate) per peer address: Allow
// says whether a peer may make one more call now.
type PeerLimiter struct {
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu    sync.Mutex // guards peers
	peers map[netip.Addr]*rate.Limiter
}

// NewPeerLimiter lets each peer make r calls a second, burst at once; r 0
// or less: no limit.
func NewPeerLimiter(r float64, burst int) *PeerLimiter {
	return &PeerLimiter{rate: rate.Limit(r), burst: max(burst, 1), now: time.Now, peers: map[netip.Addr]*rate.Limiter{}}
}

// Allow takes a token from addr's bucket.
func (l *PeerLimiter) Allow(addr netip.Addr) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	addr = addr.Unmap()
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.peers[addr]
	if !ok {
		if len(l.peers) >= maxRemembered {
			// Full buckets are the same as none: forget them.
			for a, o := range l.peers {
				if o.TokensAt(now) >= float64(l.burst) {
					delete(l.peers, a)
				}
			}
			if len(l.peers) >= maxRemembered {
				return false
			}
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.peers[addr] = lim
	}
	return lim.AllowN(now, 1)
}

var _ Authenticator = (*FailureCache)(nil)

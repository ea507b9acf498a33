package security

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// countingAuth accepts "good", refuses others, and fails (not a refusal)
// on "down".
type countingAuth struct{ calls int }

func (a *countingAuth) Name() string { return "counting" }

func (a *countingAuth) Authenticate(_ context.Context, token string) (Caller, error) {
	a.calls++
	switch token {
	case "good":
		return Caller{Namespace: "ns", ServiceAccount: "sa"}, nil
	case "down":
		return Caller{}, errors.New("api server unreachable")
	}
	return Caller{}, Refuse("bad token")
}

func TestFailureCache(t *testing.T) {
	next := &countingAuth{}
	c := NewFailureCache(next, 10*time.Second)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	for range 100 {
		if _, err := c.Authenticate(ctx, "bad"); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("got %v, want ErrUnauthenticated", err)
		}
	}
	if next.calls != 1 {
		t.Errorf("100 calls with one bad token: got %d reviews, want 1", next.calls)
	}
	now = now.Add(11 * time.Second)
	c.Authenticate(ctx, "bad") //nolint:errcheck // counted
	if next.calls != 2 {
		t.Errorf("after the TTL: got %d reviews, want 2", next.calls)
	}
	for range 3 {
		c.Authenticate(ctx, "down") //nolint:errcheck // counted
		if caller, err := c.Authenticate(ctx, "good"); err != nil || caller.ServiceAccount != "sa" {
			t.Fatalf("good token: got %v %v", caller, err)
		}
	}
	if next.calls != 8 {
		t.Errorf("failures of the reviewer and good tokens: got %d reviews, want each asked (8)", next.calls)
	}
	for i := range 2 * maxRemembered {
		c.Authenticate(ctx, fmt.Sprint("bad", i)) //nolint:errcheck // bounded
	}
	if n := len(c.refused); n > maxRemembered {
		t.Errorf("got %d tokens remembered, want at most %d", n, maxRemembered)
	}
}

func TestPeerLimiter(t *testing.T) {
	l := NewPeerLimiter(2, 4)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	allowed := 0
	for range 10 {
		if l.Allow(a) {
			allowed++
		}
	}
	if allowed != 4 {
		t.Errorf("a burst of 10: got %d allowed, want 4", allowed)
	}
	if !l.Allow(b) {
		t.Error("another peer: got refused, want allowed")
	}
	now = now.Add(time.Second)
	got := []bool{l.Allow(a), l.Allow(a), l.Allow(a)}
	if !got[0] || !got[1] || got[2] {
		t.Errorf("after a second at 2/s: got %v, want two calls allowed, then refused", got)
	}
	if !NewPeerLimiter(0, 0).Allow(a) {
		t.Error("rate 0: got refused, want no limit")
	}
}

package balancer

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func endpoints(weights ...uint32) []*Endpoint {
	var out []*Endpoint
	for i, w := range weights {
		out = append(out, &Endpoint{Addr: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:80", i+1)), Weight: w, Healthy: true, Stats: &Stats{}})
	}
	return out
}

func share(t *testing.T, p Picker, n int, hash func(i int) uint64) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		e := p.Pick(hash(i))
		if e == nil {
			t.Fatal("Pick returned nil with healthy endpoints")
		}
		got[e.Addr.String()]++
	}
	return got
}

func TestWeightedSpread(t *testing.T) {
	for _, policy := range []string{"ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "RING_HASH", "MAGLEV"} {
		t.Run(policy, func(t *testing.T) {
			p, err := New(policy, endpoints(1, 1, 2), Locality{})
			if err != nil {
				t.Fatal(err)
			}
			const n = 40000
			got := share(t, p, n, func(i int) uint64 { return HashString(strconv.Itoa(i)) })
			want := map[string]float64{"10.0.0.1:80": 0.25, "10.0.0.2:80": 0.25, "10.0.0.3:80": 0.5}
			tolerance := 0.03
			if policy == "RING_HASH" {
				tolerance = 0.08 // a 1024-point ring is only roughly even
			}
			for addr, w := range want {
				if s := float64(got[addr]) / n; math.Abs(s-w) > tolerance {
					t.Errorf("%s got %.3f of picks, want %.2f ± %.2f (%v)", addr, s, w, tolerance, got)
				}
			}
		})
	}
}

func TestRoundRobinIsExact(t *testing.T) {
	p, _ := New("ROUND_ROBIN", endpoints(1, 1, 1), Locality{})
	got := share(t, p, 300, func(int) uint64 { return 0 })
	for addr, n := range got {
		if n != 100 {
			t.Errorf("%s got %d of 300, want 100", addr, n)
		}
	}
}

func TestHashIsSticky(t *testing.T) {
	for _, policy := range []string{"RING_HASH", "MAGLEV"} {
		eps := endpoints(1, 1, 1, 1)
		p1, _ := New(policy, eps, Locality{})
		p2, _ := New(policy, eps, Locality{})
		for i := range 1000 {
			h := HashString("user-" + strconv.Itoa(i))
			if a, b := p1.Pick(h), p2.Pick(h); a != b || a != p1.Pick(h) {
				t.Fatalf("%s: key %d went to %v and %v, want one endpoint", policy, i, a.Addr, b.Addr)
			}
		}
	}
}

func TestLeastRequestAvoidsBusy(t *testing.T) {
	eps := endpoints(1, 1, 1)
	eps[0].Stats.Active.Store(100)
	p, _ := New("LEAST_REQUEST", eps, Locality{})
	got := share(t, p, 9000, func(int) uint64 { return 0 })
	if s := float64(got["10.0.0.1:80"]) / 9000; s > 0.15 {
		t.Errorf("busy endpoint got %.2f of picks, want at most ~1/9", s)
	}
}

func TestSelectFailover(t *testing.T) {
	eps := endpoints(1, 1, 1, 1)
	eps[0].Locality, eps[1].Locality = Locality{Zone: "z1"}, Locality{Zone: "z2"}
	eps[2].Priority, eps[3].Priority = 1, 1
	eps[3].Locality = Locality{Zone: "z1"}
	tests := []struct {
		name    string
		mutate  func()
		local   Locality
		wantIdx []int
	}{
		{"local zone first", func() {}, Locality{Zone: "z1"}, []int{0}},
		{"no locality: whole priority 0", func() {}, Locality{}, []int{0, 1}},
		{"local zone down: rest of priority", func() { eps[0].Healthy = false }, Locality{Zone: "z1"}, []int{1}},
		{"priority 0 down: priority 1, local first", func() { eps[0].Healthy, eps[1].Healthy = false, false }, Locality{Zone: "z1"}, []int{3}},
		{"all down", func() {
			for _, e := range eps {
				e.Healthy = false
			}
		}, Locality{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, e := range eps {
				e.Healthy = true
			}
			tt.mutate()
			got := Select(eps, tt.local)
			if len(got) != len(tt.wantIdx) {
				t.Fatalf("got %d endpoints, want %v", len(got), tt.wantIdx)
			}
			for i, idx := range tt.wantIdx {
				if got[i] != eps[idx] {
					t.Errorf("got %v, want endpoint %d", got[i].Addr, idx)
				}
			}
		})
	}
	p, _ := New("ROUND_ROBIN", nil, Locality{})
	if p.Pick(0) != nil {
		t.Error("Pick over no endpoints returned one")
	}
	if _, err := New("FASTEST", eps, Locality{}); err == nil {
		t.Error("New accepted an unknown policy")
	}
}

func BenchmarkPick(b *testing.B) {
	for _, policy := range []string{"ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "MAGLEV"} {
		b.Run(policy, func(b *testing.B) {
			p, _ := New(policy, endpoints(1, 2, 3, 4, 5, 6, 7, 8), Locality{})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				p.Pick(uint64(i) * 0x9e3779b97f4a7c15)
			}
		})
	}
}

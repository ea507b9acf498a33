package xdsclient

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestMaxAddrs: past maxAddrs a new address is taken as unknown at once,
// without a subscription; the ones held stay.
func TestMaxAddrs(t *testing.T) {
	c := New(Options{OnDemand: true})
	for i := range maxAddrs {
		if c.Resolve(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 0) {
			t.Fatal("an address resolved without a control plane")
		}
	}
	extra := netip.MustParseAddr("10.9.9.9")
	if c.Resolve(extra, 0) {
		t.Fatal("an address past the bound resolved")
	}
	if n := len(c.addrs); n != maxAddrs || c.addrs[extra] != nil || c.overflow.Load() != 1 {
		t.Fatalf("got %d addresses held (the extra one held: %v), %d refused; want %d, no, 1", n, c.addrs[extra] != nil, c.overflow.Load(), maxAddrs)
	}
}

// TestMaxIndexClusters: an index naming more than maxIndexClusters
// clusters is refused; one at the bound is read.
func TestMaxIndexClusters(t *testing.T) {
	names := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("outbound|80||s%d.default.svc.cluster.local", i)
		}
		return out
	}
	name := AddressIndexName(netip.MustParseAddr("10.96.0.1"))
	if got, err := IndexClusters(AddressIndex(name, names(maxIndexClusters))); err != nil || len(got) != maxIndexClusters {
		t.Fatalf("an index of %d clusters: got %d, %v", maxIndexClusters, len(got), err)
	}
	if _, err := IndexClusters(AddressIndex(name, names(maxIndexClusters+1))); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("an index of %d clusters: got %v, want refused", maxIndexClusters+1, err)
	}
}

package xds

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// BenchmarkOnDemandResolve is what the first connection to a service
// costs an on-demand sidecar: from the connection's Resolve to the
// service's config applied (the address index, the cluster, its route
// configuration and load assignment: four subscriptions' round trips to
// a control plane on loopback), in a mesh of 10,000 services. Each
// iteration resolves a service not resolved before, and the sidecar
// keeps the ones before it: the cost grows a little with what it holds
// (the set it subscribes to is computed again per response).
func BenchmarkOnDemandResolve(b *testing.B) {
	const services = 10_000
	all := make([]discovery.Service, services)
	for i := range all {
		all[i] = vsvc(fmt.Sprintf("svc-%d", i), vipOf(i), fmt.Sprintf("10.200.%d.%d", i/250%250, i%250+1))
	}
	s := NewServer(Options{})
	if err := s.Apply(snapshot(1, all...)); err != nil {
		b.Fatal(err)
	}
	lis := startServer(b, s)
	c := xdsclient.New(xdsclient.Options{Addr: lis, OnDemand: true, Apply: func(*xdsclient.Config) error { return nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if !c.Resolve(netip.MustParseAddr(vipOf(i%services)), time.Minute) {
			b.Fatalf("service %d not resolved", i)
		}
	}
}

func vipOf(i int) string { return fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256) }

package xds

import (
	"net/netip"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// addressIndexes builds the index of every address of the mesh (VIPs
// and endpoint addresses): for each, the route configuration
// xdsclient.AddressIndexName naming the clusters of the service ports at
// that address, sorted by address.
func addressIndexes(services []discovery.Service) []types.Resource {
	idx := indexAddresses(services)
	addrs := make([]netip.Addr, 0, len(idx))
	for a := range idx {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	out := make([]types.Resource, len(addrs))
	for i, a := range addrs {
		out[i] = xdsclient.AddressIndex(xdsclient.AddressIndexName(a), idx[a])
	}
	return out
}

// indexAddresses maps every address of the mesh to the sorted clusters
// at it.
func indexAddresses(services []discovery.Service) map[netip.Addr][]string {
	idx := map[netip.Addr][]string{}
	add := func(a netip.Addr, name string) {
		a = a.Unmap()
		if l := idx[a]; len(l) == 0 || l[len(l)-1] != name {
			idx[a] = append(l, name)
		}
	}
	for i := range services {
		s := &services[i]
		for _, p := range s.Ports {
			name := ClusterName(s, p)
			if s.VIP.IsValid() {
				add(s.VIP, name)
			}
			for j := range s.Endpoints {
				if a := s.Endpoints[j].Address; a.IsValid() {
					add(a, name)
				}
			}
		}
	}
	for a, l := range idx {
		slices.Sort(l)
		idx[a] = slices.Compact(l)
	}
	return idx
}

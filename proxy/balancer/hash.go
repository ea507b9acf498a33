package balancer

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sort"
)

func init() {
	Register("RING_HASH", newRingHash)
	Register("MAGLEV", newMaglev)
}

// seed is fixed per process: one key maps to one endpoint for the life of
// the sidecar (and across config pushes that keep the endpoint set).
var seed = maphash.MakeSeed()

// HashString hashes a request key (a header value, a source address).
func HashString(s string) uint64 { return maphash.String(seed, s) }

func hashEndpoint(e *Endpoint, i uint64) uint64 {
	b := e.Addr.AppendTo(nil)
	b = binary.LittleEndian.AppendUint64(b, i)
	return maphash.Bytes(seed, b)
}

// ringHash places each endpoint on a ring many times, in proportion to its
// weight; a key goes to the first endpoint clockwise of its hash.
type ringHash struct {
	hashes []uint64
	eps    []*Endpoint
}

const ringSize = 1024

func newRingHash(eps []*Endpoint) Picker {
	var total uint64
	for _, e := range eps {
		total += uint64(weightOf(e))
	}
	type point struct {
		h uint64
		e *Endpoint
	}
	var points []point
	for _, e := range eps {
		n := max(1, ringSize*uint64(weightOf(e))/total)
		for i := range n {
			points = append(points, point{hashEndpoint(e, i), e})
		}
	}
	slices.SortFunc(points, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return 0
	})
	r := &ringHash{hashes: make([]uint64, len(points)), eps: make([]*Endpoint, len(points))}
	for i, p := range points {
		r.hashes[i], r.eps[i] = p.h, p.e
	}
	return r
}

func (r *ringHash) Pick(h uint64) *Endpoint {
	i := sort.Search(len(r.hashes), func(i int) bool { return r.hashes[i] >= h })
	if i == len(r.hashes) {
		i = 0
	}
	return r.eps[i]
}

// maglev fills a lookup table by the Maglev permutation method (Google's
// Maglev paper, as in Envoy): even spread, minimal disruption on change.
type maglev struct{ table []*Endpoint }

const maglevSize = 65537 // prime, as Envoy's default

func newMaglev(eps []*Endpoint) Picker {
	n := len(eps)
	offset, skip := make([]uint64, n), make([]uint64, n)
	for i, e := range eps {
		offset[i] = hashEndpoint(e, 0) % maglevSize
		skip[i] = hashEndpoint(e, 1)%(maglevSize-1) + 1
	}
	next := make([]uint64, n)
	table := make([]*Endpoint, maglevSize)
	filled := 0
	// Weighted: an endpoint takes weight turns per round.
	for filled < maglevSize {
		for i, e := range eps {
			for range weightOf(e) {
				c := (offset[i] + next[i]*skip[i]) % maglevSize
				for table[c] != nil {
					next[i]++
					c = (offset[i] + next[i]*skip[i]) % maglevSize
				}
				table[c] = e
				next[i]++
				filled++
				if filled == maglevSize {
					return &maglev{table: table}
				}
			}
		}
	}
	return &maglev{table: table}
}

func (m *maglev) Pick(h uint64) *Endpoint { return m.table[h%maglevSize] }

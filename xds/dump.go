package xds

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tender-mesh/tender/discovery"
)

// Dump is the served config, for /debug/config.
type Dump struct {
	// SnapshotVersion is the registry snapshot the resources come from.
	SnapshotVersion uint64               `json:"snapshotVersion"`
	Created         time.Time            `json:"created"`
	Applied         time.Time            `json:"applied"`
	Services        []discovery.Service  `json:"services"`
	Conflicts       []discovery.Conflict `json:"conflicts,omitempty"`
	// Routes is what tender made of each Gateway API route.
	Routes    []RouteStatus        `json:"routes"`
	Resources map[string]TypedDump `json:"resources"`
}

// TypedDump is the resources of one type with their version.
type TypedDump struct {
	Version   string            `json:"version"`
	Resources []json.RawMessage `json:"resources"`
}

// Dump returns the served config; ok is false before the first Apply.
func (s *Server) Dump() (d *Dump, ok bool, err error) {
	st := s.state.Load()
	if st == nil {
		return nil, false, nil
	}
	d = &Dump{
		SnapshotVersion: st.snapshot.Version,
		Created:         st.snapshot.Created,
		Applied:         st.applied,
		Services:        st.snapshot.Services,
		Conflicts:       st.snapshot.Conflicts,
		Routes:          st.routes,
		Resources:       make(map[string]TypedDump, len(st.resources)),
	}
	for _, typ := range typeOrder {
		td := TypedDump{Version: st.versions[typ], Resources: []json.RawMessage{}}
		for _, r := range st.resources[typ] {
			b, err := protojson.Marshal(proto.Message(r))
			if err != nil {
				return nil, true, fmt.Errorf("xds: dump %s: %w", typ, err)
			}
			td.Resources = append(td.Resources, b)
		}
		d.Resources[typ] = td
	}
	return d, true, nil
}

// Ready reports whether a snapshot has been applied.
func (s *Server) Ready() bool { return s.state.Load() != nil }

package xdsclient

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// errBadResource marks a resource the client cannot decode.
var errBadResource = errors.New("bad resource")

// merge applies a delta response to a copy of cur. Maps of the types the
// response does not carry are shared with cur: a Config is never
// modified once built.
func merge(cur *Config, resp *discoveryv3.DeltaDiscoveryResponse) (*Config, error) {
	next := *cur
	next.Versions = maps.Clone(cur.Versions)
	var err error
	switch resp.GetTypeUrl() {
	case ClusterType:
		if next.Clusters, err = decode(cur.Clusters, resp, "cluster"); err != nil {
			return nil, err
		}
		// The mesh's default modes travel as a cluster; they are no
		// destination. decode returned a copy: deleting from it is safe.
		if d, ok := next.Clusters[MeshDefaultsCluster]; ok {
			next.Defaults = d
			delete(next.Clusters, MeshDefaultsCluster)
		} else if slices.Contains(resp.GetRemovedResources(), MeshDefaultsCluster) {
			next.Defaults = nil
		}
		// Assignments of removed clusters go with them (only those: on
		// demand, an assignment may come before its cluster).
		if len(resp.GetRemovedResources()) > 0 {
			next.Endpoints = maps.Clone(cur.Endpoints)
			for _, name := range resp.GetRemovedResources() {
				delete(next.Endpoints, name)
			}
		}
	case EndpointType:
		next.Endpoints, err = decode(cur.Endpoints, resp, "load assignment")
	case RouteType:
		next.Routes, err = decode(cur.Routes, resp, "route configuration")
	case SecretType:
		next.Secrets, err = decode(cur.Secrets, resp, "secret")
	default:
		err = fmt.Errorf("%w: unexpected type %s", errBadResource, resp.GetTypeUrl())
	}
	if err != nil {
		return nil, err
	}
	next.Versions[resp.GetTypeUrl()] = resp.GetSystemVersionInfo()
	next.ResourceVersions = maps.Clone(cur.ResourceVersions)
	rv := maps.Clone(cur.ResourceVersions[resp.GetTypeUrl()])
	if rv == nil {
		rv = map[string]string{}
	}
	for _, r := range resp.GetResources() {
		rv[r.GetName()] = r.GetVersion()
	}
	for _, name := range resp.GetRemovedResources() {
		delete(rv, name)
	}
	next.ResourceVersions[resp.GetTypeUrl()] = rv
	if resp.GetTypeUrl() == ClusterType {
		// Those of the assignments that went with their clusters.
		next.ResourceVersions[EndpointType] = keepVersions(cur.ResourceVersions[EndpointType], next.Endpoints)
	}
	return &next, nil
}

// keepVersions returns the versions of the names m has.
func keepVersions[V any](versions map[string]string, m map[string]V) map[string]string {
	out := make(map[string]string, len(m))
	for name, v := range versions {
		if _, ok := m[name]; ok {
			out[name] = v
		}
	}
	return out
}

// decode returns a copy of cur with the response's resources, each
// decoded into a new *T, added or replaced and its removed ones deleted.
func decode[T any, PT interface {
	*T
	proto.Message
}](cur map[string]PT, resp *discoveryv3.DeltaDiscoveryResponse, kind string) (map[string]PT, error) {
	next := maps.Clone(cur)
	for _, r := range resp.GetResources() {
		m := PT(new(T))
		if err := r.GetResource().UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("%w: %s %s: %w", errBadResource, kind, r.GetName(), err)
		}
		next[r.GetName()] = m
	}
	for _, name := range resp.GetRemovedResources() {
		delete(next, name)
	}
	return next, nil
}

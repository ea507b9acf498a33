package xdsclient

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Config is what a sidecar has applied: every cluster and its load
// assignment. It is immutable once handed to Options.Apply.
type Config struct {
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
	// Routes carry the services' timeouts, retries and fault injection.
	Routes map[string]*routev3.RouteConfiguration
	// Secrets holds the SDS secrets the client asked for: the trust
	// bundle, RootCAName.
	Secrets map[string]*tlsv3.Secret
	// Versions holds the control plane's version per type URL.
	Versions map[string]string
	// ResourceVersions holds, per type URL, each resource's version as
	// the control plane sent it: a reconnecting client names them, and a
	// control plane that has the same content sends nothing again.
	ResourceVersions map[string]map[string]string
	// Defaults is MeshDefaultsCluster, kept apart from Clusters (it has
	// no endpoints and routes nothing); nil when the control plane sent
	// none.
	Defaults *clusterv3.Cluster
	// Unresolved counts the pod's own addresses an on-demand client has
	// no answer for yet.
	Unresolved int
}

// emptyConfig is the config before the first update.
func emptyConfig() *Config {
	return &Config{
		Clusters:  map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Routes:    map[string]*routev3.RouteConfiguration{},
		Secrets:   map[string]*tlsv3.Secret{},
		Versions:  map[string]string{},

		ResourceVersions: map[string]map[string]string{},
	}
}

// Complete reports whether clusters came, every cluster has its load
// assignment, every cluster of a service its route configuration, and
// (on demand) the pod's own addresses their answer.
func (c *Config) Complete() bool {
	if c.Versions[ClusterType] == "" || c.Unresolved > 0 {
		return false
	}
	for name, cl := range c.Clusters {
		if _, ok := c.Endpoints[name]; !ok {
			return false
		}
		if r := RouteNameOf(cl); r != "" && c.Routes[r] == nil {
			return false
		}
	}
	return true
}

// RouteNameOf names the RouteConfiguration of a cluster the translator
// made (its listener's name, HOST:PORT), from the cluster's metadata; ""
// for other clusters.
func RouteNameOf(c *clusterv3.Cluster) string {
	m, err := ClusterMetaOf(c)
	if err != nil {
		return ""
	}
	return m.RouteName()
}

// Locality is where pod ("namespace/name") runs, as the control plane
// said; ok is false when it said nothing or nothing is known.
func (c *Config) Locality(pod string) (Locality, bool) {
	rc := c.Routes[PodLocalityName(pod)]
	if rc == nil {
		return Locality{}, false
	}
	return PodLocality(rc)
}

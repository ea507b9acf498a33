package xds

import (
	"strconv"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

// ListenerName is the listener and route configuration name of a service
// port: NAME.NAMESPACE.svc.cluster.local:PORT, what grpc-go asks for when
// it resolves xds:///NAME.NAMESPACE.svc.cluster.local:PORT.
func ListenerName(s *discovery.Service, p discovery.Port) string {
	return s.Hostname() + ":" + strconv.FormatUint(uint64(p.Number), 10)
}

// ClusterName is the cluster and load assignment name of a service port:
// outbound|PORT||NAME.NAMESPACE.svc.cluster.local, as in Istio.
func ClusterName(s *discovery.Service, p discovery.Port) string {
	return xdsclient.ClusterName(s.Hostname(), p.Number)
}

// domains lists the authorities a client may use for a service port: the
// short and qualified names, with and without the port, and the VIP.
func domains(s *discovery.Service, p discovery.Port) []string {
	port := ":" + strconv.FormatUint(uint64(p.Number), 10)
	names := []string{
		s.Hostname(),
		s.Name,
		s.Name + "." + s.Namespace,
		s.Name + "." + s.Namespace + ".svc",
	}
	if s.VIP.IsValid() {
		names = append(names, s.VIP.String())
	}
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		if s.VIP.IsValid() && n == s.VIP.String() && s.VIP.Is6() {
			out = append(out, "["+n+"]"+port, "["+n+"]")
			continue
		}
		out = append(out, n+port, n)
	}
	return out
}

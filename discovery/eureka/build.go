package eureka

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tender-mesh/tender/discovery"
)

// Instance metadata keys tender reads.
const (
	metaNamespace = "tender.dev/namespace"
	metaProtocol  = "tender.dev/protocol"
	metaPort      = "tender.dev/port"
	metaVIP       = "tender.dev/vip"
	metaLB        = "tender.dev/lb"
	metaZone      = "zone"
	// dataCenterInfo metadata key of an Amazon instance's zone.
	metaAvailabilityZone = "availability-zone"
)

// securePortName names the service port of Eureka's securePort; the mesh
// relays it as opaque TCP (it carries the instance's own TLS).
const securePortName = "https"

// member is one instance in a service: its application and id sort it.
type member struct {
	app string
	id  string
	in  *instance
}

// names are the services an instance is part of: its application's name
// and each of its vipAddress names (comma-separated), lower case.
func names(app string, in *instance) []string {
	out := []string{strings.ToLower(app)}
	for v := range strings.SplitSeq(in.VIPAddress, ",") {
		if v = strings.ToLower(strings.TrimSpace(v)); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// build maps a registry to tender services. Every application becomes a
// service, and so does every vipAddress, holding the instances of all
// applications that name it (as Eureka clients look instances up by VIP);
// usually the vipAddress is the application's own name and both are one.
// A service whose attributes are invalid is left out with a warning: one
// bad registration must not take the others down.
func (s *Source) build(t table) []discovery.Service {
	groups := map[string][]member{} // by namespace/name
	for _, app := range slices.Sorted(maps.Keys(t)) {
		for _, id := range slices.Sorted(maps.Keys(t[app])) {
			in := t[app][id]
			ns := cmp.Or(in.Metadata[metaNamespace], s.opts.Namespace)
			for _, name := range names(app, &in) {
				key := ns + "/" + name
				groups[key] = append(groups[key], member{app: app, id: id, in: &in})
			}
		}
	}
	var out []discovery.Service
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		ms := groups[key]
		ns, name, _ := strings.Cut(key, "/")
		svc, err := s.service(ns, name, ms)
		if err == nil {
			err = svc.Validate()
		}
		if err != nil {
			s.opts.Logger.Warn("eureka service ignored", "service", key, "app", ms[0].app, "err", err)
			continue
		}
		out = append(out, svc)
	}
	return out
}

func (s *Source) service(ns, name string, ms []member) (discovery.Service, error) {
	first := ms[0].in
	md := first.Metadata
	svc := discovery.Service{Name: name, Namespace: ns}
	proto, err := discovery.ParseProtocol(strings.ToUpper(md[metaProtocol]))
	if err != nil {
		return svc, err
	}
	if svc.Policy.LB, err = discovery.ParseLBPolicy(strings.ToUpper(md[metaLB])); err != nil {
		return svc, err
	}
	// The VIP belongs to the application's own service, not to the
	// services of its vipAddress names.
	if v := md[metaVIP]; v != "" && strings.ToLower(ms[0].app) == name {
		if svc.VIP, err = netip.ParseAddr(v); err != nil {
			return svc, err
		}
	}
	plainName := strings.ToLower(string(proto))
	if plainName == "" {
		plainName = "default"
	}
	plain, secure := uint32(0), commonPort(ms, func(in *instance) port { return in.SecurePort })
	if v := md[metaPort]; v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return svc, &strconv.NumError{Func: "port", Num: v, Err: strconv.ErrRange}
		}
		plain = uint32(n)
	} else {
		plain = commonPort(ms, func(in *instance) port { return in.Port })
	}
	// A port is the service's when most of its instances enable it.
	if !most(ms, func(in *instance) port { return in.Port }) {
		plain = 0
	}
	if !most(ms, func(in *instance) port { return in.SecurePort }) {
		secure = 0
	}
	if secure == plain {
		secure = 0 // one number cannot be both; the plain port wins
	}
	if plain != 0 {
		svc.Ports = append(svc.Ports, discovery.Port{Name: plainName, Number: plain, Protocol: proto})
	}
	if secure != 0 {
		svc.Ports = append(svc.Ports, discovery.Port{Name: securePortName, Number: secure, Protocol: discovery.ProtocolTCP})
	}
	svc.Endpoints = []discovery.Endpoint{}
	for _, m := range ms {
		health, ok := endpointHealth(m.in)
		if !ok {
			continue
		}
		addr, err := netip.ParseAddr(m.in.IPAddr)
		if err != nil {
			s.opts.Logger.Warn("eureka instance ignored: its ipAddr is not an IP", "service", ns+"/"+name, "id", m.id, "ipAddr", m.in.IPAddr)
			continue
		}
		ports := map[string]uint32{}
		if plain != 0 && enabled(m.in.Port) {
			ports[plainName] = uint32(m.in.Port.Number)
		}
		if secure != 0 && enabled(m.in.SecurePort) {
			ports[securePortName] = uint32(m.in.SecurePort.Number)
		}
		if len(ports) != len(svc.Ports) {
			// It would be sent traffic for a port it does not serve.
			s.opts.Logger.Warn("eureka instance ignored: it does not serve every port of its service", "service", ns+"/"+name,
				"id", m.id, "port", m.in.Port, "securePort", m.in.SecurePort)
			continue
		}
		svc.Endpoints = append(svc.Endpoints, discovery.Endpoint{
			Address: addr.Unmap(),
			Ports:   ports,
			Locality: discovery.Locality{Region: s.opts.Region,
				Zone: cmp.Or(m.in.Metadata[metaZone], m.in.DataCenterInfo.Metadata[metaAvailabilityZone])},
			Health: health,
			Labels: map[string]string{"eureka_app": m.app, "eureka_instance_id": m.id},
		})
	}
	return svc, nil
}

// endpointHealth maps an instance's status to an endpoint's health: UP
// serves, OUT_OF_SERVICE (its status, or an override an operator set)
// drains; STARTING, DOWN and UNKNOWN are not served (ok false).
func endpointHealth(in *instance) (discovery.Health, bool) {
	switch {
	case in.overridden() == statusOutOfService || in.status() == statusOutOfService:
		return discovery.HealthDraining, true
	case in.status() == statusUp:
		return discovery.HealthHealthy, true
	}
	return discovery.HealthUnknown, false
}

func enabled(p port) bool { return p.Enabled && p.Number > 0 && p.Number <= 65535 }

// most reports whether more than half of ms enable the port get reads.
func most(ms []member, get func(*instance) port) bool {
	n := 0
	for _, m := range ms {
		if enabled(get(m.in)) {
			n++
		}
	}
	return 2*n > len(ms)
}

// commonPort is the enabled port most instances use (the lowest on a
// tie); 0 when none has one enabled.
func commonPort(ms []member, get func(*instance) port) uint32 {
	count := map[int]int{}
	for _, m := range ms {
		if p := get(m.in); enabled(p) {
			count[p.Number]++
		}
	}
	best, bestN := 0, 0
	for p, n := range count {
		if n > bestN || (n == bestN && p < best) {
			best, bestN = p, n
		}
	}
	return uint32(best)
}

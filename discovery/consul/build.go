package consul

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tender-mesh/tender/discovery"
)

// attr reads a tender attribute from an instance: meta tender_KEY first,
// then a tag tender.KEY=VALUE.
func attr(e *healthEntry, key string) string {
	if v := e.Service.Meta["tender_"+key]; v != "" {
		return v
	}
	prefix := "tender." + key + "="
	for _, t := range e.Service.Tags {
		if v, ok := strings.CutPrefix(t, prefix); ok {
			return v
		}
	}
	return ""
}

// status is an instance's worst check: critical, warning or passing.
func status(e *healthEntry) string {
	worst := "passing"
	for _, c := range e.Checks {
		switch c.Status {
		case "critical", "maintenance":
			return "critical"
		case "warning":
			worst = "warning"
		case "passing":
		default:
			return "critical" // unknown states are not healthy
		}
	}
	return worst
}

// build maps Consul services and their instances to tender services. A
// service whose attributes are invalid is left out with a warning: one
// bad registration must not take the others down.
func (s *Source) build(entries map[string][]healthEntry) []discovery.Service {
	var out []discovery.Service
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		es := slices.Clone(entries[name])
		if len(es) == 0 {
			continue
		}
		slices.SortFunc(es, func(a, b healthEntry) int { return strings.Compare(a.Service.ID, b.Service.ID) })
		svc, err := s.service(name, es)
		if err == nil {
			err = svc.Validate()
		}
		if err != nil {
			s.opts.Logger.Warn("consul service ignored", "service", name, "err", err)
			continue
		}
		out = append(out, svc)
	}
	return out
}

func (s *Source) service(name string, es []healthEntry) (discovery.Service, error) {
	first := &es[0]
	svc := discovery.Service{Name: name, Namespace: s.opts.Namespace}
	if ns := attr(first, "namespace"); ns != "" {
		svc.Namespace = ns
	}
	proto, err := discovery.ParseProtocol(strings.ToUpper(attr(first, "protocol")))
	if err != nil {
		return svc, err
	}
	if svc.Policy.LB, err = discovery.ParseLBPolicy(strings.ToUpper(attr(first, "lb"))); err != nil {
		return svc, err
	}
	if v := attr(first, "vip"); v != "" {
		if svc.VIP, err = netip.ParseAddr(v); err != nil {
			return svc, err
		}
	}
	port := uint32(0)
	if v := attr(first, "port"); v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return svc, &strconv.NumError{Func: "port", Num: v, Err: strconv.ErrRange}
		}
		port = uint32(n)
	} else {
		port = commonPort(es)
	}
	portName := strings.ToLower(string(proto))
	if portName == "" {
		portName = "default"
	}
	svc.Ports = []discovery.Port{{Name: portName, Number: port, Protocol: proto}}
	svc.Endpoints = []discovery.Endpoint{}
	for i := range es {
		e := &es[i]
		st := status(e)
		if st == "critical" || (st == "warning" && !s.opts.IncludeWarning) {
			continue
		}
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		addr, err := netip.ParseAddr(host)
		if err != nil {
			s.opts.Logger.Warn("consul instance ignored: its address is not an IP", "service", name, "id", e.Service.ID, "address", host)
			continue
		}
		if e.Service.Port <= 0 || e.Service.Port > 65535 {
			s.opts.Logger.Warn("consul instance ignored: no port", "service", name, "id", e.Service.ID)
			continue
		}
		weight := e.Service.Weights.Passing
		if st == "warning" {
			weight = e.Service.Weights.Warning
		}
		svc.Endpoints = append(svc.Endpoints, discovery.Endpoint{
			Address:  addr.Unmap(),
			Ports:    map[string]uint32{portName: uint32(e.Service.Port)},
			Locality: discovery.Locality{Region: e.Node.Datacenter, Zone: e.Node.Meta[s.opts.ZoneMetaKey]},
			Weight:   uint32(max(weight, 0)),
			Health:   discovery.HealthHealthy,
			Labels:   map[string]string{"consul_id": e.Service.ID, "consul_node": e.Node.Node},
		})
	}
	return svc, nil
}

// commonPort is the port most instances use (the lowest on a tie).
func commonPort(es []healthEntry) uint32 {
	count := map[int]int{}
	for _, e := range es {
		if e.Service.Port > 0 && e.Service.Port <= 65535 {
			count[e.Service.Port]++
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

package file

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/dns"
	"github.com/tender-mesh/tender/security/authz"
)

// Error is a problem in the file, with the position it was found at.
type Error struct {
	File   string
	Line   int // 1-based; 0 when the position is unknown
	Column int
	Err    error
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %v", e.File, e.Line, e.Column, e.Err)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// meshSpec is the file's top level.
type meshSpec struct {
	Services      []serviceSpec  `yaml:"services"`
	MTLS          *mtlsSpec      `yaml:"mtls"`
	Authorization []authz.Policy `yaml:"authorization"`
	// Routes are Gateway API HTTPRoute and GRPCRoute objects, written as
	// one would kubectl apply them.
	Routes []yaml.Node `yaml:"routes"`
}

// mtlsSpec sets the inbound mTLS mode mesh-wide, per namespace and per
// service ("namespace/name", or a name in default).
type mtlsSpec struct {
	pos        yaml.Node
	Mode       string            `yaml:"mode"`
	Namespaces map[string]string `yaml:"namespaces"`
	Services   map[string]string `yaml:"services"`
}

func (m *mtlsSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain mtlsSpec
	return decodeStrict(n, (*plain)(m), &m.pos)
}

func (m *mtlsSpec) build() (*discovery.MTLSPolicy, error) {
	mode, err := discovery.ParseMTLSMode(m.Mode)
	if err != nil {
		return nil, err
	}
	p := &discovery.MTLSPolicy{Mode: mode, Namespaces: map[string]discovery.MTLSMode{}, Services: map[string]discovery.MTLSMode{}}
	for ns, v := range m.Namespaces {
		if p.Namespaces[ns], err = discovery.ParseMTLSMode(v); err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	for key, v := range m.Services {
		if !strings.Contains(key, "/") {
			key = "default/" + key
		}
		if p.Services[key], err = discovery.ParseMTLSMode(v); err != nil {
			return nil, fmt.Errorf("service %s: %w", key, err)
		}
	}
	return p, nil
}

type serviceSpec struct {
	pos            yaml.Node
	Name           string         `yaml:"name"`
	Namespace      string         `yaml:"namespace"`
	VIP            string         `yaml:"vip"`
	LB             string         `yaml:"lb"`
	HashHeader     string         `yaml:"hashHeader"`
	ConnectTimeout time.Duration  `yaml:"connectTimeout"`
	Timeout        time.Duration  `yaml:"timeout"`
	Retries        *retrySpec     `yaml:"retries"`
	CircuitBreaker *breakerSpec   `yaml:"circuitBreaker"`
	Outlier        *outlierSpec   `yaml:"outlierDetection"`
	Fault          *faultSpec     `yaml:"fault"`
	Ports          []portSpec     `yaml:"ports"`
	Endpoints      []endpointSpec `yaml:"endpoints"`
	DNS            *dnsSpec       `yaml:"dns"`
	// Meshed: the endpoints run tender sidecars (each endpoint may say
	// otherwise); clients reach them over mutual TLS.
	Meshed bool `yaml:"meshed"`
	// ServiceAccount: the identity the endpoints' workloads hold (each
	// endpoint may say otherwise); clients refuse a server with another.
	ServiceAccount string `yaml:"serviceAccount"`
}

// The resilience blocks; checkKeys keeps them strict.
type retrySpec struct {
	Attempts      uint32        `yaml:"attempts"`
	On            []string      `yaml:"on"`
	PerTryTimeout time.Duration `yaml:"perTryTimeout"`
	Backoff       struct {
		Base time.Duration `yaml:"base"`
		Max  time.Duration `yaml:"max"`
	} `yaml:"backoff"`
	StatusCodes []uint32 `yaml:"statusCodes"`
	Budget      struct {
		Percent        float64 `yaml:"percent"`
		MinConcurrency uint32  `yaml:"minConcurrency"`
	} `yaml:"budget"`
}

type breakerSpec struct {
	MaxConnections     uint32 `yaml:"maxConnections"`
	MaxPendingRequests uint32 `yaml:"maxPendingRequests"`
	MaxRequests        uint32 `yaml:"maxRequests"`
	MaxRetries         uint32 `yaml:"maxRetries"`
}

type outlierSpec struct {
	Consecutive5xx           uint32        `yaml:"consecutive5xx"`
	ConsecutiveGatewayErrors uint32        `yaml:"consecutiveGatewayErrors"`
	Interval                 time.Duration `yaml:"interval"`
	BaseEjectionTime         time.Duration `yaml:"baseEjectionTime"`
	MaxEjectionPercent       uint32        `yaml:"maxEjectionPercent"`
	SuccessRate              struct {
		MinimumHosts  uint32 `yaml:"minimumHosts"`
		RequestVolume uint32 `yaml:"requestVolume"`
		StdevFactor   uint32 `yaml:"stdevFactor"`
	} `yaml:"successRate"`
}

type faultSpec struct {
	Delay struct {
		Percent  float64       `yaml:"percent"`
		Duration time.Duration `yaml:"duration"`
	} `yaml:"delay"`
	Abort struct {
		Percent float64 `yaml:"percent"`
		Status  uint32  `yaml:"status"`
	} `yaml:"abort"`
}

// resilience maps the blocks to the model.
func (s *serviceSpec) resilience() discovery.Resilience {
	r := discovery.Resilience{Timeout: s.Timeout}
	if rs := s.Retries; rs != nil {
		r.Retries = &discovery.RetryPolicy{Attempts: rs.Attempts, On: rs.On, PerTryTimeout: rs.PerTryTimeout,
			BackoffBase: rs.Backoff.Base, BackoffMax: rs.Backoff.Max, StatusCodes: rs.StatusCodes,
			BudgetPercent: rs.Budget.Percent, MinRetryConcurrency: rs.Budget.MinConcurrency}
	}
	if b := s.CircuitBreaker; b != nil {
		r.CircuitBreaker = &discovery.CircuitBreaker{MaxConnections: b.MaxConnections,
			MaxPendingRequests: b.MaxPendingRequests, MaxRequests: b.MaxRequests, MaxRetries: b.MaxRetries}
	}
	if o := s.Outlier; o != nil {
		r.OutlierDetection = &discovery.OutlierDetection{Consecutive5xx: o.Consecutive5xx,
			ConsecutiveGatewayErrors: o.ConsecutiveGatewayErrors, Interval: o.Interval,
			BaseEjectionTime: o.BaseEjectionTime, MaxEjectionPercent: o.MaxEjectionPercent,
			SuccessRateMinimumHosts: o.SuccessRate.MinimumHosts, SuccessRateRequestVolume: o.SuccessRate.RequestVolume,
			SuccessRateStdevFactor: o.SuccessRate.StdevFactor}
	}
	if f := s.Fault; f != nil {
		r.Fault = &discovery.Fault{DelayPercent: f.Delay.Percent, Delay: f.Delay.Duration,
			AbortPercent: f.Abort.Percent, AbortStatus: f.Abort.Status}
	}
	return r
}

type portSpec struct {
	pos      yaml.Node
	Name     string `yaml:"name"`
	Port     int64  `yaml:"port"`
	Protocol string `yaml:"protocol"`
}

type endpointSpec struct {
	pos      yaml.Node
	Address  string            `yaml:"address"`
	Port     int64             `yaml:"port"`
	Ports    map[string]int64  `yaml:"ports"`
	Region   string            `yaml:"region"`
	Zone     string            `yaml:"zone"`
	SubZone  string            `yaml:"subZone"`
	Weight   int64             `yaml:"weight"`
	Priority int64             `yaml:"priority"`
	Health   string            `yaml:"health"`
	Labels   map[string]string `yaml:"labels"`
	Meshed   *bool             `yaml:"meshed"`
	// ServiceAccount overrides the service's.
	ServiceAccount string `yaml:"serviceAccount"`
}

type dnsSpec struct {
	pos     yaml.Node
	Name    string        `yaml:"name"`
	Type    string        `yaml:"type"`
	Port    int64         `yaml:"port"`
	Refresh time.Duration `yaml:"refresh"`
}

// Each spec keeps its own node so errors can name its line. The plain type
// alias drops the method and so avoids recursion.

func (s *serviceSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain serviceSpec
	return decodeStrict(n, (*plain)(s), &s.pos)
}

func (s *portSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain portSpec
	return decodeStrict(n, (*plain)(s), &s.pos)
}

func (s *endpointSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain endpointSpec
	return decodeStrict(n, (*plain)(s), &s.pos)
}

func (s *dnsSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain dnsSpec
	return decodeStrict(n, (*plain)(s), &s.pos)
}

// decodeStrict decodes n into v, refusing keys v has no field for (yaml.v3
// does not carry KnownFields into custom unmarshalers), and records n's
// position for later errors.
func decodeStrict(n *yaml.Node, v any, pos *yaml.Node) error {
	*pos = yaml.Node{Line: n.Line, Column: n.Column}
	if n.Kind != yaml.MappingNode {
		return &Error{Line: n.Line, Column: n.Column, Err: fmt.Errorf("expected a mapping, got %s", kindName(n.Kind))}
	}
	if err := checkKeys(n, reflect.TypeOf(v).Elem()); err != nil {
		return err
	}
	return n.Decode(v)
}

// checkKeys refuses keys of mapping n that struct type t has no field for,
// and descends into nested structs that decode without a method of their
// own (those check themselves).
func checkKeys(n *yaml.Node, t reflect.Type) error {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		if !ok {
			return &Error{Line: k.Line, Column: k.Column, Err: fmt.Errorf("unknown field %q", k.Value)}
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct || v.Kind != yaml.MappingNode || reflect.PointerTo(ft).Implements(unmarshalerType) {
			continue
		}
		if err := checkKeys(v, ft); err != nil {
			return err
		}
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// fieldsOf caches yamlFields by type: a mesh of 10,000 services asks
// 120,000 times per load.
var fieldsOf sync.Map // reflect.Type → map[string]reflect.Type

// yamlFields maps the yaml keys of struct type t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldsOf.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			fields[tag] = t.Field(i).Type
		}
	}
	fieldsOf.Store(t, fields)
	return fields
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

// Config is a parsed, validated mesh.yaml.
type Config struct {
	// Static are the services with endpoints listed in the file.
	Static []discovery.Service
	// DNS are the services whose endpoints come from DNS.
	DNS []dns.Target
	// Security holds the mTLS modes and authorization policies.
	Security discovery.Security
	// Routes are the file's Gateway API routes.
	Routes []discovery.Route
}

// Parse reads a mesh.yaml from r; name is used in errors.
func Parse(name string, r io.Reader) (*Config, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var spec meshSpec
	if err := dec.Decode(&spec); err != nil {
		if errors.Is(err, io.EOF) {
			return &Config{}, nil // an empty file declares no services
		}
		var fe *Error
		if errors.As(err, &fe) {
			fe.File = name
			return nil, fe
		}
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Line: extra.Line, Err: errors.New("more than one YAML document; tender reads one")}
	}
	cfg := &Config{}
	seen := make(map[string]int)
	for i := range spec.Services {
		s := &spec.Services[i]
		svc, target, err := s.build()
		if err != nil {
			var fe *Error
			if errors.As(err, &fe) {
				fe.File = name
				return nil, fe
			}
			return nil, &Error{File: name, Line: s.pos.Line, Column: s.pos.Column, Err: err}
		}
		if line, dup := seen[svc.Key()]; dup {
			return nil, &Error{File: name, Line: s.pos.Line, Column: s.pos.Column,
				Err: fmt.Errorf("duplicate service %s (first defined at line %d)", svc.Key(), line)}
		}
		seen[svc.Key()] = s.pos.Line
		if target != nil {
			cfg.DNS = append(cfg.DNS, *target)
		} else {
			cfg.Static = append(cfg.Static, svc)
		}
	}
	if m := spec.MTLS; m != nil {
		p, err := m.build()
		if err != nil {
			return nil, &Error{File: name, Line: m.pos.Line, Column: m.pos.Column, Err: fmt.Errorf("mtls: %w", err)}
		}
		cfg.Security.MTLS = p
	}
	names := make(map[string]int)
	for i := range spec.Authorization {
		p := spec.Authorization[i]
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		if err := p.Validate(); err != nil {
			return nil, &Error{File: name, Err: fmt.Errorf("authorization[%d]: %w", i, err)}
		}
		key := p.Namespace + "/" + p.Name
		if j, dup := names[key]; dup {
			return nil, &Error{File: name, Err: fmt.Errorf("authorization[%d]: policy %s defined twice (first at authorization[%d])", i, key, j)}
		}
		names[key] = i
		cfg.Security.Authorization = append(cfg.Security.Authorization, p)
	}
	routes := make(map[string]int)
	for i := range spec.Routes {
		n := &spec.Routes[i]
		r, err := parseRoute(n)
		if err != nil {
			return nil, &Error{File: name, Line: n.Line, Column: n.Column, Err: fmt.Errorf("routes[%d]: %w", i, err)}
		}
		if line, dup := routes[r.Key()]; dup {
			return nil, &Error{File: name, Line: n.Line, Column: n.Column, Err: fmt.Errorf("routes[%d]: %s defined twice (first at line %d)", i, r.Key(), line)}
		}
		routes[r.Key()] = n.Line
		cfg.Routes = append(cfg.Routes, r)
	}
	return cfg, nil
}

// parseRoute reads one route object as the API server would take it:
// apiVersion gateway.networking.k8s.io/v1, kind HTTPRoute or GRPCRoute,
// no field the Gateway API does not define.
func parseRoute(n *yaml.Node) (discovery.Route, error) {
	var obj map[string]any
	if err := n.Decode(&obj); err != nil {
		return discovery.Route{}, err
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return discovery.Route{}, err
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return discovery.Route{}, err
	}
	if head.APIVersion != gwv1.GroupVersion.String() {
		return discovery.Route{}, fmt.Errorf("apiVersion %q: want %s", head.APIVersion, gwv1.GroupVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var r discovery.Route
	switch head.Kind {
	case discovery.KindHTTPRoute:
		r.HTTP = &gwv1.HTTPRoute{}
		err = dec.Decode(r.HTTP)
	case discovery.KindGRPCRoute:
		r.GRPC = &gwv1.GRPCRoute{}
		err = dec.Decode(r.GRPC)
	default:
		return r, fmt.Errorf("kind %q: want %s or %s", head.Kind, discovery.KindHTTPRoute, discovery.KindGRPCRoute)
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w", head.Kind, err)
	}
	if m := r.Meta(); m.Namespace == "" {
		m.Namespace = "default"
	}
	if err := r.Validate(); err != nil {
		return r, err
	}
	return r, nil
}

func (s *serviceSpec) build() (discovery.Service, *dns.Target, error) {
	svc := discovery.Service{Name: s.Name, Namespace: s.Namespace}
	if svc.Namespace == "" {
		svc.Namespace = "default"
	}
	if s.VIP != "" {
		vip, err := netip.ParseAddr(s.VIP)
		if err != nil {
			return svc, nil, fmt.Errorf("service %s: vip: %w", svc.Key(), err)
		}
		svc.VIP = vip
	}
	lb, err := discovery.ParseLBPolicy(s.LB)
	if err != nil {
		return svc, nil, fmt.Errorf("service %s: %w", svc.Key(), err)
	}
	svc.Policy = discovery.TrafficPolicy{LB: lb, HashHeader: s.HashHeader, ConnectTimeout: s.ConnectTimeout, Resilience: s.resilience()}
	if err := svc.Policy.Validate(); err != nil {
		return svc, nil, at(s.pos, fmt.Errorf("service %s: %w", svc.Key(), err))
	}
	if s.HashHeader != "" && lb != discovery.LBRingHash && lb != discovery.LBMaglev {
		return svc, nil, fmt.Errorf("service %s: hashHeader needs lb RING_HASH or MAGLEV, not %s", svc.Key(), lb)
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		proto, err := discovery.ParseProtocol(p.Protocol)
		if err != nil {
			return svc, nil, at(p.pos, err)
		}
		if p.Port < 1 || p.Port > 65535 {
			return svc, nil, at(p.pos, fmt.Errorf("port %d out of range 1-65535", p.Port))
		}
		svc.Ports = append(svc.Ports, discovery.Port{Name: p.Name, Number: uint32(p.Port), Protocol: proto})
	}
	if s.DNS != nil && len(s.Endpoints) > 0 {
		return svc, nil, fmt.Errorf("service %s: set endpoints or dns, not both", svc.Key())
	}
	for i := range s.Endpoints {
		ep, err := s.Endpoints[i].build(svc.Ports)
		if err != nil {
			return svc, nil, at(s.Endpoints[i].pos, err)
		}
		ep.Meshed = s.Meshed
		if m := s.Endpoints[i].Meshed; m != nil {
			ep.Meshed = *m
		}
		ep.ServiceAccount = cmp.Or(s.Endpoints[i].ServiceAccount, s.ServiceAccount)
		svc.Endpoints = append(svc.Endpoints, ep)
	}
	if err := svc.Validate(); err != nil {
		return svc, nil, err
	}
	if s.DNS == nil {
		return svc, nil, nil
	}
	t, err := s.DNS.build(svc)
	if err != nil {
		return svc, nil, at(s.DNS.pos, err)
	}
	return svc, t, nil
}

func (e *endpointSpec) build(ports []discovery.Port) (discovery.Endpoint, error) {
	addr, err := netip.ParseAddr(e.Address)
	if err != nil {
		return discovery.Endpoint{}, fmt.Errorf("endpoint address: %w", err)
	}
	ep := discovery.Endpoint{
		Address:  addr.Unmap(),
		Locality: discovery.Locality{Region: e.Region, Zone: e.Zone, SubZone: e.SubZone},
		Labels:   e.Labels,
		Health:   discovery.HealthHealthy,
	}
	switch {
	case e.Port != 0 && len(e.Ports) > 0:
		return ep, errors.New("endpoint: set port or ports, not both")
	case e.Port != 0:
		if len(ports) != 1 {
			return ep, fmt.Errorf("endpoint %s: port is for single-port services; use ports: {NAME: PORT}", addr)
		}
		if e.Port < 1 || e.Port > 65535 {
			return ep, fmt.Errorf("endpoint %s: port %d out of range 1-65535", addr, e.Port)
		}
		ep.Ports = map[string]uint32{ports[0].Name: uint32(e.Port)}
	case len(e.Ports) > 0:
		ep.Ports = make(map[string]uint32, len(e.Ports))
		for name, n := range e.Ports {
			if n < 1 || n > 65535 {
				return ep, fmt.Errorf("endpoint %s: port %s=%d out of range 1-65535", addr, name, n)
			}
			ep.Ports[name] = uint32(n)
		}
	}
	if e.Weight < 0 || e.Weight > 1<<16 {
		return ep, fmt.Errorf("endpoint %s: weight %d out of range 0-65536", addr, e.Weight)
	}
	ep.Weight = uint32(e.Weight)
	if e.Priority < 0 || e.Priority > 127 {
		return ep, fmt.Errorf("endpoint %s: priority %d out of range 0-127", addr, e.Priority)
	}
	ep.Priority = uint32(e.Priority)
	switch e.Health {
	case "", "HEALTHY":
	case "UNHEALTHY":
		ep.Health = discovery.HealthUnhealthy
	case "DRAINING":
		ep.Health = discovery.HealthDraining
	case "UNKNOWN":
		ep.Health = discovery.HealthUnknown
	default:
		return ep, fmt.Errorf("endpoint %s: health %q (want HEALTHY, UNHEALTHY, DRAINING or UNKNOWN)", addr, e.Health)
	}
	return ep, nil
}

func (d *dnsSpec) build(svc discovery.Service) (*dns.Target, error) {
	if d.Name == "" {
		return nil, errors.New("dns: name is required")
	}
	typ, err := dns.ParseRecordType(d.Type)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if d.Port < 0 || d.Port > 65535 {
		return nil, fmt.Errorf("dns: port %d out of range 0-65535", d.Port)
	}
	if typ == dns.SRV && d.Port != 0 {
		return nil, errors.New("dns: port comes from the SRV records; remove it")
	}
	if d.Refresh < 0 {
		return nil, fmt.Errorf("dns: negative refresh %s", d.Refresh)
	}
	return &dns.Target{Service: svc, Name: d.Name, Type: typ, Port: uint32(d.Port), Refresh: d.Refresh}, nil
}

// yamlSyntax matches yaml.v3's syntax errors, "yaml: line N: problem".
var yamlSyntax = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 syntax error into an *Error with its line.
// yaml.v3 numbers parser errors ("did not find expected ...") from 0 and
// scanner errors from 1; the parser's are corrected here so the line
// points at the problem.
func syntaxError(name string, err error) *Error {
	m := yamlSyntax.FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{File: name, Err: err}
	}
	line, _ := strconv.Atoi(m[1])
	if strings.HasPrefix(m[2], "did not find expected") {
		line++
	}
	return &Error{File: name, Line: line, Err: errors.New(m[2])}
}

// at attaches a node's position to err unless err already has one.
func at(pos yaml.Node, err error) error {
	var fe *Error
	if errors.As(err, &fe) {
		return err
	}
	return &Error{Line: pos.Line, Column: pos.Column, Err: err}
}

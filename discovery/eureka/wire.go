package eureka

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// The wire format is the JSON a Eureka server answers GET /apps and
// /apps/delta with (Accept: application/json). It grew up as XStream's
// rendering of Java objects, and servers of different ages still differ:
//
//   - a list of one element may come as the element itself
//     ("application": {...} and "instance": {...} instead of arrays);
//   - a port is an object {"$": 8080, "@enabled": "true"}, its number a
//     JSON number or a string, its flag a string or a boolean; some
//     clients register a bare number;
//   - metadata may be absent, null, or carry an "@class" key naming the
//     Java map ({"@class": "java.util.Collections$EmptyMap"}), and values
//     that are not strings;
//   - versions__delta may be a number or a string.
//
// Decoding accepts all of these and refuses what is not a registry at all.

// ErrMalformed is wrapped by every error about an answer that is not a
// Eureka registry.
var ErrMalformed = errors.New("malformed answer")

// instance statuses (com.netflix.appinfo.InstanceInfo.InstanceStatus).
const (
	statusUp           = "UP"
	statusDown         = "DOWN"
	statusStarting     = "STARTING"
	statusOutOfService = "OUT_OF_SERVICE"
	statusUnknown      = "UNKNOWN"
)

// Delta action types.
const (
	actionAdded    = "ADDED"
	actionModified = "MODIFIED"
	actionDeleted  = "DELETED"
)

// applications is the body of a full or delta fetch.
type applications struct {
	VersionsDelta flexString        `json:"versions__delta"`
	AppsHashCode  string            `json:"apps__hashcode"`
	Application   list[application] `json:"application"`
}

// application is one registered application and its instances.
type application struct {
	Name     string         `json:"name"`
	Instance list[instance] `json:"instance"`
}

// instance is one registration (com.netflix.appinfo.InstanceInfo), reduced
// to what tender reads.
type instance struct {
	InstanceID       string         `json:"instanceId"`
	HostName         string         `json:"hostName"`
	App              string         `json:"app"`
	IPAddr           string         `json:"ipAddr"`
	Status           string         `json:"status"`
	OverriddenStatus string         `json:"overriddenStatus"`
	Port             port           `json:"port"`
	SecurePort       port           `json:"securePort"`
	VIPAddress       string         `json:"vipAddress"`
	DataCenterInfo   dataCenterInfo `json:"dataCenterInfo"`
	Metadata         metadata       `json:"metadata"`
	ActionType       string         `json:"actionType,omitempty"`
}

// dataCenterInfo says where an instance runs; on Amazon its metadata holds
// availability-zone and instance-id.
type dataCenterInfo struct {
	Name     string   `json:"name"`
	Metadata metadata `json:"metadata"`
}

// ID is the instance's identity as the Netflix client computes it: the
// instanceId, else (on Amazon) the EC2 instance id, else the host name.
func (in *instance) ID() string {
	if in.InstanceID != "" {
		return in.InstanceID
	}
	if strings.EqualFold(in.DataCenterInfo.Name, "Amazon") {
		if id := in.DataCenterInfo.Metadata["instance-id"]; id != "" {
			return id
		}
	}
	return in.HostName
}

// status is the instance's status as the Netflix codec reads it: a
// missing one is UP (InstanceInfo's default), one it does not know is
// UNKNOWN.
func (in *instance) status() string {
	return normalStatus(in.Status, statusUp)
}

// overridden is the instance's overridden status; a missing one is
// UNKNOWN (no override).
func (in *instance) overridden() string {
	return normalStatus(in.OverriddenStatus, statusUnknown)
}

func normalStatus(s, missing string) string {
	switch s = strings.ToUpper(strings.TrimSpace(s)); s {
	case "":
		return missing
	case statusUp, statusDown, statusStarting, statusOutOfService, statusUnknown:
		return s
	}
	return statusUnknown
}

// port is a port and whether it is enabled.
type port struct {
	Number  int
	Enabled bool
}

// UnmarshalJSON implements json.Unmarshaler: {"$": N, "@enabled": B}, or a
// bare N, with N a number or a string and B a boolean or a string. A port
// object without "@enabled" is enabled, as Eureka's codec reads it.
func (p *port) UnmarshalJSON(b []byte) error {
	*p = port{}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	if b[0] != '{' {
		n, err := flexInt(b)
		if err != nil {
			return fmt.Errorf("port: %w", err)
		}
		*p = port{Number: n, Enabled: true}
		return nil
	}
	var raw struct {
		Number  json.RawMessage `json:"$"`
		Enabled json.RawMessage `json:"@enabled"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("port: %w", err)
	}
	if len(raw.Number) > 0 && string(raw.Number) != "null" {
		n, err := flexInt(raw.Number)
		if err != nil {
			return fmt.Errorf("port: %w", err)
		}
		p.Number = n
	}
	p.Enabled = true
	if len(raw.Enabled) > 0 && string(raw.Enabled) != "null" {
		s := string(raw.Enabled)
		if uq, err := strconv.Unquote(s); err == nil {
			s = uq
		}
		v, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("port: @enabled %s is not a boolean", raw.Enabled)
		}
		p.Enabled = v
	}
	return nil
}

// MarshalJSON implements json.Marshaler in the format Eureka servers send.
func (p port) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"$":%d,"@enabled":"%t"}`, p.Number, p.Enabled), nil
}

// flexInt reads a JSON number or a string holding one.
func flexInt(b []byte) (int, error) {
	s := string(b)
	if uq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(uq)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s is not an integer", b)
	}
	return n, nil
}

// metadata is an instance's metadata map, without the "@class" key.
type metadata map[string]string

// UnmarshalJSON implements json.Unmarshaler. Strings are kept as they are,
// numbers and booleans as their JSON text; "@class", nulls, objects and
// arrays are dropped.
func (m *metadata) UnmarshalJSON(b []byte) error {
	*m = nil
	if string(bytes.TrimSpace(b)) == "null" {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	out := make(metadata, len(raw))
	for k, v := range raw {
		if k == "@class" || len(v) == 0 {
			continue
		}
		switch v[0] {
		case '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("metadata %q: %w", k, err)
			}
			out[k] = s
		case '{', '[', 'n':
		default:
			out[k] = string(v)
		}
	}
	if len(out) > 0 {
		*m = out
	}
	return nil
}

// MarshalJSON implements json.Marshaler as a Eureka server does: an empty
// map carries its Java class.
func (m metadata) MarshalJSON() ([]byte, error) {
	if len(m) == 0 {
		return []byte(`{"@class":"java.util.Collections$EmptyMap"}`), nil
	}
	return json.Marshal(map[string]string(m))
}

// list is a JSON array that may also come as its only element.
type list[T any] []T

// UnmarshalJSON implements json.Unmarshaler.
func (l *list[T]) UnmarshalJSON(b []byte) error {
	*l = nil
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		return nil
	case b[0] == '[':
		var all []T
		if err := json.Unmarshal(b, &all); err != nil {
			return err
		}
		if len(all) > 0 {
			*l = all
		}
		return nil
	case b[0] == '{':
		var one T
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*l = list[T]{one}
		return nil
	}
	return fmt.Errorf("want an object or an array, got %.20s", b)
}

// flexString is a JSON string or number, kept as text.
type flexString string

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*f = ""
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a string or a number, got %.20s", b)
	}
	*f = flexString(n)
	return nil
}

// decode reads a full or delta answer: {"applications": {...}}.
func decode(b []byte) (*applications, error) {
	var doc struct {
		Applications *applications `json:"applications"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if doc.Applications == nil {
		return nil, fmt.Errorf("%w: no \"applications\" object", ErrMalformed)
	}
	return doc.Applications, nil
}

// reconcileHash is the appsHashCode of a set of instances: each status
// with its count, in the order of the status names, each followed by "_"
// ("DOWN_1_UP_3_"), as com.netflix.discovery.shared.Applications computes
// it. An empty registry's is "".
func reconcileHash(statuses map[string]int) string {
	var b strings.Builder
	for _, st := range slices.Sorted(maps.Keys(statuses)) {
		if statuses[st] == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s_%d_", st, statuses[st])
	}
	return b.String()
}

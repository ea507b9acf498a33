package discovery

import (
	"fmt"
	"strings"

	"github.com/tender-mesh/tender/security/authz"
)

// MTLSMode is what a service's sidecars accept on their inbound side.
type MTLSMode string

// The modes, named as Istio's PeerAuthentication names them.
const (
	// MTLSPermissive accepts mutual TLS from meshed clients and plaintext
	// from the others: the mode to migrate in.
	MTLSPermissive MTLSMode = "PERMISSIVE"
	// MTLSStrict refuses every connection that is not mutual TLS with a
	// mesh certificate.
	MTLSStrict MTLSMode = "STRICT"
)

// ParseMTLSMode returns the mode named by s; empty is "not set".
func ParseMTLSMode(s string) (MTLSMode, error) {
	switch m := MTLSMode(strings.ToUpper(s)); m {
	case "", MTLSPermissive, MTLSStrict:
		return m, nil
	}
	return "", fmt.Errorf("mtls mode %q: want PERMISSIVE or STRICT", s)
}

// MTLSPolicy sets the inbound mode mesh-wide, per namespace and per
// service; the most specific setting wins.
type MTLSPolicy struct {
	// Mode is the mesh-wide default; empty means PERMISSIVE.
	Mode MTLSMode `json:"mode,omitempty"`
	// Namespaces maps a namespace to its mode.
	Namespaces map[string]MTLSMode `json:"namespaces,omitempty"`
	// Services maps "namespace/name" to a service's mode.
	Services map[string]MTLSMode `json:"services,omitempty"`
}

// For returns the mode of service name in namespace.
func (p *MTLSPolicy) For(namespace, name string) MTLSMode {
	if p == nil {
		return MTLSPermissive
	}
	if m := p.Services[namespace+"/"+name]; m != "" {
		return m
	}
	if m := p.Namespaces[namespace]; m != "" {
		return m
	}
	if p.Mode != "" {
		return p.Mode
	}
	return MTLSPermissive
}

// Security is the mesh's security config from one source: the inbound
// mTLS modes and the authorization policies.
type Security struct {
	// MTLS is nil when the source sets no mode.
	MTLS          *MTLSPolicy
	Authorization []authz.Policy
}

// SecuritySink is a Sink that also takes security config. Sources that
// read it (mesh.yaml, the AuthorizationPolicy resources) report to it when
// their sink implements it.
type SecuritySink interface {
	// UpdateSecurity replaces the security config source reported before.
	UpdateSecurity(source string, sec Security)
}

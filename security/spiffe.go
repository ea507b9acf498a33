package security

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrBadID is wrapped by the errors about malformed or missing SPIFFE IDs.
var ErrBadID = errors.New("bad SPIFFE ID")

// ID is a workload's SPIFFE identity:
// spiffe://TrustDomain/ns/Namespace/sa/ServiceAccount.
type ID struct{ TrustDomain, Namespace, ServiceAccount string }

// String returns the ID as a URI, "spiffe://td/ns/x/sa/y".
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// url returns the ID as the URI a certificate carries.
func (id ID) url() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// check reports whether id is one ParseID accepts.
func (id ID) check() error {
	if err := checkTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	for _, s := range []string{id.Namespace, id.ServiceAccount} {
		if err := checkSegment(s); err != nil {
			return err
		}
	}
	return nil
}

// ParseID parses s strictly: the scheme is spiffe, the trust domain is
// not empty and has only lowercase letters, digits, '.', '-' and '_', and
// the path is exactly /ns/NAMESPACE/sa/SERVICE_ACCOUNT with non-empty
// segments of letters, digits, '.', '-' and '_'. Its errors wrap ErrBadID.
func ParseID(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q: scheme is not spiffe://", ErrBadID, s)
	}
	td, path, _ := strings.Cut(rest, "/")
	if err := checkTrustDomain(td); err != nil {
		return ID{}, fmt.Errorf("%w (in %q)", err, s)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("%w: %q: path is not /ns/NAMESPACE/sa/SERVICE_ACCOUNT", ErrBadID, s)
	}
	for _, seg := range []string{parts[1], parts[3]} {
		if err := checkSegment(seg); err != nil {
			return ID{}, fmt.Errorf("%w (in %q)", err, s)
		}
	}
	return ID{TrustDomain: td, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

func checkTrustDomain(td string) error {
	if td == "" {
		return fmt.Errorf("%w: empty trust domain", ErrBadID)
	}
	for _, r := range td {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '.' && r != '-' && r != '_' {
			return fmt.Errorf("%w: trust domain %q: character %q not allowed", ErrBadID, td, r)
		}
	}
	return nil
}

func checkSegment(seg string) error {
	if seg == "" || seg == "." || seg == ".." {
		return fmt.Errorf("%w: path segment %q", ErrBadID, seg)
	}
	for _, r := range seg {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '-' && r != '_' {
			return fmt.Errorf("%w: path segment %q: character %q not allowed", ErrBadID, seg, r)
		}
	}
	return nil
}

// IDFromCert returns the SPIFFE ID in c's single spiffe:// URI SAN. Its
// errors wrap ErrBadID: no such SAN, more than one, or a malformed one.
func IDFromCert(c *x509.Certificate) (ID, error) {
	var found []*url.URL
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return ID{}, fmt.Errorf("%w: no SPIFFE ID in the certificate", ErrBadID)
	case 1:
		return ParseID(found[0].String())
	default:
		return ID{}, fmt.Errorf("%w: %d SPIFFE IDs in the certificate, want one", ErrBadID, len(found))
	}
}

package ipsets

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Type is an ipset type Terrace uses.
type Type string

const (
	TypeHashIP     Type = "hash:ip"
	TypeHashNet    Type = "hash:net"
	TypeHashIPPort Type = "hash:ip,port"
)

// Family is the address family of a set.
type Family string

const (
	FamilyInet  Family = "inet"
	FamilyInet6 Family = "inet6"
)

const (
	// NamePrefix marks every set Terrace owns.
	NamePrefix = "trc"
	// MaxNameLen is the kernel's limit (IPSET_MAXNAMELEN - 1).
	MaxNameLen = 31
	// TempName is the scratch set used to build large changes before swapping them in.
	TempName = "trc-tmp"
	// MaxElem is the maxelem every set is created with; a set may not hold more members.
	MaxElem = 1 << 20
)

// Meta identifies a set and its shape.
type Meta struct {
	Name   string
	Type   Type
	Family Family
}

// Validate checks the set is one Terrace may own.
func (m Meta) Validate() error {
	if !strings.HasPrefix(m.Name, NamePrefix) || len(m.Name) > MaxNameLen || m.Name == TempName {
		return fmt.Errorf("validate ipset name %q: must start with %q, be at most %d characters and not be %q", m.Name, NamePrefix, MaxNameLen, TempName)
	}
	if strings.ContainsAny(m.Name, " \t\n\"'") {
		return fmt.Errorf("validate ipset name %q: contains white space or quotes", m.Name)
	}
	switch m.Type {
	case TypeHashIP, TypeHashNet, TypeHashIPPort:
	default:
		return fmt.Errorf("validate ipset %s: unsupported type %q", m.Name, m.Type)
	}
	if m.Family != FamilyInet && m.Family != FamilyInet6 {
		return fmt.Errorf("validate ipset %s: unsupported family %q", m.Name, m.Family)
	}
	return nil
}

// CanonicalMember parses a member of a set of type t and family f and returns it in the form
// "ipset save" prints, so desired and kernel members compare as strings: "198.18.0.1",
// "198.18.0.0/24" (a full-length prefix prints as a bare address), "2001:db8::1,tcp:80".
func CanonicalMember(t Type, f Family, s string) (string, error) {
	s = strings.TrimSpace(s)
	switch t {
	case TypeHashIP:
		a, err := parseAddr(f, s)
		if err != nil {
			return "", err
		}
		return a.String(), nil
	case TypeHashNet:
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return "", fmt.Errorf("parse member %q: %w", s, err)
			}
			if _, err := parseAddr(f, p.Addr().String()); err != nil {
				return "", err
			}
			if p.Bits() == 0 {
				// The kernel rejects /0 in hash:net; refuse it here with a clear message.
				return "", fmt.Errorf("parse member %q: a /0 prefix cannot be stored in hash:net", s)
			}
		} else {
			a, err := parseAddr(f, s)
			if err != nil {
				return "", err
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = p.Masked()
		if p.Bits() == p.Addr().BitLen() {
			return p.Addr().String(), nil
		}
		return p.String(), nil
	case TypeHashIPPort:
		ip, pp, ok := strings.Cut(s, ",")
		if !ok {
			return "", fmt.Errorf("parse member %q: want IP,PROTO:PORT", s)
		}
		a, err := parseAddr(f, ip)
		if err != nil {
			return "", err
		}
		proto, port, ok := strings.Cut(pp, ":")
		if !ok {
			proto, port = "tcp", pp
		}
		switch proto {
		case "tcp", "udp", "sctp":
		default:
			return "", fmt.Errorf("parse member %q: unsupported protocol %q", s, proto)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return "", fmt.Errorf("parse member %q: bad port: %w", s, err)
		}
		return a.String() + "," + proto + ":" + strconv.FormatUint(n, 10), nil
	}
	return "", fmt.Errorf("parse member %q: unsupported set type %q", s, t)
}

func parseAddr(f Family, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse member %q: %w", s, err)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("parse member %q: zones are not allowed", s)
	}
	a = a.Unmap()
	if (f == FamilyInet) != a.Is4() {
		return netip.Addr{}, fmt.Errorf("parse member %q: not an %s address", s, f)
	}
	return a, nil
}

// NameFor derives a set name from the identity of its content (e.g. "selector:role == 'db'" or
// "netset:ns/name"): "trc4-" or "trc6-" and 22 characters of a hash, 27 in all, so the same
// identity always maps to the same set across restarts and nodes.
func NameFor(f Family, identity string) string {
	v := "4"
	if f == FamilyInet6 {
		v = "6"
	}
	sum := sha256.Sum256([]byte(identity))
	return NamePrefix + v + "-" + base64.RawURLEncoding.EncodeToString(sum[:])[:22]
}

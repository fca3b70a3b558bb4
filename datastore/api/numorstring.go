package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ASNumber is a BGP autonomous system number. Calico accepts it as a plain number or, for 4-byte
// numbers, in "dotted" notation ("1.10" = 1<<16 + 10); it is always written back as a number.
type ASNumber uint32

// ParseASNumber parses a plain ("64512") or dotted ("1.10") AS number.
func ParseASNumber(s string) (ASNumber, error) {
	s = strings.TrimSpace(s)
	if hi, lo, ok := strings.Cut(s, "."); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("parse AS number %q: dotted form needs two numbers 0-65535", s)
		}
		return ASNumber(h<<16 | l), nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse AS number %q: must be 1-4294967295 or dotted", s)
	}
	return ASNumber(n), nil
}

// String returns the plain decimal form.
func (a ASNumber) String() string { return strconv.FormatUint(uint64(a), 10) }

// MarshalJSON writes the number form.
func (a ASNumber) MarshalJSON() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalJSON accepts a JSON number or a string in plain or dotted form.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode AS number: %w", err)
		}
		n, err := ParseASNumber(s)
		if err != nil {
			return err
		}
		*a = n
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 32)
	if err != nil {
		return fmt.Errorf("parse AS number %s: must be an integer 1-4294967295 or dotted string", b)
	}
	*a = ASNumber(n)
	return nil
}

// Protocol is Calico's "numorstring" protocol: a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or
// an IP protocol number 1-255. Exactly one of Name and Number is meaningful: Name when non-empty.
type Protocol struct {
	Name   string
	Number int
}

// Protocol names Calico accepts, with their IANA numbers.
var protocolNumbers = map[string]int{
	"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136,
}

// ProtocolFromString returns a named protocol, or a numbered one when s is all digits.
func ProtocolFromString(s string) Protocol {
	if n, err := strconv.Atoi(s); err == nil {
		return Protocol{Number: n}
	}
	return Protocol{Name: s}
}

// ProtocolFromInt returns a numbered protocol.
func ProtocolFromInt(n int) Protocol { return Protocol{Number: n} }

// CanonicalProtocolName returns the canonical spelling of a protocol name (case-insensitive match)
// and whether it is a known name.
func CanonicalProtocolName(s string) (string, bool) {
	for name := range protocolNumbers {
		if strings.EqualFold(name, s) {
			return name, true
		}
	}
	return s, false
}

// IANANumber returns the IP protocol number, or false when the name is unknown or the number
// is outside 1-255.
func (p Protocol) IANANumber() (uint8, bool) {
	if p.Name != "" {
		name, ok := CanonicalProtocolName(p.Name)
		if !ok {
			return 0, false
		}
		return uint8(protocolNumbers[name]), true
	}
	if p.Number < 1 || p.Number > 255 {
		return 0, false
	}
	return uint8(p.Number), true
}

// SupportsPorts reports whether port matches make sense for the protocol (TCP, UDP, SCTP, UDPLite).
func (p Protocol) SupportsPorts() bool {
	n, ok := p.IANANumber()
	return ok && (n == 6 || n == 17 || n == 132 || n == 136)
}

// IsICMP reports whether the protocol is ICMP (IPv4) or ICMPv6.
func (p Protocol) IsICMP() bool {
	n, ok := p.IANANumber()
	return ok && (n == 1 || n == 58)
}

// String returns the name or the number.
func (p Protocol) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(p.Number)
}

// MarshalJSON writes a string for a name and a number otherwise.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return []byte(strconv.Itoa(p.Number)), nil
}

// UnmarshalJSON accepts a number or a string; validity is checked by Validate so the error can name
// the field.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode protocol: %w", err)
		}
		*p = ProtocolFromString(s)
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("parse protocol %s: must be a name or an integer 1-255", b)
	}
	*p = Protocol{Number: n}
	return nil
}

// Port is Calico's "numorstring" port: a single port, a range "lo:hi", or a named port (the name of
// a port declared on the workload endpoint). A single port has MinPort == MaxPort.
type Port struct {
	MinPort  int
	MaxPort  int
	PortName string
}

// SinglePort returns a Port matching one number.
func SinglePort(n int) Port { return Port{MinPort: n, MaxPort: n} }

// ParsePortRange parses "80", "1000:2000" or a port name. Anything containing ':' must be a valid
// range; a name is returned as-is and checked by Validate.
func ParsePortRange(s string) (Port, error) {
	if lo, hi, ok := strings.Cut(s, ":"); ok {
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil {
			return Port{}, fmt.Errorf("parse port range %q: want \"min:max\" with numbers 1-65535", s)
		}
		if err := checkPortRange(l, h); err != nil {
			return Port{}, fmt.Errorf("parse port range %q: %w", s, err)
		}
		return Port{MinPort: l, MaxPort: h}, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if err := checkPortRange(n, n); err != nil {
			return Port{}, fmt.Errorf("parse port %q: %w", s, err)
		}
		return SinglePort(n), nil
	}
	if s == "" {
		return Port{}, fmt.Errorf("parse port: empty string")
	}
	return Port{PortName: s}, nil
}

func checkPortRange(lo, hi int) error {
	if lo < 1 || lo > 65535 || hi < 1 || hi > 65535 {
		return fmt.Errorf("ports must be 1-65535")
	}
	if lo > hi {
		return fmt.Errorf("range start %d is above its end %d", lo, hi)
	}
	return nil
}

// String returns "80", "1000:2000" or the name.
func (p Port) String() string {
	switch {
	case p.PortName != "":
		return p.PortName
	case p.MinPort == p.MaxPort:
		return strconv.Itoa(p.MinPort)
	default:
		return strconv.Itoa(p.MinPort) + ":" + strconv.Itoa(p.MaxPort)
	}
}

// MarshalJSON writes a number for a single port and a string otherwise.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.PortName == "" && p.MinPort == p.MaxPort {
		return []byte(strconv.Itoa(p.MinPort)), nil
	}
	return json.Marshal(p.String())
}

// UnmarshalJSON accepts a number, a "lo:hi" string or a name. Malformed text is kept in PortName
// so that Validate reports it with the field path.
func (p *Port) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode port: %w", err)
		}
		if lo, hi, ok := strings.Cut(s, ":"); ok {
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				*p = Port{MinPort: l, MaxPort: h}
				return nil
			}
		} else if n, err := strconv.Atoi(s); err == nil {
			*p = SinglePort(n)
			return nil
		}
		*p = Port{PortName: s}
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("parse port %s: must be an integer 1-65535, \"min:max\" or a name", b)
	}
	*p = SinglePort(n)
	return nil
}

// Duration is a time.Duration written as Go/Kubernetes duration text ("90s", "1m30s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON accepts duration text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode duration: want a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("parse duration: %w", err)
	}
	d.Duration = v
	return nil
}

package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// The best-path watch hands every path over as protobuf Any values. Unpacking them through
// proto reflection costs more than the rest of the pipeline at 100k prefixes, and only three
// small messages matter here, so they are read straight from the wire format.

const (
	typeIPAddressPrefix = "apipb.IPAddressPrefix"
	typeNextHop         = "apipb.NextHopAttribute"
	typeMpReach         = "apipb.MpReachNLRIAttribute"
)

var errNotUnicast = errors.New("not an IP unicast prefix")

func anyType(a *anypb.Any) string {
	u := a.GetTypeUrl()
	if i := strings.LastIndexByte(u, '/'); i >= 0 {
		return u[i+1:]
	}
	return u
}

// decodePath returns the prefix and next hop of a unicast path (next hop may be invalid when
// the path carries none, as withdrawals do).
func decodePath(p *api.Path) (netip.Prefix, netip.Addr, error) {
	if p.GetNlri() == nil || anyType(p.Nlri) != typeIPAddressPrefix {
		return netip.Prefix{}, netip.Addr{}, errNotUnicast
	}
	pfx, err := parseIPAddressPrefix(p.Nlri.GetValue())
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	var nh netip.Addr
	for _, a := range p.GetPattrs() {
		switch anyType(a) {
		case typeNextHop, typeMpReach:
			// NextHopAttribute field 1 and MpReachNLRIAttribute field 2 (first of next_hops, the
			// global address when a link-local one follows) are both the next hop strings.
			field := protowire.Number(1)
			if anyType(a) == typeMpReach {
				field = 2
			}
			s, err := firstString(a.GetValue(), field)
			if err != nil {
				return netip.Prefix{}, netip.Addr{}, fmt.Errorf("decode next hop: %w", err)
			}
			if s != "" {
				if nh, err = netip.ParseAddr(s); err != nil {
					return netip.Prefix{}, netip.Addr{}, fmt.Errorf("decode next hop: %w", err)
				}
			}
		}
	}
	return pfx, nh.Unmap(), nil
}

// parseIPAddressPrefix reads apipb.IPAddressPrefix{prefix_len = 1; prefix = 2}.
func parseIPAddressPrefix(b []byte) (netip.Prefix, error) {
	var plen uint64
	var addr string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return netip.Prefix{}, fmt.Errorf("decode prefix: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return netip.Prefix{}, fmt.Errorf("decode prefix length: %w", protowire.ParseError(n))
			}
			plen, b = v, b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return netip.Prefix{}, fmt.Errorf("decode prefix: %w", protowire.ParseError(n))
			}
			addr, b = string(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return netip.Prefix{}, fmt.Errorf("decode prefix: %w", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("decode prefix: %w", err)
	}
	a = a.Unmap()
	if plen > uint64(a.BitLen()) {
		return netip.Prefix{}, fmt.Errorf("decode prefix: length %d too long for %v", plen, a)
	}
	return netip.PrefixFrom(a, int(plen)).Masked(), nil
}

// firstString returns the first occurrence of a string field.
func firstString(b []byte, field protowire.Number) (string, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
		if num == field && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", protowire.ParseError(n)
			}
			return string(v), nil
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return "", nil
}

// isLocalPath reports whether GoBGP originated the path itself (AddPath), not a neighbour.
func isLocalPath(p *api.Path) bool {
	switch p.GetNeighborIp() {
	case "", "<nil>":
		return true
	}
	return false
}

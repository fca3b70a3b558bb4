package agent

// The resolver: what a learned next hop means in this host's kernel (the gateways, with their
// interfaces where the kernel needs them, of the underlay route that reaches it).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// resolverTTL is how long next-hop resolutions are reused between programming passes. A next hop
// behind the underlay's routing (a mesh peer in another rack) is resolved against a listing of
// the whole main table, our own routes included: with 100k learned routes that listing, done on
// every pass, cost more than the pass. An underlay change reaches routes changed later within
// this time, and every route at the next resync.
const resolverTTL = 5 * time.Second

// gateways resolves a prefix's next hops to gateways on connected subnets. Mesh peers announce
// their own address as next hop, which is usually behind the ToR: the kernel refuses such a
// gateway, so the route goes through whatever the underlay uses to reach it (ECMP included).
// Equal next-hop sets share one result slice, which nobody modifies.
func (r *resolver) gateways(nhs []netip.Addr) []routes.Gateway {
	if len(nhs) == 1 {
		return r.resolve(nhs[0])
	}
	var key strings.Builder
	for _, nh := range nhs {
		key.WriteString(nh.String())
		key.WriteByte(',')
	}
	if gws, ok := r.sets[key.String()]; ok {
		return gws
	}
	var gws []routes.Gateway
	for _, nh := range nhs {
		gws = append(gws, r.resolve(nh)...)
	}
	slices.SortFunc(gws, routes.Gateway.Compare)
	gws = collapse(slices.Compact(gws))
	if !slices.ContainsFunc(nhs, func(a netip.Addr) bool { return r.failed[a.Unmap()] }) {
		r.sets[key.String()] = gws // a set missing a failed lookup's share is not worth keeping
	}
	return gws
}

// collapse merges gateways of one address that came from different next hops, one on a connected
// subnet (no interface named) and one lent by an onlink route (interface named): they are one
// router, and the writer refuses an address twice unless each names its own link. The named one
// is kept. gws is sorted, and the caller's own.
func collapse(gws []routes.Gateway) []routes.Gateway {
	out := gws[:0]
	for _, g := range gws {
		if n := len(out); n > 0 && out[n-1].Addr == g.Addr && (out[n-1].LinkIndex == 0 || out[n-1].LinkIndex == g.LinkIndex) {
			out[n-1] = g // the named (or, on one link, the onlink) one sorts last
			continue
		}
		out = append(out, g)
	}
	return out
}

// endPass drops what must not outlive one programming pass: the main table as listed, and failed
// resolutions (a lookup may fail for a moment; a later pass tries again rather than keep a route
// unresolved until the next resync).
func (r *resolver) endPass() {
	r.table = nil
	clear(r.failed)
	for nh, gws := range r.cache {
		if len(gws) == 0 {
			delete(r.cache, nh)
		}
	}
	for k, gws := range r.sets {
		if len(gws) == 0 {
			delete(r.sets, k)
		}
	}
}

func newResolver(nl Netlink) *resolver {
	return &resolver{nl: nl, failed: map[netip.Addr]bool{}, cache: map[netip.Addr][]routes.Gateway{}, sets: map[string][]routes.Gateway{}}
}

// errLookupFailed marks a next-hop lookup that failed (netlink said something other than "no
// route"): it says nothing about the next hop, so it must not withdraw a route.
var errLookupFailed = errors.New("next-hop lookup failed")

// resolver looks next hops up in the kernel's FIB, caching per batch.
type resolver struct {
	nl     Netlink
	failed map[netip.Addr]bool // lookups that failed in this pass (errLookupFailed)
	cache  map[netip.Addr][]routes.Gateway
	sets   map[string][]routes.Gateway
	table  map[int][]netlink.Route // family => main table, listed once per batch when needed
}

func (r *resolver) resolve(nh netip.Addr) []routes.Gateway {
	nh = nh.Unmap()
	if gws, ok := r.cache[nh]; ok {
		return gws
	}
	gws, err := r.lookup(nh)
	if err != nil {
		gws = nil
		if errors.Is(err, errLookupFailed) {
			r.failed[nh] = true
		}
	}
	// Sorted and distinct, as the writer keeps them, so an unchanged route compares equal.
	slices.SortFunc(gws, routes.Gateway.Compare)
	gws = slices.Compact(gws)
	r.cache[nh] = gws
	return gws
}

func (r *resolver) lookup(nh netip.Addr) ([]routes.Gateway, error) {
	if nh.IsLinkLocalUnicast() {
		// A link-local next hop needs its interface, which the speaker does not report.
		return nil, fmt.Errorf("resolve next hop %s: link-local", nh)
	}
	// The kernel's matching route itself, with every path (a plain lookup gives one path of an
	// ECMP route): one request per distinct next hop, where listing the main table would read
	// every learned route of ours too (100k at scale) on each full pass.
	got, err := r.nl.RouteGetWithOptions(net.IP(nh.AsSlice()), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return nil, fmt.Errorf("resolve next hop %s: %w", nh, err)
		}
		return nil, fmt.Errorf("resolve next hop %s: %w: %w", nh, errLookupFailed, err)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("resolve next hop %s: no route", nh)
	}
	rt := got[0]
	switch {
	case rt.Type == unix.RTN_LOCAL:
		return nil, fmt.Errorf("resolve next hop %s: local address", nh)
	case rt.Protocol == routes.ProtocolTerraceBGP || rt.Type != unix.RTN_UNICAST || (rt.Table != 0 && rt.Table != unix.RT_TABLE_MAIN):
		// Ours (a learned prefix covers the next hop), or not the main table's: the longest
		// match in the main table among the others is what lends gateways.
		return r.recursive(nh)
	case rt.Gw == nil && len(rt.MultiPath) == 0 && rt.Via == nil:
		return routes.Via(nh), nil // on a connected subnet
	}
	return gatewaysOf(rt, nh)
}

// recursive returns every gateway of the longest matching route for nh in the main table that is
// not one of ours (a BGP route must never resolve through another BGP route), from a listing of
// the table: for when the kernel's own match is one of ours or in another table.
func (r *resolver) recursive(nh netip.Addr) ([]routes.Gateway, error) {
	fam := netlink.FAMILY_V4
	if nh.Is6() {
		fam = netlink.FAMILY_V6
	}
	if r.table == nil {
		r.table = map[int][]netlink.Route{}
	}
	rs, ok := r.table[fam]
	if !ok {
		var err error
		rs, err = r.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w: %w", errLookupFailed, err)
		}
		r.table[fam] = rs
	}
	best, bits := -1, -1
	for i, rt := range rs {
		if rt.Protocol == routes.ProtocolTerraceBGP || rt.Type != unix.RTN_UNICAST {
			continue
		}
		b := 0
		if rt.Dst != nil {
			ones, _ := rt.Dst.Mask.Size()
			pa, ok := netip.AddrFromSlice(rt.Dst.IP)
			if !ok || !netip.PrefixFrom(pa.Unmap(), ones).Contains(nh) {
				continue
			}
			b = ones
		}
		if b > bits {
			best, bits = i, b
		}
	}
	if best < 0 {
		return nil, fmt.Errorf("resolve next hop %s: no route", nh)
	}
	return gatewaysOf(rs[best], nh)
}

// gatewaysOf returns the gateways of rt, an underlay route through which nh resolves. A gateway
// keeps its interface when it needs one: a link-local IPv6 router (router advertisements,
// unnumbered ToRs) or an onlink gateway; the kernel refuses either without it.
func gatewaysOf(rt netlink.Route, nh netip.Addr) ([]routes.Gateway, error) {
	var gws []routes.Gateway
	viaOther := rt.Via != nil
	dead := 0
	add := func(ip net.IP, link, flags int) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || ip == nil {
			return
		}
		if flags&unix.RTNH_F_DEAD != 0 {
			// Its interface is down: the kernel refuses a route through it, the whole ECMP
			// route with it, while the other paths carry the traffic.
			dead++
			return
		}
		g := routes.Gateway{Addr: a.Unmap(), OnLink: flags&unix.RTNH_F_ONLINK != 0}
		if g.OnLink || (g.Addr.Is6() && g.Addr.IsLinkLocalUnicast()) {
			g.LinkIndex = link
		}
		gws = append(gws, g)
	}
	add(rt.Gw, rt.LinkIndex, rt.Flags)
	for _, h := range rt.MultiPath {
		viaOther = viaOther || h.Via != nil
		add(h.Gw, h.LinkIndex, h.Flags)
	}
	if viaOther {
		// An IPv4 route via an IPv6 router (RFC 5549 underlays): the writer cannot make one yet,
		// and the next hop itself as gateway would be refused.
		return nil, fmt.Errorf("resolve next hop %s: the underlay reaches it via a gateway of the other family", nh)
	}
	if len(gws) == 0 {
		if dead > 0 {
			return nil, fmt.Errorf("resolve next hop %s: every gateway of the underlay's route is down", nh)
		}
		return routes.Via(nh), nil
	}
	return gws, nil
}

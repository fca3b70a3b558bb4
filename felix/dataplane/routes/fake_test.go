package routes

import (
	"fmt"
	"net"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeNetlink is a recording fake of the kernel's routing table with the key semantics that
// matter: (table, dst, metric) is unique here, RouteAdd fails with EEXIST on a taken key,
// RouteDel matches metric, protocol and type when given, lowest metric first, as the kernel does.
type fakeNetlink struct {
	routes  []netlink.Route
	links   map[string]int
	calls   []string
	listErr error // RouteListFiltered fails with it while set
}

func newFakeNetlink() *fakeNetlink { return &fakeNetlink{links: map[string]int{}} }

func (f *fakeNetlink) find(r *netlink.Route) int {
	return slices.IndexFunc(f.routes, func(x netlink.Route) bool {
		return x.Table == r.Table && x.Dst.String() == r.Dst.String() && x.Priority == r.Priority
	})
}

func (f *fakeNetlink) RouteListFiltered(fam int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []netlink.Route
	for _, r := range f.routes {
		if (r.Dst.IP.To4() != nil) != (fam == netlink.FAMILY_V4) {
			continue
		}
		if mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table {
			continue
		}
		if mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeNetlink) RouteAdd(r *netlink.Route) error {
	f.calls = append(f.calls, "add "+describe(r))
	if f.find(r) >= 0 {
		return fmt.Errorf("file exists: %w", syscall.EEXIST)
	}
	f.routes = append(f.routes, *r)
	return nil
}

func (f *fakeNetlink) RouteReplace(r *netlink.Route) error {
	f.calls = append(f.calls, "replace "+describe(r))
	if i := f.find(r); i >= 0 {
		f.routes[i] = *r
		return nil
	}
	f.routes = append(f.routes, *r)
	return nil
}

func (f *fakeNetlink) RouteDel(r *netlink.Route) error {
	f.calls = append(f.calls, "del "+describe(r))
	i := -1
	for j, x := range f.routes {
		if x.Table != r.Table || x.Dst.String() != r.Dst.String() || (r.Priority != 0 && x.Priority != r.Priority) ||
			(r.Protocol != 0 && x.Protocol != r.Protocol) || (r.Type != 0 && x.Type != r.Type) {
			continue
		}
		if i < 0 || x.Priority < f.routes[i].Priority {
			i = j
		}
	}
	if i < 0 {
		return syscall.ESRCH
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	idx, ok := f.links[name]
	if !ok {
		return nil, netlink.LinkNotFoundError{}
	}
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: idx}}, nil
}

func describe(r *netlink.Route) string {
	s := r.Dst.String() + fmt.Sprintf(" proto %d", r.Protocol)
	if r.Priority != 0 {
		s += fmt.Sprintf(" metric %d", r.Priority)
	}
	switch {
	case r.Type == unix.RTN_BLACKHOLE:
		s += " blackhole"
	case len(r.MultiPath) > 0:
		for _, nh := range r.MultiPath {
			s += " nexthop " + nh.Gw.String()
		}
	case r.Gw != nil:
		s += " via " + r.Gw.String()
	default:
		s += fmt.Sprintf(" dev %d", r.LinkIndex)
	}
	return s
}

func foreign(dst string, proto netlink.RouteProtocol, gw string) netlink.Route {
	_, n, _ := net.ParseCIDR(dst)
	return netlink.Route{Dst: n, Table: TableMain, Protocol: proto, Gw: net.ParseIP(gw), Type: unix.RTN_UNICAST}
}

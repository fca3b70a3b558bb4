package routes

// What a route is made of: its target (a device, gateways or a blackhole) and each gateway.

import (
	"fmt"
	"net/netip"
)

// Target is where a prefix goes: exactly one of Dev alone (a directly attached workload, scope
// link), Gateways (optionally with Dev as the outgoing interface of them all; several mean ECMP)
// or Blackhole.
type Target struct {
	Dev       string
	Gateways  []Gateway
	Blackhole bool
}

// Gateway is one next hop of a route. LinkIndex pins its outgoing interface, which the kernel
// needs for an IPv6 link-local gateway (the address means nothing without its link) and for an
// onlink one (a gateway on none of the interface's subnets, as some underlays give their
// default route); zero leaves the choice to the kernel, or to Target.Dev. An index, not a name:
// the BGP resolver copies it from the underlay's route and resolves again when links change.
type Gateway struct {
	Addr      netip.Addr
	LinkIndex int
	OnLink    bool
}

// Via is addrs as gateways whose interfaces the kernel chooses, the common case.
func Via(addrs ...netip.Addr) []Gateway {
	gws := make([]Gateway, len(addrs))
	for i, a := range addrs {
		gws[i] = Gateway{Addr: a}
	}
	return gws
}

// Compare orders gateways as the writer keeps them: by address, then interface, onlink last.
// Callers that share one sorted slice between many routes spare the writer a copy for each.
func (g Gateway) Compare(h Gateway) int {
	if c := g.Addr.Compare(h.Addr); c != 0 {
		return c
	}
	if c := g.LinkIndex - h.LinkIndex; c != 0 {
		return c
	}
	switch {
	case g.OnLink == h.OnLink:
		return 0
	case h.OnLink:
		return -1
	}
	return 1
}

func (g Gateway) String() string {
	s := g.Addr.String()
	if g.LinkIndex != 0 {
		s += fmt.Sprintf(" dev #%d", g.LinkIndex)
	}
	if g.OnLink {
		s += " onlink"
	}
	return s
}

func (t Target) validate(p netip.Prefix) error {
	switch {
	case t.Blackhole && (t.Dev != "" || len(t.Gateways) > 0):
		return fmt.Errorf("validate route %s: blackhole with a device or gateway", p)
	case !t.Blackhole && t.Dev == "" && len(t.Gateways) == 0:
		return fmt.Errorf("validate route %s: no device, gateway or blackhole", p)
	}
	for _, g := range t.Gateways {
		switch {
		case !g.Addr.IsValid() || g.Addr.Is4() != p.Addr().Is4() || g.Addr.Zone() != "":
			return fmt.Errorf("validate route %s: gateway %s of the wrong family", p, g.Addr)
		case g.LinkIndex < 0:
			return fmt.Errorf("validate route %s: gateway %s: negative interface index", p, g)
		case g.LinkIndex > 0 && t.Dev != "":
			return fmt.Errorf("validate route %s: gateway %s has an interface of its own and the route names device %s", p, g, t.Dev)
		case g.LinkIndex == 0 && t.Dev == "" && g.OnLink:
			return fmt.Errorf("validate route %s: onlink gateway %s without an interface", p, g.Addr)
		case g.LinkIndex == 0 && t.Dev == "" && g.Addr.Is6() && g.Addr.IsLinkLocalUnicast():
			return fmt.Errorf("validate route %s: link-local gateway %s without an interface", p, g.Addr)
		}
	}
	return nil
}

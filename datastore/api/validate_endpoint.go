package api

import "net/netip"

func (v *validator) node(n *Node) {
	s := &n.Spec
	if b := s.BGP; b != nil {
		v.hostAddr("spec.bgp.ipv4Address", b.IPv4Address, 4)
		v.hostAddr("spec.bgp.ipv6Address", b.IPv6Address, 6)
		if b.ASNumber != nil && *b.ASNumber == 0 {
			v.add("spec.bgp.asNumber", "must be 1-4294967295")
		}
		if b.IPv4IPIPTunnelAddr != "" {
			v.add("spec.bgp.ipv4IPIPTunnelAddr", "Terrace never encapsulates; must be empty")
		}
		// Calico uses an IPv4 address as the cluster ID, as BGP does (RFC 4456).
		if b.RouteReflectorClusterID != "" {
			if a, err := parseAddr(b.RouteReflectorClusterID); err != nil || !a.Is4() {
				v.add("spec.bgp.routeReflectorClusterID", "%q must be written as an IPv4 address (e.g. 224.0.0.1)", b.RouteReflectorClusterID)
			}
		}
	}
	for i, a := range s.Addresses {
		p := idx("spec.addresses", i)
		if a.Address == "" {
			v.add(p+".address", "is required")
		} else if _, err := parsePrefixOrAddr(a.Address); err != nil {
			v.add(p+".address", "%q is not an IP address or CIDR", a.Address)
		}
		switch a.Type {
		case "", NodeAddressInternalIP, NodeAddressExternalIP, NodeAddressCalicoNodeIP:
		default:
			v.add(p+".type", "%q is not one of InternalIP, ExternalIP, CalicoNodeIP", a.Type)
		}
	}
	for i, o := range s.OrchRefs {
		if o.Orchestrator == "" {
			v.add(idx("spec.orchRefs", i)+".orchestrator", "is required")
		}
	}
	for _, f := range []struct{ path, val string }{
		{"spec.ipv4VXLANTunnelAddr", s.IPv4VXLANTunnelAddr}, {"spec.vxlanTunnelMACAddr", s.VXLANTunnelMACAddr},
		{"spec.ipv6VXLANTunnelAddr", s.IPv6VXLANTunnelAddr}, {"spec.vxlanTunnelMACAddrV6", s.VXLANTunnelMACAddrV6},
	} {
		if f.val != "" {
			v.add(f.path, "Terrace never encapsulates; must be empty")
		}
	}
	if w := s.Wireguard; w != nil && (w.InterfaceIPv4Address != "" || w.InterfaceIPv6Address != "") {
		v.add("spec.wireguard", "Terrace does not run Wireguard; must be empty")
	}
	if a := n.Status.Autodetection; a != nil {
		v.ip("status.autodetection.ipv4", a.IPv4, 4)
		v.ip("status.autodetection.ipv6", a.IPv6, 6)
	}
	v.nets("status.podCIDRs", n.Status.PodCIDRs, 0)
}

// hostAddr accepts an address with or without a prefix length ("192.0.2.10/24", as Calico writes
// node addresses, keeps its host bits on purpose).
func (v *validator) hostAddr(path, s string, want int) {
	if s == "" {
		return
	}
	var a netip.Addr
	if p, err := netip.ParsePrefix(s); err == nil {
		a = p.Addr()
	} else if a, err = netip.ParseAddr(s); err != nil {
		v.add(path, "%q is not an IPv%d address or address/prefix", s, want)
		return
	}
	if a.Zone() != "" || family(a.Unmap()) != want {
		v.add(path, "%q is not an IPv%d address", s, want)
	}
}

func (v *validator) workloadEndpoint(s *WorkloadEndpointSpec) {
	if s.Node == "" {
		v.add("spec.node", "is required: the endpoint's host")
	} else if e := subdomainError(s.Node); e != "" {
		v.add("spec.node", "%s", e)
	}
	v.interfaceName("spec.interfaceName", s.InterfaceName)
	v.nets("spec.ipNetworks", s.IPNetworks, 0)
	for i, n := range s.IPNetworks {
		// Each network is routed to the workload and joins every set its labels select, so a
		// typo like 198.18.0.5/24 would hand the pod a whole /24 (as Calico, single addresses only).
		if p, err := parsePrefixOrAddr(n); err == nil && p.Bits() != p.Addr().BitLen() {
			v.add(idx("spec.ipNetworks", i), "%q is more than one address; a workload's networks are single addresses (/32 or /128)", n)
		}
	}
	for i, n := range s.IPNATs {
		p := idx("spec.ipNATs", i)
		if n.InternalIP == "" {
			v.add(p+".internalIP", "is required")
		}
		if n.ExternalIP == "" {
			v.add(p+".externalIP", "is required")
		}
		v.ip(p+".internalIP", n.InternalIP, 0)
		v.ip(p+".externalIP", n.ExternalIP, 0)
	}
	v.ip("spec.ipv4Gateway", s.IPv4Gateway, 4)
	v.ip("spec.ipv6Gateway", s.IPv6Gateway, 6)
	v.mac("spec.mac", s.MAC)
	v.profiles(s.Profiles)
	for i, p := range s.Ports {
		path := idx("spec.ports", i)
		v.namedPort(path, p.Name, p.Protocol, p.Port)
		v.portNumber(path+".hostPort", p.HostPort, true)
		v.ip(path+".hostIP", p.HostIP, 0)
	}
	v.nets("spec.allowSpoofedSourcePrefixes", s.AllowSpoofedSourcePrefixes, 0)
	if len(s.AllowSpoofedSourcePrefixes) > 0 {
		// Workload interfaces filter sources strictly (rp_filter); accepting the field would
		// promise what the kernel then drops.
		v.add("spec.allowSpoofedSourcePrefixes", "Terrace drops packets a workload sends from addresses not routed to it; must be empty")
	}
}

func (v *validator) hostEndpoint(s *HostEndpointSpec) {
	if s.Node == "" {
		v.add("spec.node", "is required: the endpoint's host")
	} else if e := subdomainError(s.Node); e != "" {
		v.add("spec.node", "%s", e)
	}
	if s.InterfaceName == "" && len(s.ExpectedIPs) == 0 {
		v.add("spec.interfaceName", "interfaceName or expectedIPs is required")
	}
	if s.InterfaceName != "*" {
		v.interfaceName("spec.interfaceName", s.InterfaceName)
	}
	for i, ip := range s.ExpectedIPs {
		v.ip(idx("spec.expectedIPs", i), ip, 0)
	}
	v.profiles(s.Profiles)
	for i, p := range s.Ports {
		v.namedPort(idx("spec.ports", i), p.Name, p.Protocol, p.Port)
	}
}

func (v *validator) namedPort(path, name string, proto Protocol, port int) {
	if name == "" {
		v.add(path+".name", "is required")
	} else if !validPortName(name) {
		v.add(path+".name", "%q %s", name, portNameRule)
	}
	if n, ok := proto.IANANumber(); !ok || (n != 6 && n != 17 && n != 132) {
		v.add(path+".protocol", "%q must be TCP, UDP or SCTP", proto.String())
	}
	v.portNumber(path+".port", port, false)
}

func (v *validator) profiles(ps []string) {
	for i, p := range ps {
		if p == "" || len(p) > 253 || !labelNameRE.MatchString(p) {
			v.add(idx("spec.profiles", i), "%q is not a valid profile name", p)
		}
	}
}

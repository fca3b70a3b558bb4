package api

import "net/netip"

// SetDefaults fills in Calico's defaults for fields left empty and puts values into canonical form
// (CIDRs with host bits cleared, protocol names spelled as Calico does). It never fails: values it
// cannot interpret are left alone for Validate to report.
func SetDefaults(r Resource) {
	switch x := r.(type) {
	case *IPPool:
		defaultIPPool(&x.Spec)
	case *IPAMConfiguration:
		if x.Spec.AutoAllocateBlocks == nil {
			x.Spec.AutoAllocateBlocks = ptr(true)
		}
	case *BGPConfiguration:
		defaultBGPConfig(x)
	case *FelixConfiguration:
		// Only the cluster-wide object gets defaults: a per-node object falls back to it field by
		// field, so filling a per-node field would hide the cluster-wide value.
		if x.Metadata.Name == DefaultConfigName {
			if x.Spec.FailsafeInboundHostPorts == nil {
				x.Spec.FailsafeInboundHostPorts = ptr(DefaultFailsafeInboundHostPorts())
			}
			if x.Spec.FailsafeOutboundHostPorts == nil {
				x.Spec.FailsafeOutboundHostPorts = ptr(DefaultFailsafeOutboundHostPorts())
			}
		}
		canonProtoPorts(x.Spec.FailsafeInboundHostPorts)
		canonProtoPorts(x.Spec.FailsafeOutboundHostPorts)
	case *WorkloadEndpoint:
		normalizeNets(x.Spec.IPNetworks)
		normalizeNets(x.Spec.AllowSpoofedSourcePrefixes)
		for i := range x.Spec.Ports {
			canonProtocol(&x.Spec.Ports[i].Protocol)
		}
	case *HostEndpoint:
		for i := range x.Spec.Ports {
			canonProtocol(&x.Spec.Ports[i].Protocol)
		}
	case *NetworkPolicy:
		defaultPolicy(&x.Spec.Tier, &x.Spec.Types, x.Spec.Ingress, x.Spec.Egress)
	case *GlobalNetworkPolicy:
		defaultPolicy(&x.Spec.Tier, &x.Spec.Types, x.Spec.Ingress, x.Spec.Egress)
	case *NetworkSet:
		normalizeNets(x.Spec.Nets)
	case *GlobalNetworkSet:
		normalizeNets(x.Spec.Nets)
	}
}

func ptr[T any](v T) *T { return &v }

func defaultIPPool(s *IPPoolSpec) {
	// Calico stores a pool's CIDR with host bits cleared ("10.0.0.1/16" becomes "10.0.0.0/16").
	if p, err := netip.ParsePrefix(s.CIDR); err == nil && p.Addr().Zone() == "" {
		p = netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p))
		s.CIDR = p.Masked().String()
		if s.BlockSize == 0 {
			s.BlockSize = DefaultBlockSize4
			if p.Addr().Is6() {
				s.BlockSize = DefaultBlockSize6
			}
		}
	}
	if s.IPIPMode == "" {
		s.IPIPMode = EncapNever
	}
	if s.VXLANMode == "" {
		s.VXLANMode = EncapNever
	}
	if s.NodeSelector == "" {
		s.NodeSelector = "all()"
	}
	if len(s.AllowedUses) == 0 {
		s.AllowedUses = []string{AllowedUseWorkload, AllowedUseTunnel}
	}
	if s.AssignmentMode == "" {
		s.AssignmentMode = AssignmentAutomatic
	}
}

func defaultBGPConfig(c *BGPConfiguration) {
	s := &c.Spec
	// Every object's CIDRs are stored as what is advertised: a bare address as /32 (/128), host
	// bits cleared (10.96.0.10/12, the API server's flag copied as given, is 10.96.0.0/12), as
	// for pools and rule nets.
	for _, blocks := range [][]ServiceIPBlock{s.ServiceClusterIPs, s.ServiceExternalIPs, s.ServiceLoadBalancerIPs} {
		for i := range blocks {
			if n, err := NormalizeCIDR(blocks[i].CIDR); err == nil {
				blocks[i].CIDR = n
			}
		}
	}
	for i := range s.PrefixAdvertisements {
		if n, err := NormalizeCIDR(s.PrefixAdvertisements[i].CIDR); err == nil {
			s.PrefixAdvertisements[i].CIDR = n
		}
	}
	// As for FelixConfiguration, per-node objects inherit from "default" and get no defaults.
	if c.Metadata.Name != DefaultConfigName {
		return
	}
	if s.NodeToNodeMeshEnabled == nil {
		s.NodeToNodeMeshEnabled = ptr(true)
	}
	if s.ASNumber == nil {
		s.ASNumber = ptr(DefaultASNumber)
	}
	if s.ListenPort == 0 {
		s.ListenPort = DefaultListenPort
	}
	if s.LogSeverityScreen == "" {
		s.LogSeverityScreen = "Info"
	}
}

// defaultPolicy applies Calico's rule for an empty types list: Ingress when there are no egress
// rules (including a policy with no rules at all), Egress when there are only egress rules, both
// when there are both.
func defaultPolicy(tier *string, types *[]PolicyType, ingress, egress []Rule) {
	if *tier == "" {
		*tier = DefaultTier
	}
	if len(*types) == 0 {
		switch {
		case len(egress) == 0:
			*types = []PolicyType{PolicyTypeIngress}
		case len(ingress) == 0:
			*types = []PolicyType{PolicyTypeEgress}
		default:
			*types = []PolicyType{PolicyTypeIngress, PolicyTypeEgress}
		}
	}
	for _, rules := range [][]Rule{ingress, egress} {
		for i := range rules {
			r := &rules[i]
			canonProtocol(r.Protocol)
			canonProtocol(r.NotProtocol)
			for _, e := range []*EntityRule{&r.Source, &r.Destination} {
				normalizeNets(e.Nets)
				normalizeNets(e.NotNets)
			}
		}
	}
}

func canonProtocol(p *Protocol) {
	if p == nil || p.Name == "" {
		return
	}
	if name, ok := CanonicalProtocolName(p.Name); ok {
		p.Name = name
	}
}

func canonProtoPorts(pps *[]ProtoPort) {
	if pps == nil {
		return
	}
	for i := range *pps {
		if name, ok := CanonicalProtocolName((*pps)[i].Protocol); ok {
			(*pps)[i].Protocol = name
		}
	}
}

// normalizeNets rewrites parseable entries in place as canonical CIDRs; a bare address becomes
// a /32 or /128, as Calico reads it.
func normalizeNets(nets []string) {
	for i, n := range nets {
		if c, err := NormalizeCIDR(n); err == nil {
			nets[i] = c
		}
	}
}

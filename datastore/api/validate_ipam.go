package api

import (
	"fmt"
	"net/netip"
)

// Ranges a pool must stay out of: the link-local range holds the 169.254.1.1 gateway every
// workload routes through (and fe80::/10 the IPv6 one), and loopback, multicast, 0.0.0.0/8 and
// 240.0.0.0/4 are not usable host addresses.
var reservedPrefixes = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (the workload gateway 169.254.1.1 lives there)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (RFC 1122)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (class E, with the broadcast address)"},
	{netip.MustParsePrefix("fe80::/10"), "IPv6 link-local"},
	{netip.MustParsePrefix("::1/128"), "IPv6 loopback"},
	{netip.MustParsePrefix("ff00::/8"), "IPv6 multicast"},
}

func (v *validator) ipPool(s *IPPoolSpec) {
	var pool netip.Prefix
	if s.CIDR == "" {
		v.add("spec.cidr", "is required")
	} else if p, err := netip.ParsePrefix(s.CIDR); err != nil || p.Addr().Zone() != "" {
		v.add("spec.cidr", "%q is not a CIDR", s.CIDR)
	} else {
		// SetDefaults clears host bits the way Calico does when it stores a pool; a CIDR that
		// still has them here did not go through defaulting, and is refused rather than guessed.
		p = netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p))
		if p.Masked() != p {
			v.add("spec.cidr", "%q has host bits set; the network is %s", s.CIDR, p.Masked())
		} else {
			pool = p
		}
		for _, r := range reservedPrefixes {
			if pool.IsValid() && pool.Overlaps(r.prefix) {
				v.add("spec.cidr", "%s overlaps %s, which is %s", pool, r.prefix, r.why)
			}
		}
	}
	if pool.IsValid() && s.BlockSize != 0 {
		lo, hi := MinBlockSize4, MaxBlockSize4
		if pool.Addr().Is6() {
			lo, hi = MinBlockSize6, MaxBlockSize6
		}
		switch {
		case s.BlockSize < lo || s.BlockSize > hi:
			v.add("spec.blockSize", "%d is outside the allowed range %d-%d for an IPv%d pool", s.BlockSize, lo, hi, family(pool.Addr()))
		case s.BlockSize < pool.Bits():
			v.add("spec.blockSize", "a /%d block is larger than the /%d pool", s.BlockSize, pool.Bits())
		}
	} else if !pool.IsValid() && s.BlockSize != 0 && (s.BlockSize < MinBlockSize4 || s.BlockSize > MaxBlockSize6 ||
		(s.BlockSize > MaxBlockSize4 && s.BlockSize < MinBlockSize6)) {
		v.add("spec.blockSize", "%d is outside the allowed ranges %d-%d (IPv4) and %d-%d (IPv6)",
			s.BlockSize, MinBlockSize4, MaxBlockSize4, MinBlockSize6, MaxBlockSize6)
	}
	v.encapMode("spec.ipipMode", s.IPIPMode)
	v.encapMode("spec.vxlanMode", s.VXLANMode)
	v.selector("spec.nodeSelector", s.NodeSelector)
	for i, u := range s.AllowedUses {
		switch u {
		case AllowedUseWorkload, AllowedUseTunnel:
		case AllowedUseLoadBalancer:
			v.add(idx("spec.allowedUses", i), "Terrace does not assign load-balancer addresses; only Workload and Tunnel are accepted")
		default:
			v.add(idx("spec.allowedUses", i), "%q is not one of Workload, Tunnel, LoadBalancer", u)
		}
	}
	switch s.AssignmentMode {
	case "", AssignmentAutomatic:
	case AssignmentManual:
		v.add("spec.assignmentMode", "Terrace assigns from every enabled pool that selects the node; only \"Automatic\" is accepted")
	default:
		v.add("spec.assignmentMode", "%q is not one of Automatic, Manual", s.AssignmentMode)
	}
}

func (v *validator) encapMode(path, mode string) {
	switch mode {
	case "", EncapNever:
	case EncapAlways, EncapCrossSubnet:
		v.add(path, "Terrace never encapsulates; only \"Never\" is accepted")
	default:
		v.add(path, "%q is not one of Never, Always, CrossSubnet (and Terrace accepts only Never)", mode)
	}
}

// CheckPoolOverlap is the cross-resource check the datastore runs when writing a pool: its CIDR must
// not overlap any other pool's (pools with the same name are the one being replaced and skipped).
func CheckPoolOverlap(pool *IPPool, others []*IPPool) error {
	p, err := netip.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return fmt.Errorf("check pool overlap: %w", err)
	}
	p = p.Masked()
	var fields []FieldError
	for _, o := range others {
		if o == nil || o.Metadata.Name == pool.Metadata.Name {
			continue
		}
		q, err := netip.ParsePrefix(o.Spec.CIDR)
		if err != nil {
			continue
		}
		if p.Overlaps(q.Masked()) {
			fields = append(fields, FieldError{Path: "spec.cidr",
				Reason: fmt.Sprintf("%s overlaps IPPool %q (%s)", p, o.Metadata.Name, q.Masked())})
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return &ValidationError{Kind: KindIPPool, Name: pool.Metadata.Name, Fields: fields}
}

func (v *validator) ipamConfig(c *IPAMConfiguration) {
	if c.Metadata.Name != "" && c.Metadata.Name != IPAMConfigurationName {
		v.add("metadata.name", "there is one IPAMConfiguration and it must be named %q", IPAMConfigurationName)
	}
	if c.Spec.MaxBlocksPerHost < 0 {
		v.add("spec.maxBlocksPerHost", "must be 0 (no limit) or positive")
	}
	if c.Spec.AutoAllocateBlocks != nil && !*c.Spec.AutoAllocateBlocks {
		v.add("spec.autoAllocateBlocks", "Terrace always claims blocks for hosts automatically; only true is accepted")
	}
}

// ValidateUpdate checks what may not change when a stored resource is replaced; the datastore
// calls it on update with the stored (defaulted) version. A pool's CIDR and block size are fixed
// at creation, as in Calico: changing them would strand the blocks IPAM has already carved.
func ValidateUpdate(old, updated Resource) error {
	o, ok1 := old.(*IPPool)
	n, ok2 := updated.(*IPPool)
	if !ok1 || !ok2 {
		return nil
	}
	var fields []FieldError
	if o.Spec.CIDR != n.Spec.CIDR {
		fields = append(fields, FieldError{Path: "spec.cidr",
			Reason: fmt.Sprintf("cannot change from %s to %s; create a new pool and disable this one", o.Spec.CIDR, n.Spec.CIDR)})
	}
	if o.Spec.BlockSize != n.Spec.BlockSize {
		fields = append(fields, FieldError{Path: "spec.blockSize",
			Reason: fmt.Sprintf("cannot change from %d to %d once the pool exists", o.Spec.BlockSize, n.Spec.BlockSize)})
	}
	if len(fields) == 0 {
		return nil
	}
	return &ValidationError{Kind: KindIPPool, Name: n.Metadata.Name, Fields: fields}
}

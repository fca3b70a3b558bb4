package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/datastore/api"
)

// adverts fills Desired.Advertised: this node's blocks, the addresses it borrowed from other
// nodes' blocks (as /32 or /128, which win by longest prefix), and the service ranges, each with
// the communities of the prefixAdvertisements that cover it. Pools with disableBGPExport are
// never advertised, and as in Calico nothing outside an IP pool is advertised from IPAM.
func (c *computation) adverts() {
	c.d.Advertised = map[netip.Prefix]speaker.Advert{}
	pools := c.parsePools()
	for _, b := range c.in.Blocks {
		b = b.Masked()
		if c.exportable(b, pools, "block") {
			c.advertise(b, "block")
		}
	}
	for _, a := range c.in.Borrowed {
		a = a.Unmap()
		p := netip.PrefixFrom(a, a.BitLen())
		if slices.ContainsFunc(c.in.Blocks, func(b netip.Prefix) bool { return b.Contains(a) }) {
			continue // inside this node's own block: the block route covers it
		}
		if c.exportable(p, pools, "borrowed address") {
			c.advertise(p, "borrowed address")
		}
	}
	for _, group := range []struct {
		what   string
		blocks []api.ServiceIPBlock
	}{
		{"serviceClusterIPs", c.cfg.ServiceClusterIPs},
		{"serviceExternalIPs", c.cfg.ServiceExternalIPs},
		{"serviceLoadBalancerIPs", c.cfg.ServiceLoadBalancerIPs},
	} {
		for _, b := range group.blocks {
			p, err := api.ParseNet(strings.TrimSpace(b.CIDR))
			if err != nil {
				c.warnf("%s entry %q skipped: %v", group.what, b.CIDR, err)
				continue
			}
			c.advertise(p, group.what)
		}
	}
	c.communities()
}

type poolInfo struct {
	name     string
	cidr     netip.Prefix
	noExport bool
}

func (c *computation) parsePools() []poolInfo {
	var out []poolInfo
	for _, p := range c.in.Pools {
		if p == nil {
			continue
		}
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			c.warnf("IPPool %s ignored: %v", p.Metadata.Name, err)
			continue
		}
		out = append(out, poolInfo{name: p.Metadata.Name, cidr: cidr.Masked(), noExport: p.Spec.DisableBGPExport})
	}
	return out
}

func (c *computation) exportable(p netip.Prefix, pools []poolInfo, what string) bool {
	found := false
	for _, pool := range pools {
		if pool.cidr.Bits() <= p.Bits() && pool.cidr.Contains(p.Addr()) {
			if pool.noExport {
				return false
			}
			found = true
		}
	}
	if !found {
		c.warnf("%s %v not advertised: it is in no IP pool", what, p)
	}
	return found
}

func (c *computation) advertise(p netip.Prefix, what string) {
	nh := c.me.v4
	if p.Addr().Is6() {
		nh = c.me.v6
	}
	if !nh.IsValid() {
		c.warnf("%s %v not advertised: this node has no address in its family", what, p)
		return
	}
	// No explicit next hop: GoBGP then announces the local address of each session. A host
	// dual-homed to two ToRs reaches the second over a link where the node IP is not on-link, and
	// that ToR would hold a route via the node IP as unreachable and never pass it on. Mesh sessions
	// leave from the node IP anyway.
	c.d.Advertised[p] = speaker.Advert{}
}

// communities attaches to every advertised prefix the communities of each prefixAdvertisement
// whose CIDR covers it. Entries name a community from spec.communities or give "AA:NN".
func (c *computation) communities() {
	named := map[string]string{}
	for _, cm := range c.cfg.Communities {
		named[cm.Name] = cm.Value
	}
	type rule struct {
		cidr netip.Prefix
		list []speaker.Community
	}
	var rules []rule
	for _, pa := range c.cfg.PrefixAdvertisements {
		cidr, err := api.ParseNet(strings.TrimSpace(pa.CIDR))
		if err != nil {
			c.warnf("prefixAdvertisement %q skipped: %v", pa.CIDR, err)
			continue
		}
		r := rule{cidr: cidr}
		for _, entry := range pa.Communities {
			v := entry
			if nv, ok := named[entry]; ok {
				v = nv
			}
			cm, err := ParseCommunity(v)
			if err != nil {
				c.warnf("prefixAdvertisement %s: community %q skipped: %v", pa.CIDR, entry, err)
				continue
			}
			r.list = append(r.list, cm)
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		return
	}
	for p, a := range c.d.Advertised {
		for _, r := range rules {
			if r.cidr.Bits() <= p.Bits() && r.cidr.Contains(p.Addr()) {
				a.Communities = append(a.Communities, r.list...)
			}
		}
		slices.Sort(a.Communities)
		a.Communities = slices.Compact(a.Communities)
		c.d.Advertised[p] = a
	}
}

// ParseCommunity parses a standard community "AA:NN" (each 0-65535). Large communities
// ("AA:BB:CC") are rejected: the speaker sends standard communities only.
func ParseCommunity(s string) (speaker.Community, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) == 3 {
		return 0, fmt.Errorf("parse community %q: large communities are not supported", s)
	}
	if len(parts) != 2 {
		return 0, fmt.Errorf("parse community %q: want AA:NN", s)
	}
	hi, err1 := strconv.ParseUint(parts[0], 10, 16)
	lo, err2 := strconv.ParseUint(parts[1], 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse community %q: both halves must be 0-65535", s)
	}
	return speaker.Community(hi<<16 | lo), nil
}

package calc

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

// felixString returns the per-node value of a setting, else the cluster-wide one, else def.
func (c *Calculator) felixString(get func(*api.FelixConfigurationSpec) string, def string) string {
	for _, slot := range []string{"node", "default"} {
		if s := c.felix[slot]; s != nil && get(s) != "" {
			return get(s)
		}
	}
	return def
}

// felixMarks are the verdict marks of iptablesMarkMask, per node first.
func (c *Calculator) felixMarks() marks {
	for _, slot := range []string{"node", "default"} {
		if s := c.felix[slot]; s != nil && s.IptablesMarkMask != nil {
			return marksFromMask(*s.IptablesMarkMask)
		}
	}
	return defaultMarks
}

func (c *Calculator) failsafe(get func(*api.FelixConfigurationSpec) *[]api.ProtoPort, def []api.ProtoPort) []api.ProtoPort {
	for _, slot := range []string{"node", "default"} {
		if s := c.felix[slot]; s != nil && get(s) != nil {
			return *get(s)
		}
	}
	return def
}

func failsafeRules(pps []api.ProtoPort, f int, netFlag string) []iptables.Rule {
	var out []iptables.Rule
	for _, pp := range pps {
		m := "-p " + strings.ToLower(pp.Protocol) + " --dport " + strconv.Itoa(pp.Port)
		if pp.Net != "" {
			p, err := netip.ParsePrefix(pp.Net)
			if err != nil || p.Addr().Unmap().Is4() != (f == 0) {
				continue
			}
			m += " " + netFlag + " " + p.Masked().String()
		}
		out = append(out, iptables.Rule{Match: m, Action: "-j ACCEPT", Comment: "failsafe"})
	}
	return out
}

func (c *Calculator) renderStatic() {
	action := c.felixString(func(s *api.FelixConfigurationSpec) string { return s.DefaultEndpointToHostAction }, defaultEndpointToHost)
	in := c.failsafe(func(s *api.FelixConfigurationSpec) *[]api.ProtoPort { return s.FailsafeInboundHostPorts }, api.DefaultFailsafeInboundHostPorts())
	out := c.failsafe(func(s *api.FelixConfigurationSpec) *[]api.ProtoPort { return s.FailsafeOutboundHostPorts }, api.DefaultFailsafeOutboundHostPorts())
	// Policy's final verdicts, as Calico's iptablesFilterAllowAction and iptablesFilterDenyAction:
	// ACCEPT ends the packet's trip through the filter table, RETURN hands it back to the
	// kernel chain so rules after Terrace's still see it; REJECT answers instead of dropping.
	allow := "ACCEPT"
	if c.felixString(func(s *api.FelixConfigurationSpec) string { return s.IptablesFilterAllowAction }, "Accept") == "Return" {
		allow = "RETURN"
	}
	deny := "DROP"
	if c.felixString(func(s *api.FelixConfigurationSpec) string { return s.IptablesFilterDenyAction }, "Drop") == "Reject" {
		deny = "REJECT"
	}
	if app := c.felixString(func(s *api.FelixConfigurationSpec) string { return s.ChainInsertMode }, "Insert") == "Append"; app != c.out.appendInserts {
		c.out.appendInserts, c.out.changedAppend = app, true
	}
	for _, f := range c.families() {
		t := TableID{famVersion(f), "filter"}
		c.setChain(ChainRef{t, ChainForward}, []iptables.Rule{
			{Match: "-i " + workloadIfaceMatch, Action: "-j " + ChainFromWlDispatch},
			{Match: "-o " + workloadIfaceMatch, Action: "-j " + ChainToWlDispatch},
			{Match: "-i " + workloadIfaceMatch, Action: "-j " + allow, Comment: "allowed by workload policy"},
			{Match: "-o " + workloadIfaceMatch, Action: "-j " + allow, Comment: "allowed by workload policy"},
		})
		// A host endpoint chain that allows returns here with the accept mark; one that is not
		// isolated returns without it. The mark is cleared first so a packet that arrives
		// carrying the bit from elsewhere, on an interface without a host endpoint, is not taken
		// for allowed.
		hostAllowed := iptables.Rule{Match: c.marks.hasAccept(),
			Action: "-j " + allow, Comment: "allowed by host endpoint policy"}
		// Pass past the last policy acts as Allow (there are no profiles), as for workloads.
		hostPassed := iptables.Rule{Match: c.marks.hasPass(),
			Action: "-j " + allow, Comment: "passed by host endpoint policy"}
		c.setChain(ChainRef{t, ChainInput}, []iptables.Rule{
			{Match: "-i " + workloadIfaceMatch, Action: "-g " + ChainWlToHost},
			c.marks.clear(),
			{Action: "-j " + ChainFromHostEp},
			hostAllowed,
			hostPassed,
		})
		c.setChain(ChainRef{t, ChainOutput}, []iptables.Rule{
			{Match: "-o " + workloadIfaceMatch, Action: "-j RETURN", Comment: "host to local workload is not filtered"},
			c.marks.clear(),
			{Action: "-j " + ChainToHostEp},
			hostAllowed,
			hostPassed,
		})
		c.setChain(ChainRef{t, ChainDeny}, []iptables.Rule{{Action: "-j " + deny, Comment: "denied by policy"}})
		var wl []iptables.Rule
		if f == 1 {
			// Pure-L3 IPv6 needs neighbour discovery with the host before any policy applies.
			for _, typ := range []int{133, 134, 135, 136} {
				wl = append(wl, iptables.Rule{Match: "-p ipv6-icmp -m icmp6 --icmpv6-type " + strconv.Itoa(typ), Action: "-j ACCEPT"})
			}
		}
		wl = append(wl, iptables.Rule{Action: "-j " + ChainFromWlDispatch},
			iptables.Rule{Action: "-j " + strings.ToUpper(action), Comment: "defaultEndpointToHostAction"})
		c.setChain(ChainRef{t, ChainWlToHost}, wl)
		c.setChain(ChainRef{t, ChainAllow}, []iptables.Rule{c.marks.setAccept()})
		c.setChain(ChainRef{t, ChainPass}, []iptables.Rule{c.marks.setPass()})
		c.setChain(ChainRef{t, ChainFailsafeIn}, failsafeRules(in, f, "-s"))
		c.setChain(ChainRef{t, ChainFailsafeOut}, failsafeRules(out, f, "-d"))
		for kc, ch := range map[string]string{"FORWARD": ChainForward, "INPUT": ChainInput, "OUTPUT": ChainOutput} {
			c.setInsertions(ChainRef{t, kc}, []iptables.Rule{{Action: "-j " + ch}})
		}
		nat := TableID{famVersion(f), "nat"}
		c.setChain(ChainRef{nat, ChainPostrouting}, []iptables.Rule{{Action: "-j " + ChainNATOutgoing}})
		c.setInsertions(ChainRef{nat, "POSTROUTING"}, []iptables.Rule{{Action: "-j " + ChainPostrouting}})
		if f == 1 {
			// A workload may only send from addresses routed to its interface, so it cannot pass
			// for another in policy. IPv4 has the interface's rp_filter; IPv6 has no such sysctl,
			// and the rpfilter match only works before routing, in raw (or mangle) PREROUTING.
			raw := TableID{6, "raw"}
			c.setChain(ChainRef{raw, ChainPrerouting}, []iptables.Rule{{Match: "-i " + workloadIfaceMatch + " -m rpfilter --invert",
				Action: "-j DROP", Comment: "workload source not routed to its interface"}})
			c.setInsertions(ChainRef{raw, "PREROUTING"}, []iptables.Rule{{Action: "-j " + ChainPrerouting}})
		}
	}
}

// renderNAT masquerades traffic from natOutgoing pools to destinations outside every pool. The
// pool sets are named after their content, so a pool change swaps in new sets.
func (c *Calculator) renderNAT() {
	old := c.natSets
	c.natSets = nil
	names := sortedKeys(c.pools)
	for _, f := range c.families() {
		var all, masq []string
		for _, n := range names {
			p := c.pools[n]
			pf, err := netip.ParsePrefix(p.CIDR)
			if err != nil || pf.Addr().Unmap().Is4() != (f == 0) {
				continue
			}
			all = append(all, pf.Masked().String())
			if p.NATOutgoing { // disabled too: pods left in a pool being drained keep outbound NAT
				masq = append(masq, pf.Masked().String())
			}
		}
		var rules []iptables.Rule
		if len(masq) > 0 {
			allSet := c.x.acquire(f, "pools:all:"+strings.Join(all, ","), nil, membersOf(all)[f])
			masqSet := c.x.acquire(f, "pools:masq:"+strings.Join(masq, ","), nil, membersOf(masq)[f])
			c.natSets = append(c.natSets, allSet, masqSet)
			match := "-m set --match-set " + masqSet + " src -m set ! --match-set " + allSet + " dst"
			src := ""
			if a, err := netip.ParseAddr(c.felixString(func(s *api.FelixConfigurationSpec) string { return s.NATOutgoingAddress }, "")); err == nil && a.Unmap().Is4() == (f == 0) {
				src = a.Unmap().String()
				if f == 1 {
					src = "[" + src + "]" // so a port range can follow
				}
			}
			action := func(ports string) string {
				switch {
				case src == "" && ports == "":
					return "-j MASQUERADE"
				case src == "":
					return "-j MASQUERADE --to-ports " + ports
				case ports == "":
					return "-j SNAT --to-source " + strings.Trim(src, "[]")
				}
				return "-j SNAT --to-source " + src + ":" + ports
			}
			// natPortRange, as Calico: only protocols with ports can be given one, so TCP, UDP
			// and SCTP are mapped into it and everything else is translated as before.
			if pr := c.natPortRange(); pr != "" {
				for _, proto := range []string{"tcp", "udp", "sctp"} {
					rules = append(rules, iptables.Rule{Match: "-p " + proto + " " + match, Action: action(pr), Comment: "natOutgoing"})
				}
			}
			rules = append(rules, iptables.Rule{Match: match, Action: action(""), Comment: "natOutgoing"})
		}
		c.setChain(ChainRef{TableID{famVersion(f), "nat"}, ChainNATOutgoing}, rules)
	}
	for _, s := range old {
		c.x.release(s)
	}
}

// natPortRange is FelixConfiguration natPortRange as iptables writes a NAT port range
// ("32768-65535"), or "" when unset.
func (c *Calculator) natPortRange() string {
	for _, slot := range []string{"node", "default"} {
		if s := c.felix[slot]; s != nil && s.NATPortRange != nil && s.NATPortRange.PortName == "" && s.NATPortRange.MinPort > 0 {
			r := s.NATPortRange
			if r.MinPort == r.MaxPort {
				return strconv.Itoa(r.MinPort)
			}
			return strconv.Itoa(r.MinPort) + "-" + strconv.Itoa(r.MaxPort)
		}
	}
	return ""
}

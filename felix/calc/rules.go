package calc

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/selector"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

// Mark bits policy chains use to hand their verdict back to the endpoint chain, by default (as
// Calico's within its default iptablesMarkMask 0xffff0000).
const (
	MarkAccept = 0x10000
	MarkPass   = 0x20000
	// maxMultiport is iptables' limit of port slots in one multiport match (a range takes two).
	maxMultiport = 15
)

// marks are the two verdict bits in use: the lowest two bits of FelixConfiguration
// iptablesMarkMask, so Terrace's bits can be moved off ones another program on the host uses.
type marks struct{ accept, pass uint32 }

var defaultMarks = marks{accept: MarkAccept, pass: MarkPass}

// marksFromMask takes the lowest two set bits of mask; a mask with fewer (refused by validation)
// gives the defaults.
func marksFromMask(mask uint32) marks {
	accept := mask & -mask
	rest := mask &^ accept
	pass := rest & -rest
	if accept == 0 || pass == 0 {
		return defaultMarks
	}
	return marks{accept: accept, pass: pass}
}

func (m marks) setAccept() iptables.Rule {
	return iptables.Rule{Action: "-j MARK --set-xmark " + hexMark(m.accept) + "/" + hexMark(m.accept)}
}

func (m marks) returnAccept() iptables.Rule {
	return iptables.Rule{Match: m.hasAccept(), Action: "-j RETURN"}
}

func (m marks) setPass() iptables.Rule {
	return iptables.Rule{Action: "-j MARK --set-xmark " + hexMark(m.pass) + "/" + hexMark(m.pass)}
}

func (m marks) clear() iptables.Rule {
	return iptables.Rule{Action: "-j MARK --set-xmark 0x0/" + hexMark(m.accept|m.pass)}
}

func (m marks) hasAccept() string {
	return "-m mark --mark " + hexMark(m.accept) + "/" + hexMark(m.accept)
}
func (m marks) hasPass() string   { return "-m mark --mark " + hexMark(m.pass) + "/" + hexMark(m.pass) }
func (m marks) notPassed() string { return "-m mark --mark 0x0/" + hexMark(m.pass) }

func hexMark(m uint32) string { return "0x" + strconv.FormatUint(uint64(m), 16) }

// ruleRenderer renders the rules of one policy direction for one IP version.
type ruleRenderer struct {
	x         *setIndex
	f         int // family index
	dir       int
	namespace string // the policy's namespace, "" for global
	sets      *[]string
}

// protoName is how iptables spells a protocol number.
func protoName(n uint8) string {
	switch n {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "ipv6-icmp"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(n))
}

// familyOK reports whether protocol number n exists in family f (ICMP is IPv4's, ICMPv6 IPv6's).
func familyOK(n uint8, f int) bool {
	return !(n == 1 && f == 1) && !(n == 58 && f == 0)
}

// render returns the iptables rules for r; none when r cannot match in this family. Which
// families a rule can match in is api.RuleFamilies' decision, the one validation applies; the
// checks further down only shape what is rendered.
func (rr *ruleRenderer) render(r *api.Rule) []iptables.Rule {
	if v4, v6, _ := api.RuleFamilies(r); (rr.f == 0 && !v4) || (rr.f == 1 && !v6) {
		return nil
	}
	var m []string
	var proto uint8
	if r.Protocol != nil {
		n, ok := r.Protocol.IANANumber()
		if !ok || !familyOK(n, rr.f) {
			return nil
		}
		proto = n
		m = append(m, "-p "+protoName(n))
	}
	if r.NotProtocol != nil {
		// iptables takes one -p: next to a protocol, notProtocol is either that protocol (never
		// matches) or redundant. A protocol of the other family never matches, so "not it"
		// always holds there.
		if n, ok := r.NotProtocol.IANANumber(); ok && familyOK(n, rr.f) {
			switch {
			case proto == n:
				return nil
			case proto == 0:
				m = append(m, "! -p "+protoName(n))
			}
		}
	}
	// Port matches go right after -p so the protocol's implicit match parses them.
	head := strings.Join(m, " ")
	m = nil
	var alts [2][]string
	for i, e := range []*api.EntityRule{&r.Source, &r.Destination} {
		src := i == 0
		em, sm, ok := rr.entity(e, src)
		if !ok {
			return nil
		}
		m = append(m, em...)
		if alts[i], ok = rr.portAlternatives(e.Ports, sm, proto, src); !ok {
			return nil
		}
		flag, dir := "--dports", "dst,dst"
		if src {
			flag, dir = "--sports", "src,src"
		}
		for _, c := range mustChunks(numericPorts(e.NotPorts)) {
			m = append(m, "-m multiport ! "+flag+" "+portList(c))
		}
		for _, p := range e.NotPorts {
			if p.PortName != "" {
				if set := rr.namedPortSet(sm, proto, p.PortName); set != "" {
					m = append(m, "-m set ! --match-set "+set+" "+dir)
				}
			}
		}
	}
	if r.ICMP != nil && r.ICMP.Type != nil {
		m = append(m, rr.icmp(r.ICMP, false))
	}
	if r.NotICMP != nil && r.NotICMP.Type != nil {
		m = append(m, rr.icmp(r.NotICMP, true))
	}
	tail := strings.Join(m, " ")
	var matches []string
	for _, sp := range alts[0] {
		for _, dp := range alts[1] {
			matches = append(matches, joinNonEmpty([]string{head, sp, dp, tail}))
		}
	}
	var out []iptables.Rule
	switch r.Action {
	case api.ActionAllow:
		// A goto to a chain that only sets the mark returns straight to the endpoint chain:
		// one rule per match instead of mark-then-RETURN.
		for _, mt := range matches {
			out = append(out, iptables.Rule{Match: mt, Action: "-g " + ChainAllow})
		}
	case api.ActionPass:
		for _, mt := range matches {
			out = append(out, iptables.Rule{Match: mt, Action: "-g " + ChainPass})
		}
	case api.ActionDeny:
		for _, mt := range matches {
			// Through trc-deny, which drops or rejects per FelixConfiguration
			// iptablesFilterDenyAction, so that setting never re-renders a policy.
			out = append(out, iptables.Rule{Match: mt, Action: "-j " + ChainDeny})
		}
	case api.ActionLog:
		prefix := "trc-ingress:"
		if rr.dir == dirEgress {
			prefix = "trc-egress:"
		}
		for _, mt := range matches {
			out = append(out, iptables.Rule{Match: mt, Action: "-j LOG --log-prefix " + prefix})
		}
	}
	return out
}

func (rr *ruleRenderer) icmp(f *api.ICMPFields, not bool) string {
	var b strings.Builder
	if rr.f == 0 {
		b.WriteString("-m icmp ")
	} else {
		b.WriteString("-m icmp6 ")
	}
	if not {
		b.WriteString("! ")
	}
	if rr.f == 0 {
		b.WriteString("--icmp-type ")
	} else {
		b.WriteString("--icmpv6-type ")
	}
	b.WriteString(strconv.Itoa(*f.Type))
	if f.Code != nil {
		b.WriteString("/" + strconv.Itoa(*f.Code))
	}
	return b.String()
}

// entity renders nets, notNets, selector, notSelector and namespaceSelector of one side; ok is
// false when the side can never match in this family.
func (rr *ruleRenderer) entity(e *api.EntityRule, src bool) (m []string, positive *selMatcher, ok bool) {
	addrFlag, setDir := "-d", "dst"
	if src {
		addrFlag, setDir = "-s", "src"
	}
	// iptables takes one -s and one -d per rule, negated or not: with a positive net given by
	// flag, a single negated one goes through a set too (else the whole table's restore fails).
	flagUsed := false
	if len(e.Nets) > 0 {
		nets, all := rr.familyNets(e.Nets)
		switch {
		case all:
		case len(nets) == 0:
			return nil, nil, false
		case len(nets) == 1:
			m = append(m, addrFlag+" "+nets[0])
			flagUsed = true
		default:
			m = append(m, "-m set --match-set "+rr.acquireNets(nets)+" "+setDir)
		}
	}
	if len(e.NotNets) > 0 {
		nets, all := rr.familyNets(e.NotNets)
		switch {
		case all:
			return nil, nil, false
		case len(nets) == 0:
			// Only the other family's: as Calico, the rule is left out of this family rather
			// than kept with no address condition, which would match every address of it
			// (an Allow of "not the v4 cluster range" would open all IPv6).
			return nil, nil, false
		case len(nets) == 1 && !flagUsed:
			m = append(m, "! "+addrFlag+" "+nets[0])
		case len(nets) >= 1:
			m = append(m, "-m set ! --match-set "+rr.acquireNets(nets)+" "+setDir)
		}
	}
	sa := e.ServiceAccounts != nil && (len(e.ServiceAccounts.Names) > 0 || e.ServiceAccounts.Selector != "")
	if e.Selector != "" || e.NamespaceSelector != "" || sa || (rr.namespace != "" && e.NotSelector != "") {
		sm := selMatcher{}
		var err error
		if sm.sel, err = selector.Parse(e.Selector); err != nil {
			return nil, nil, false
		}
		if sa {
			sm.saNames = slices.Compact(slices.Sorted(slices.Values(e.ServiceAccounts.Names)))
			if e.ServiceAccounts.Selector != "" {
				if sm.saSel, err = parseServiceAccountSelector(e.ServiceAccounts.Selector); err != nil {
					return nil, nil, false
				}
			}
		}
		if e.NamespaceSelector != "" {
			if sm.nsSel, err = parseNamespaceSelector(e.NamespaceSelector); err != nil {
				return nil, nil, false
			}
		} else {
			sm.ns = rr.namespace
		}
		m = append(m, "-m set --match-set "+rr.acquireSel(sm)+" "+setDir)
		positive = &sm
	}
	if e.NotSelector != "" {
		sel, err := selector.Parse(e.NotSelector)
		if err != nil {
			return nil, nil, false
		}
		m = append(m, "-m set ! --match-set "+rr.acquireSel(selMatcher{sel: sel})+" "+setDir)
	}
	return m, positive, true
}

// familyNets returns this family's nets, canonical and sorted; all is true when one is a /0.
func (rr *ruleRenderer) familyNets(nets []string) (out []string, all bool) {
	for _, n := range nets {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Unmap().Is4() != (rr.f == 0) {
			continue
		}
		if p.Bits() == 0 {
			all = true
		}
		out = append(out, p.Masked().String())
	}
	slices.Sort(out)
	return slices.Compact(out), all
}

func (rr *ruleRenderer) acquireNets(nets []string) string {
	name := rr.x.acquire(rr.f, "nets:"+strings.Join(nets, ","), nil, membersOf(nets)[rr.f])
	*rr.sets = append(*rr.sets, name)
	return name
}

func (rr *ruleRenderer) acquireSel(sm selMatcher) string {
	name := rr.x.acquire(rr.f, sm.identity(), &sm, nil)
	*rr.sets = append(*rr.sets, name)
	return name
}

func numericPorts(ps []api.Port) []api.Port {
	var out []api.Port
	for _, p := range ps {
		if p.PortName == "" {
			out = append(out, p)
		}
	}
	return out
}

// portAlternatives returns the port matches of one side, any of which may hold: multiport chunks
// of the numeric ports and one named-port set per port name. [""] means no port condition; ok is
// false when no alternative can match (only named ports, none usable with this protocol).
func (rr *ruleRenderer) portAlternatives(ps []api.Port, sm *selMatcher, proto uint8, src bool) ([]string, bool) {
	if len(ps) == 0 {
		return []string{""}, true
	}
	flag, dir := "--dport", "dst,dst"
	if src {
		flag, dir = "--sport", "src,src"
	}
	var out []string
	for _, c := range mustChunks(numericPorts(ps)) {
		out = append(out, portMatch(c, flag, proto))
	}
	for _, p := range ps {
		if p.PortName != "" {
			if set := rr.namedPortSet(sm, proto, p.PortName); set != "" {
				out = append(out, "-m set --match-set "+set+" "+dir)
			}
		}
	}
	return out, len(out) > 0
}

// namedPortSet acquires the hash:ip,port set of the named port on the endpoints the side's
// selector matches (every endpoint of the cluster when it has none, in a NetworkPolicy too: the
// side matches any address then, so the port is resolved wherever it is declared, as Calico
// does). It returns "" for protocols ipset cannot hold (only TCP, UDP and SCTP).
func (rr *ruleRenderer) namedPortSet(sm *selMatcher, proto uint8, name string) string {
	pn := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}[proto]
	if pn == "" {
		return ""
	}
	m := selMatcher{sel: selector.MustParse("all()")}
	if sm != nil {
		m = *sm
	}
	np := &namedPort{Name: name, Proto: pn}
	set := rr.x.acquireNamedPort(rr.f, "namedport:"+pn+":"+name+"|"+m.identity(), &m, nil, np)
	*rr.sets = append(*rr.sets, set)
	return set
}

func mustChunks(ps []api.Port) [][]api.Port {
	var out [][]api.Port
	var cur []api.Port
	slots := 0
	for _, p := range ps {
		n := 1
		if p.MinPort != p.MaxPort {
			n = 2
		}
		if slots+n > maxMultiport {
			out = append(out, cur)
			cur, slots = nil, 0
		}
		cur = append(cur, p)
		slots += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func portList(ps []api.Port) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// UDP's and UDPLite's protocol numbers.
const (
	protoUDP     = 17
	protoUDPLite = 136
)

// portMatch uses the plain --dport form for one port or range and multiport otherwise. UDP always
// uses multiport: iptables(-restore) parses a UDP --dport/--sport through a lookup that dumps every
// address of the namespace, about 2 ms per rule on a host with 1,000 workload veths (a 2,500-rule
// restore took 6 s instead of 1.1 s in the scale benchmark), while multiport costs microseconds.
// UDPLite too: iptables has no udplite match for the plain form (its restore would fail, and with
// it every rule of the table), only multiport knows the protocol.
func portMatch(ps []api.Port, flag string, proto uint8) string {
	if len(ps) == 1 && proto != protoUDP && proto != protoUDPLite {
		return flag + " " + ps[0].String()
	}
	return "-m multiport " + flag + "s " + portList(ps)
}

func joinNonEmpty(parts []string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p)
	}
	return b.String()
}

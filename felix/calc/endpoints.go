package calc

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// Chains with fixed names.
const (
	ChainForward        = "trc-FORWARD"
	ChainInput          = "trc-INPUT"
	ChainOutput         = "trc-OUTPUT"
	ChainPostrouting    = "trc-POSTROUTING"
	ChainPrerouting     = "trc-PREROUTING" // raw table, IPv6 only
	ChainFromWlDispatch = "trc-from-wl-dispatch"
	ChainToWlDispatch   = "trc-to-wl-dispatch"
	ChainFromHostEp     = "trc-from-host-ep"
	ChainToHostEp       = "trc-to-host-ep"
	ChainWlToHost       = "trc-wl-to-host"
	ChainFailsafeIn     = "trc-failsafe-in"
	ChainFailsafeOut    = "trc-failsafe-out"
	ChainNATOutgoing    = "trc-nat-outgoing"
	ChainAllow          = "trc-allow" // policy chains goto it: set the accept mark, return
	ChainPass           = "trc-pass"  // likewise with the pass mark
	ChainDeny           = "trc-deny"  // Deny rules and the end of a policy list: DROP or REJECT
	workloadIfaceMatch  = "trc+"
	// WorkloadIfacePrefix starts every workload interface Terrace owns (CONVENTIONS.md): only
	// those get routes and interface settings, whatever name an endpoint gives.
	WorkloadIfacePrefix   = "trc"
	defaultEndpointToHost = "Drop"
)

// localEP is a workload or host endpoint on this node.
type localEP struct {
	key             string
	kind            string
	namespace, name string
	iface           string // "" for a host endpoint given by expectedIPs alone
	expected        []netip.Addr
	host            bool
	obj             *labelled
	policies        map[string]*policy
}

var terraceIface = regexp.MustCompile(`^trc[0-9a-f]{11}$`)

// chainNames returns the endpoint's [ingress, egress] chain names.
func (ep *localEP) chainNames() [2]string {
	if ep.host && ep.iface == "" {
		// Named after the endpoint: it may cover several interfaces, and they may change.
		return [2]string{iptables.ChainName("fh", "hep:"+ep.key), iptables.ChainName("th", "hep:"+ep.key)}
	}
	if ep.host {
		return [2]string{iptables.ChainName("fh", "if:"+ep.iface), iptables.ChainName("th", "if:"+ep.iface)}
	}
	if terraceIface.MatchString(ep.iface) {
		return [2]string{"trc-tw-" + ep.iface[3:], "trc-fw-" + ep.iface[3:]}
	}
	return [2]string{iptables.ChainName("tw", "if:"+ep.iface), iptables.ChainName("fw", "if:"+ep.iface)}
}

func (c *Calculator) updateLocal(key string, l *labelled, ep *localEP, labelsSame bool) {
	old := c.locals[key]
	if old != nil && (ep == nil || old.chainNames() != ep.chainNames()) {
		c.releaseChains(key, old.chainNames())
	}
	if ep != nil && (old == nil || old.chainNames() != ep.chainNames()) {
		c.claimChains(key, ep.chainNames())
	}
	if ep == nil {
		if old == nil {
			return
		}
		for pk, p := range old.policies {
			delete(p.matched, key)
			if len(p.matched) == 0 {
				c.dirtyPolicies[pk] = true
			}
		}
		delete(c.locals, key)
		delete(c.dirtyEPs, key)
		c.useLists(key, [2]string{}, [2][]iptables.Rule{})
		c.removedEPs[key] = true
		c.dispatchDirty, c.routesDirty = true, true
		return
	}
	ep.obj = l
	delete(c.removedEPs, key)
	c.locals[key] = ep
	c.dirtyEPs[key] = true
	if old == nil || old.iface != ep.iface || old.host != ep.host {
		c.dispatchDirty = true
	}
	if old == nil || !slices.Equal(old.obj.members[0], l.members[0]) || !slices.Equal(old.obj.members[1], l.members[1]) {
		c.routesDirty = true
	}
	if old != nil && labelsSame && old.host == ep.host {
		ep.policies = old.policies
		for _, p := range ep.policies {
			p.matched[key] = ep
		}
		return
	}
	ep.policies = map[string]*policy{}
	for pk, p := range c.policies {
		c.stats.PolicyMatchEvals++
		activeBefore := len(p.matched) > 0
		if p.appliesTo(ep) {
			ep.policies[pk] = p
			p.matched[key] = ep
		} else {
			delete(p.matched, key)
		}
		if activeBefore != (len(p.matched) > 0) {
			// The policy became active or inactive on this node.
			c.dirtyPolicies[pk] = true
		}
	}
}

// Two local endpoints can claim one interface (a misconfiguration): the lowest key owns the
// chains and the dispatch entry so the outcome does not depend on arrival order; the others are
// left out of Desired.Endpoints until the owner goes.
func (c *Calculator) claimChains(key string, names [2]string) {
	set := c.byChains[names]
	if set == nil {
		set = map[string]bool{}
		c.byChains[names] = set
	}
	if len(set) > 0 {
		if prev := minKey(set); key < prev {
			c.dirtyEPs[prev] = true
		}
	}
	set[key] = true
}

func (c *Calculator) releaseChains(key string, names [2]string) {
	set := c.byChains[names]
	wasOwner := minKey(set) == key
	delete(set, key)
	c.dispatchDirty = true
	if len(set) == 0 {
		delete(c.byChains, names)
		for _, f := range c.families() {
			for _, n := range names {
				c.removeChain(ChainRef{Table: TableID{famVersion(f), "filter"}, Name: n})
			}
		}
		return
	}
	if wasOwner {
		c.dirtyEPs[minKey(set)] = true
	}
}

func minKey(set map[string]bool) string {
	first, m := true, ""
	for k := range set {
		if first || k < m {
			first, m = false, k
		}
	}
	return m
}

func (c *Calculator) ownsChains(ep *localEP) bool {
	return minKey(c.byChains[ep.chainNames()]) == ep.key
}

// renderEndpoint renders the endpoint's chains and its policy revision.
func (c *Calculator) renderEndpoint(ep *localEP) {
	if !c.ownsChains(ep) {
		c.useLists(ep.key, [2]string{}, [2][]iptables.Rule{})
		if _, ok := c.out.eps[ep.key]; ok {
			delete(c.out.eps, ep.key)
			c.out.changedEPs[ep.key] = true
		}
		return
	}
	c.stats.EndpointRenders++
	var pols [2][]*policy
	for _, p := range ep.policies {
		for d := range 2 {
			if p.types[d] {
				pols[d] = append(pols[d], p)
			}
		}
	}
	var lists [2]string
	var listRules [2][]iptables.Rule
	for d := range 2 {
		if len(pols[d]) > 0 {
			slices.SortFunc(pols[d], comparePolicies)
			lists[d] = policyListName(d, pols[d])
			listRules[d] = policyListRules(d, pols[d])
		}
	}
	c.useLists(ep.key, lists, listRules)
	h := sha256.New()
	names := ep.chainNames()
	for _, f := range c.families() {
		for d := range 2 {
			rules := c.endpointChain(ep, d, lists[d])
			c.setChain(ChainRef{Table: TableID{famVersion(f), "filter"}, Name: names[d]}, rules)
			for _, r := range rules {
				h.Write([]byte(r.Match + "\x00" + r.Action + "\x00" + r.Comment + "\n"))
			}
			for _, p := range pols[d] {
				h.Write([]byte(p.hash))
			}
		}
	}
	st := EndpointStatus{Kind: ep.kind, Namespace: ep.namespace, Name: ep.name, Interface: ep.iface,
		Revision: hex.EncodeToString(h.Sum(nil)[:12])}
	if c.out.eps[ep.key] != st {
		c.out.eps[ep.key] = st
		c.out.changedEPs[ep.key] = true
	}
}

// endpointChain renders one direction of an endpoint's chain: conntrack first, then (when
// policies select the endpoint in that direction) a goto to the shared chain of its policy list.
func (c *Calculator) endpointChain(ep *localEP, d int, list string) []iptables.Rule {
	rules := []iptables.Rule{
		{Match: "-m conntrack --ctstate INVALID", Action: "-j DROP"},
		{Match: "-m conntrack --ctstate RELATED,ESTABLISHED", Action: "-j ACCEPT"},
	}
	if ep.host {
		fs := ChainFailsafeIn
		if d == dirEgress {
			fs = ChainFailsafeOut
		}
		rules = append(rules, iptables.Rule{Action: "-j " + fs})
	}
	rules = append(rules, clearMarks)
	if list == "" {
		// Not isolated in this direction: fall off the end, which allows.
		return rules
	}
	// A goto: the list's RETURN and its end come back to where the endpoint chain was entered,
	// exactly as if its rules stood here.
	return append(rules, iptables.Rule{Action: "-g " + list})
}

// policyListRules runs policies in order: the first verdict decides, accept returns, and a packet
// no policy allowed or passed is dropped. A Pass skips the drop and falls off the end: Terrace's
// implicit profile allows.
func policyListRules(d int, pols []*policy) []iptables.Rule {
	var rules []iptables.Rule
	for _, p := range pols {
		rules = append(rules, iptables.Rule{Match: notPassed, Action: "-j " + p.chain[d]}, returnAccept)
	}
	return append(rules, iptables.Rule{Match: notPassed, Action: "-j " + ChainDeny, Comment: "no policy allowed the packet"})
}

// policyListName names the shared chain of one ordered list of policy chains (which encode the
// direction), so endpoints selected by the same policies share it.
func policyListName(d int, pols []*policy) string {
	var id strings.Builder
	for _, p := range pols {
		id.WriteString(p.chain[d] + "\n")
	}
	return iptables.ChainName("pl", id.String())
}

// useLists makes endpoint key use the policy-list chains lists ("" for none) per direction,
// creating a list chain with its first user and removing it with its last, so a thousand
// endpoints selected by the same policies cost one list, not a thousand copies of it.
func (c *Calculator) useLists(key string, lists [2]string, rules [2][]iptables.Rule) {
	old := c.epLists[key]
	for d := range 2 {
		if old[d] == lists[d] {
			continue
		}
		if lists[d] != "" {
			users := c.listUsers[lists[d]]
			if users == nil {
				users = map[string]bool{}
				c.listUsers[lists[d]] = users
				for _, f := range c.families() {
					c.setChain(ChainRef{Table: TableID{famVersion(f), "filter"}, Name: lists[d]}, rules[d])
				}
			}
			users[key] = true
		}
		if old[d] != "" {
			c.releaseList(key, old[d])
		}
	}
	if lists == [2]string{} {
		delete(c.epLists, key)
	} else {
		c.epLists[key] = lists
	}
}

func (c *Calculator) releaseList(key, list string) {
	users := c.listUsers[list]
	delete(users, key)
	if len(users) > 0 {
		return
	}
	delete(c.listUsers, list)
	for _, f := range c.families() {
		c.removeChain(ChainRef{Table: TableID{famVersion(f), "filter"}, Name: list})
	}
}

func (c *Calculator) renderDispatch() {
	c.stats.DispatchRenders++
	var wls, heps []ifaceEntry
	for k, ep := range c.locals {
		if !c.ownsChains(ep) {
			continue
		}
		if ep.host {
			heps = append(heps, ifaceEntry{ep.iface, k})
		} else {
			wls = append(wls, ifaceEntry{ep.iface, k})
		}
	}
	byIface := func(a, b ifaceEntry) int {
		if c := strings.Compare(a.iface, b.iface); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	}
	slices.SortFunc(wls, byIface)
	slices.SortFunc(heps, byIface)
	var fromHost, toHost []iptables.Rule
	fromEntries := make([]dispatchEntry, len(wls))
	toEntries := make([]dispatchEntry, len(wls))
	for i, e := range wls {
		n := c.locals[e.key].chainNames()
		fromEntries[i] = dispatchEntry{e.iface, n[dirEgress]}
		toEntries[i] = dispatchEntry{e.iface, n[dirIngress]}
	}
	from := map[string][]iptables.Rule{}
	to := map[string][]iptables.Rule{}
	dispatchTree(from, ChainFromWlDispatch, "-i", "", fromEntries)
	dispatchTree(to, ChainToWlDispatch, "-o", "", toEntries)
	var all *ifaceEntry
	named := map[string]bool{}
	for i, e := range heps {
		if e.iface == "*" {
			if all == nil {
				all = &heps[i]
			}
			continue
		}
		if e.iface == "" {
			continue
		}
		named[e.iface] = true
		n := c.locals[e.key].chainNames()
		fromHost = append(fromHost, iptables.Rule{Match: "-i " + e.iface, Action: "-g " + n[dirIngress]})
		toHost = append(toHost, iptables.Rule{Match: "-o " + e.iface, Action: "-g " + n[dirEgress]})
	}
	for _, e := range c.placeByAddress(heps, named) {
		n := c.locals[e.key].chainNames()
		fromHost = append(fromHost, iptables.Rule{Match: "-i " + e.iface, Action: "-g " + n[dirIngress]})
		toHost = append(toHost, iptables.Rule{Match: "-o " + e.iface, Action: "-g " + n[dirEgress]})
	}
	if all != nil {
		// "*" covers every other interface except loopback, so local control traffic keeps working.
		n := c.locals[all.key].chainNames()
		fromHost = append(fromHost, iptables.Rule{Match: "! -i lo", Action: "-g " + n[dirIngress]})
		toHost = append(toHost, iptables.Rule{Match: "! -o lo", Action: "-g " + n[dirEgress]})
	}
	for _, f := range c.families() {
		t := TableID{famVersion(f), "filter"}
		for ref := range c.out.chains {
			_, inFrom := from[ref.Name]
			_, inTo := to[ref.Name]
			if ref.Table == t && !inFrom && !inTo && isDispatchSubChain(ref.Name) {
				c.removeChain(ref)
			}
		}
		for _, chains := range []map[string][]iptables.Rule{from, to} {
			for name, rules := range chains {
				c.setChain(ChainRef{t, name}, rules)
			}
		}
		c.setChain(ChainRef{t, ChainFromHostEp}, fromHost)
		c.setChain(ChainRef{t, ChainToHostEp}, toHost)
	}
}

// ifaceEntry is a local endpoint by interface name and key.
type ifaceEntry struct{ iface, key string }

// placeByAddress places the host endpoints given by expectedIPs alone (heps, sorted by key within
// an interface name, "" for these) on the host's interfaces, as Calico does: an interface that
// holds one of an endpoint's addresses gets it, unless an endpoint names the interface (named);
// when several match, the lowest key wins. The result is sorted by interface.
func (c *Calculator) placeByAddress(heps []ifaceEntry, named map[string]bool) []ifaceEntry {
	var byAddr []string
	for _, e := range heps {
		if e.iface == "" {
			byAddr = append(byAddr, e.key)
		}
	}
	if len(byAddr) == 0 {
		return nil
	}
	slices.Sort(byAddr)
	var out []ifaceEntry
	for _, ifname := range sortedKeys(c.hostIfs) {
		if named[ifname] {
			continue
		}
		for _, k := range byAddr {
			if slices.ContainsFunc(c.locals[k].expected, func(a netip.Addr) bool {
				_, found := slices.BinarySearchFunc(c.hostIfs[ifname], a, netip.Addr.Compare)
				return found
			}) {
				out = append(out, ifaceEntry{ifname, k})
				break
			}
		}
	}
	return out
}

// dispatchLeaf is the most interfaces a dispatch chain matches one by one. Beyond it the chain
// branches on the next hex digit of the trc+11-hex interface names, so a packet passes a few dozen
// rules to reach its endpoint's chain instead of up to one per endpoint: with 1,000 endpoints a
// flat list costs every forwarded packet up to 1,000 interface matches, which showed as throughput.
const dispatchLeaf = 16

// dispatchDepth bounds the branching so sub-chain names stay within iptables.MaxChainNameLen:
// "trc-from-wl-dispatch" plus "-" and up to 7 hex digits is 28 characters.
const dispatchDepth = 7

type dispatchEntry struct{ iface, target string }

// dispatchTree renders the dispatch chain name for entries (sorted by interface), all of whose
// Terrace-style names start with "trc"+prefix, into out, with the sub-chains it branches to. flag
// is "-i" or "-o". Interfaces not named in Terrace's pattern are matched first, one by one, at the
// root; every chain ends by dropping what it does not know, as the flat list did.
func dispatchTree(out map[string][]iptables.Rule, name, flag, prefix string, entries []dispatchEntry) {
	var rules []iptables.Rule
	var hex []dispatchEntry
	for _, e := range entries {
		if terraceIface.MatchString(e.iface) {
			hex = append(hex, e)
		} else {
			rules = append(rules, iptables.Rule{Match: flag + " " + e.iface, Action: "-g " + e.target})
		}
	}
	if len(hex) <= dispatchLeaf || len(prefix) >= dispatchDepth {
		for _, e := range hex {
			rules = append(rules, iptables.Rule{Match: flag + " " + e.iface, Action: "-g " + e.target})
		}
	} else {
		for len(hex) > 0 {
			digit := hex[0].iface[3+len(prefix)]
			n := 1
			for n < len(hex) && hex[n].iface[3+len(prefix)] == digit {
				n++
			}
			sub := prefix + string(digit)
			subName := dispatchRoot(name) + "-" + sub
			rules = append(rules, iptables.Rule{Match: flag + " trc" + sub + "+", Action: "-g " + subName})
			dispatchTree(out, subName, flag, sub, hex[:n])
			hex = hex[n:]
		}
	}
	out[name] = append(rules, iptables.Rule{Action: "-j DROP", Comment: "unknown workload interface"})
}

// dispatchRoot is the root dispatch chain a (sub-)chain belongs to.
func dispatchRoot(name string) string {
	for _, root := range []string{ChainFromWlDispatch, ChainToWlDispatch} {
		if strings.HasPrefix(name, root) {
			return root
		}
	}
	return name
}

func isDispatchSubChain(name string) bool {
	return strings.HasPrefix(name, ChainFromWlDispatch+"-") || strings.HasPrefix(name, ChainToWlDispatch+"-")
}

// felixString returns the per-node value of a setting, else the cluster-wide one, else def.
func (c *Calculator) felixString(get func(*api.FelixConfigurationSpec) string, def string) string {
	for _, slot := range []string{"node", "default"} {
		if s := c.felix[slot]; s != nil && get(s) != "" {
			return get(s)
		}
	}
	return def
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
		hostAllowed := iptables.Rule{Match: "-m mark --mark " + hexMark(MarkAccept) + "/" + hexMark(MarkAccept),
			Action: "-j " + allow, Comment: "allowed by host endpoint policy"}
		c.setChain(ChainRef{t, ChainInput}, []iptables.Rule{
			{Match: "-i " + workloadIfaceMatch, Action: "-g " + ChainWlToHost},
			clearMarks,
			{Action: "-j " + ChainFromHostEp},
			hostAllowed,
		})
		c.setChain(ChainRef{t, ChainOutput}, []iptables.Rule{
			{Match: "-o " + workloadIfaceMatch, Action: "-j RETURN", Comment: "host to local workload is not filtered"},
			clearMarks,
			{Action: "-j " + ChainToHostEp},
			hostAllowed,
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
		c.setChain(ChainRef{t, ChainAllow}, []iptables.Rule{setAccept})
		c.setChain(ChainRef{t, ChainPass}, []iptables.Rule{setPass})
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

// renderRoutes routes each local workload address to its interface and blackholes own blocks.
// When two local workloads claim one prefix, the lower key wins, so the result is order-free.
func (c *Calculator) renderRoutes() {
	next := map[netip.Prefix]routes.Target{}
	for p := range c.blocks {
		if c.cfg.IPv6 || p.Addr().Is4() {
			next[p] = routes.Target{Blackhole: true}
		}
	}
	for _, k := range sortedKeys(c.locals) {
		ep := c.locals[k]
		if ep.host || !strings.HasPrefix(ep.iface, WorkloadIfacePrefix) {
			// Not Terrace's interface (a WorkloadEndpoint naming eth0, say): routing its
			// networks there could take the host's own traffic.
			continue
		}
		for _, f := range c.families() {
			for _, m := range ep.obj.members[f] {
				p, err := netip.ParsePrefix(m)
				if err != nil {
					a, aerr := netip.ParseAddr(m)
					if aerr != nil {
						continue
					}
					p = netip.PrefixFrom(a, a.BitLen())
				}
				if t, ok := next[p]; ok && !t.Blackhole {
					continue
				}
				next[p] = routes.Target{Dev: ep.iface}
			}
		}
	}
	for p, t := range next {
		if old, ok := c.out.routes[p]; !ok || old.Dev != t.Dev || old.Blackhole != t.Blackhole {
			c.out.routes[p] = t
			c.out.changedRoutes[p] = true
		}
	}
	for p := range c.out.routes {
		if _, ok := next[p]; !ok {
			delete(c.out.routes, p)
			c.out.changedRoutes[p] = true
		}
	}
}

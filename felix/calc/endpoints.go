package calc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

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
		// The routes too: a workload's routes point at its interface (a pod's new sandbox
		// keeps its addresses on a new veth).
		c.dispatchDirty, c.routesDirty = true, true
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
			lists[d] = policyListName(d, pols[d], c.marks)
			listRules[d] = policyListRules(d, pols[d], c.marks)
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
	rules = append(rules, c.marks.clear())
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
func policyListRules(d int, pols []*policy, m marks) []iptables.Rule {
	var rules []iptables.Rule
	for _, p := range pols {
		rules = append(rules, iptables.Rule{Match: m.notPassed(), Action: "-j " + p.chain[d]}, m.returnAccept())
	}
	return append(rules, iptables.Rule{Match: m.notPassed(), Action: "-j " + ChainDeny, Comment: "no policy allowed the packet"})
}

// policyListName names the shared chain of one ordered list of policy chains (which encode the
// direction), so endpoints selected by the same policies share it.
// policyListName names a list by its policies and, when they are not the defaults, the marks
// its rules test, so a change of marks makes new lists instead of rewriting shared ones.
func policyListName(d int, pols []*policy, m marks) string {
	var id strings.Builder
	for _, p := range pols {
		id.WriteString(p.chain[d] + "\n")
	}
	if m != defaultMarks {
		fmt.Fprintf(&id, "marks %x %x\n", m.accept, m.pass)
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

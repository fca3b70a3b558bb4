package calc

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

// renderDispatch renders the chains that send each packet to its endpoint's chain: workloads by
// interface name (a tree beyond dispatchLeaf), host endpoints by name, by address
// (placeByAddress), then "*".
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
	excluded := c.interfaceExcluded()
	for i, e := range heps {
		if e.iface == "*" {
			if all == nil {
				all = &heps[i]
			}
			continue
		}
		if e.iface == "" || excluded(e.iface) {
			continue
		}
		named[e.iface] = true
		n := c.locals[e.key].chainNames()
		fromHost = append(fromHost, iptables.Rule{Match: "-i " + e.iface, Action: "-g " + n[dirIngress]})
		toHost = append(toHost, iptables.Rule{Match: "-o " + e.iface, Action: "-g " + n[dirEgress]})
	}
	for _, e := range c.placeByAddress(heps, named, excluded) {
		n := c.locals[e.key].chainNames()
		fromHost = append(fromHost, iptables.Rule{Match: "-i " + e.iface, Action: "-g " + n[dirIngress]})
		toHost = append(toHost, iptables.Rule{Match: "-o " + e.iface, Action: "-g " + n[dirEgress]})
	}
	if all != nil {
		// Excluded interfaces (FelixConfiguration interfaceExclude) are not host endpoints, "*"
		// included: they leave the dispatch before it.
		for _, name := range c.excludedNames(excluded) {
			fromHost = append(fromHost, iptables.Rule{Match: "-i " + name, Action: "-j RETURN", Comment: "interfaceExclude"})
			toHost = append(toHost, iptables.Rule{Match: "-o " + name, Action: "-j RETURN", Comment: "interfaceExclude"})
		}
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

// defaultInterfaceExclude is Calico's default: kube-proxy's IPVS dummy holds every service
// address, so placing host endpoints on it (by "*" or by address) would police service traffic.
const defaultInterfaceExclude = "kube-ipvs0"

// interfaceExcluded reads FelixConfiguration interfaceExclude: comma-separated names, or regular
// expressions between slashes. Validation refused bad expressions; one that still does not
// compile is skipped rather than excluding everything.
func (c *Calculator) interfaceExcluded() func(string) bool {
	spec := c.felixString(func(s *api.FelixConfigurationSpec) string { return s.InterfaceExclude }, defaultInterfaceExclude)
	names := map[string]bool{}
	var res []*regexp.Regexp
	for _, ex := range strings.Split(spec, ",") {
		ex = strings.TrimSpace(ex)
		switch {
		case ex == "":
		case len(ex) > 1 && strings.HasPrefix(ex, "/") && strings.HasSuffix(ex, "/"):
			if re, err := regexp.Compile(ex[1 : len(ex)-1]); err == nil {
				res = append(res, re)
			}
		default:
			names[ex] = true
		}
	}
	return func(name string) bool {
		return names[name] || slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(name) })
	}
}

// excludedNames lists the interfaces "*" must skip: the host's interfaces that are excluded,
// plus every name given literally (present or not, so one that appears later is already
// skipped without waiting for the interface watch). A regular expression can only reach the
// interfaces the host has.
func (c *Calculator) excludedNames(excluded func(string) bool) []string {
	spec := c.felixString(func(s *api.FelixConfigurationSpec) string { return s.InterfaceExclude }, defaultInterfaceExclude)
	set := map[string]bool{}
	for _, ex := range strings.Split(spec, ",") {
		if ex = strings.TrimSpace(ex); ex != "" && !strings.HasPrefix(ex, "/") && api.ValidInterfaceName(ex) {
			set[ex] = true
		}
	}
	for name := range c.hostIfs {
		if excluded(name) {
			set[name] = true
		}
	}
	return sortedKeys(set)
}

// ifaceEntry is a local endpoint by interface name and key.
type ifaceEntry struct{ iface, key string }

// placeByAddress places the host endpoints given by expectedIPs alone (heps, sorted by key within
// an interface name, "" for these) on the host's interfaces, as Calico does: an interface that
// holds one of an endpoint's addresses gets it, unless an endpoint names the interface (named);
// when several match, the lowest key wins. The result is sorted by interface.
func (c *Calculator) placeByAddress(heps []ifaceEntry, named map[string]bool, excluded func(string) bool) []ifaceEntry {
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
		if named[ifname] || excluded(ifname) {
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

package calc

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/selector"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"net/netip"
)

const testNode = "host-1"

var (
	v4f = TableID{4, "filter"}
	v6f = TableID{6, "filter"}
	v4n = TableID{4, "nat"}
)

func ptrTo[T any](v T) *T { return &v }

type update struct {
	kind, ns, name string
	r              api.Resource // nil = delete
}

func wep(ns, name, node, iface string, labels map[string]string, ips ...string) update {
	w := &api.WorkloadEndpoint{
		TypeMeta: api.TypeMeta{Kind: api.KindWorkloadEndpoint, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:     api.WorkloadEndpointSpec{Node: node, InterfaceName: iface, IPNetworks: ips, Orchestrator: "k8s"},
	}
	return update{api.KindWorkloadEndpoint, ns, name, w}
}

func hep(name, node, iface string, labels map[string]string, ips ...string) update {
	h := &api.HostEndpoint{
		TypeMeta: api.TypeMeta{Kind: api.KindHostEndpoint, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name, Labels: labels},
		Spec:     api.HostEndpointSpec{Node: node, InterfaceName: iface, ExpectedIPs: ips},
	}
	return update{api.KindHostEndpoint, "", name, h}
}

func gnp(name string, order *float64, sel string, ingress, egress []api.Rule, types ...api.PolicyType) update {
	p := &api.GlobalNetworkPolicy{
		TypeMeta: api.TypeMeta{Kind: api.KindGlobalNetworkPolicy, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.GlobalNetworkPolicySpec{Order: order, Selector: sel, Ingress: ingress, Egress: egress, Types: types},
	}
	api.SetDefaults(p)
	return update{api.KindGlobalNetworkPolicy, "", name, p}
}

func np(ns, name string, order *float64, sel string, ingress, egress []api.Rule, types ...api.PolicyType) update {
	p := &api.NetworkPolicy{
		TypeMeta: api.TypeMeta{Kind: api.KindNetworkPolicy, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Namespace: ns, Name: name},
		Spec:     api.NetworkPolicySpec{Order: order, Selector: sel, Ingress: ingress, Egress: egress, Types: types},
	}
	api.SetDefaults(p)
	return update{api.KindNetworkPolicy, ns, name, p}
}

func netset(ns, name string, labels map[string]string, nets ...string) update {
	if ns == "" {
		return update{api.KindGlobalNetworkSet, "", name, &api.GlobalNetworkSet{
			TypeMeta: api.TypeMeta{Kind: api.KindGlobalNetworkSet, APIVersion: api.GroupVersion},
			Metadata: api.ObjectMeta{Name: name, Labels: labels},
			Spec:     api.GlobalNetworkSetSpec{Nets: nets},
		}}
	}
	return update{api.KindNetworkSet, ns, name, &api.NetworkSet{
		TypeMeta: api.TypeMeta{Kind: api.KindNetworkSet, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:     api.NetworkSetSpec{Nets: nets},
	}}
}

func pool(name, cidr string, nat, disabled bool) update {
	p := &api.IPPool{
		TypeMeta: api.TypeMeta{Kind: api.KindIPPool, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.IPPoolSpec{CIDR: cidr, NATOutgoing: nat, Disabled: disabled},
	}
	api.SetDefaults(p)
	return update{api.KindIPPool, "", name, p}
}

func felixCfg(name string, spec api.FelixConfigurationSpec) update {
	f := &api.FelixConfiguration{
		TypeMeta: api.TypeMeta{Kind: api.KindFelixConfiguration, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     spec,
	}
	api.SetDefaults(f)
	return update{api.KindFelixConfiguration, "", name, f}
}

func del(u update) update { return update{u.kind, u.ns, u.name, nil} }

func feed(c *Calculator, us ...update) {
	for _, u := range us {
		c.OnUpdate(u.kind, u.ns, u.name, u.r)
	}
}

func newCalc(us ...update) *Calculator {
	c := New(Config{NodeName: testNode, IPv6: true})
	feed(c, us...)
	c.Flush()
	return c
}

// selSet is the name of the set a selector (with optional namespace narrowing) renders to.
func selSet(f ipsets.Family, sel, nsSel, ns string) string {
	m := selMatcher{sel: selector.MustParse(sel), ns: ns}
	if nsSel != "" {
		m.nsSel = selector.MustParse(nsSel)
	}
	return ipsets.NameFor(f, m.identity())
}

func chainOf(t *testing.T, d *Desired, tb TableID, name string) []iptables.Rule {
	t.Helper()
	ts := d.Tables[tb]
	if ts == nil {
		t.Fatalf("table %v missing", tb)
	}
	rules, ok := ts.Chains[name]
	if !ok {
		t.Fatalf("chain %s missing from %v", name, tb)
	}
	return rules
}

// listChain is the name of the shared chain of a list of policy chains.
func listChain(policyChains ...string) string {
	return iptables.ChainName("pl", strings.Join(policyChains, "\n")+"\n")
}

// endpointRules is an endpoint chain with its goto to a policy-list chain replaced by the list's
// rules: what a packet meets, whichever way the rules are shared.
func endpointRules(t *testing.T, d *Desired, tb TableID, name string) []iptables.Rule {
	t.Helper()
	rules := chainOf(t, d, tb, name)
	if n := len(rules); n > 0 {
		if list, ok := strings.CutPrefix(rules[n-1].Action, "-g "+iptables.ChainPrefix+"pl-"); ok && rules[n-1].Match == "" {
			return append(slices.Clone(rules[:n-1]), chainOf(t, d, tb, iptables.ChainPrefix+"pl-"+list)...)
		}
	}
	return rules
}

func policyChain(kind, ns, name string, dir int) string {
	k := "pi"
	if dir == dirEgress {
		k = "po"
	}
	return iptables.ChainName(k, EndpointKey(kind, ns, name))
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

func rule(match, action string) iptables.Rule { return iptables.Rule{Match: match, Action: action} }

func tcp() *api.Protocol  { return ptrTo(api.ProtocolFromString("TCP")) }
func udp() *api.Protocol  { return ptrTo(api.ProtocolFromString("UDP")) }
func icmp() *api.Protocol { return ptrTo(api.ProtocolFromString("ICMP")) }
func icmp6() *api.Protocol {
	return ptrTo(api.ProtocolFromString("ICMPv6"))
}
func ports(ps ...string) []api.Port {
	out := make([]api.Port, len(ps))
	for i, p := range ps {
		pp, err := api.ParsePortRange(p)
		if err != nil {
			panic(err)
		}
		out[i] = pp
	}
	return out
}

package calc

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/selector"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

const allowMark = "-g trc-allow"

var retAccept = rule("-m mark --mark 0x10000/0x10000", "-j RETURN")

// TestRuleRendering renders one ingress rule of a GlobalNetworkPolicy selecting a local workload and
// checks the exact policy chain in both IP versions.
func TestRuleRendering(t *testing.T) {
	nets4 := ipsets.NameFor(ipsets.FamilyInet, "nets:10.0.0.0/8,192.0.2.0/24")
	cases := []struct {
		name   string
		rule   api.Rule
		v4, v6 []iptables.Rule
	}{
		{"allow all", api.Rule{Action: "Allow"},
			[]iptables.Rule{rule("", allowMark)}, []iptables.Rule{rule("", allowMark)}},
		{"deny tcp dport", api.Rule{Action: "Deny", Protocol: tcp(), Destination: api.EntityRule{Ports: ports("80")}},
			[]iptables.Rule{rule("-p tcp --dport 80", "-j "+ChainDeny)}, []iptables.Rule{rule("-p tcp --dport 80", "-j "+ChainDeny)}},
		{"port range alone", api.Rule{Action: "Deny", Protocol: udp(), Destination: api.EntityRule{Ports: ports("1000:2000")}},
			[]iptables.Rule{rule("-p udp -m multiport --dports 1000:2000", "-j "+ChainDeny)}, []iptables.Rule{rule("-p udp -m multiport --dports 1000:2000", "-j "+ChainDeny)}},
		{"udp single port as multiport", api.Rule{Action: "Deny", Protocol: udp(), Source: api.EntityRule{Ports: ports("53")}},
			[]iptables.Rule{rule("-p udp -m multiport --sports 53", "-j "+ChainDeny)}, []iptables.Rule{rule("-p udp -m multiport --sports 53", "-j "+ChainDeny)}},
		{"multiport and source ports", api.Rule{Action: "Deny", Protocol: tcp(),
			Source: api.EntityRule{Ports: ports("1024:65535")}, Destination: api.EntityRule{Ports: ports("80", "443", "8000:8080")}},
			[]iptables.Rule{rule("-p tcp --sport 1024:65535 -m multiport --dports 80,443,8000:8080", "-j "+ChainDeny)},
			[]iptables.Rule{rule("-p tcp --sport 1024:65535 -m multiport --dports 80,443,8000:8080", "-j "+ChainDeny)}},
		{"notPorts, notProtocol redundant next to protocol", api.Rule{Action: "Deny", Protocol: tcp(), NotProtocol: udp(),
			Destination: api.EntityRule{NotPorts: ports("22", "23")}},
			[]iptables.Rule{rule("-p tcp -m multiport ! --dports 22,23", "-j "+ChainDeny)},
			[]iptables.Rule{rule("-p tcp -m multiport ! --dports 22,23", "-j "+ChainDeny)}},
		{"notProtocol equal to protocol never matches", api.Rule{Action: "Deny", Protocol: tcp(), NotProtocol: tcp()}, nil, nil},
		{"notProtocol alone", api.Rule{Action: "Deny", NotProtocol: udp()},
			[]iptables.Rule{rule("! -p udp", "-j "+ChainDeny)}, []iptables.Rule{rule("! -p udp", "-j "+ChainDeny)}},
		{"notProtocol ICMP holds everywhere in IPv6", api.Rule{Action: "Deny", NotProtocol: icmp()},
			[]iptables.Rule{rule("! -p icmp", "-j "+ChainDeny)}, []iptables.Rule{rule("", "-j "+ChainDeny)}},
		{"icmp type and code is IPv4 only", api.Rule{Action: "Allow", Protocol: icmp(), ICMP: &api.ICMPFields{Type: ptrTo(8), Code: ptrTo(0)}},
			[]iptables.Rule{rule("-p icmp -m icmp --icmp-type 8/0", allowMark)}, nil},
		{"icmpv6 type is IPv6 only", api.Rule{Action: "Allow", Protocol: icmp6(), ICMP: &api.ICMPFields{Type: ptrTo(128)}},
			nil, []iptables.Rule{rule("-p ipv6-icmp -m icmp6 --icmpv6-type 128", allowMark)}},
		{"notICMP", api.Rule{Action: "Deny", Protocol: icmp(), NotICMP: &api.ICMPFields{Type: ptrTo(3)}},
			[]iptables.Rule{rule("-p icmp -m icmp ! --icmp-type 3", "-j "+ChainDeny)}, nil},
		{"ipVersion 6", api.Rule{Action: "Deny", IPVersion: ptrTo(6)},
			nil, []iptables.Rule{rule("", "-j "+ChainDeny)}},
		{"one net per family", api.Rule{Action: "Deny", Source: api.EntityRule{Nets: []string{"10.0.0.0/8", "2001:db8::/32"}}},
			[]iptables.Rule{rule("-s 10.0.0.0/8", "-j "+ChainDeny)}, []iptables.Rule{rule("-s 2001:db8::/32", "-j "+ChainDeny)}},
		{"several nets become a set, IPv6 has none", api.Rule{Action: "Deny", Source: api.EntityRule{Nets: []string{"192.0.2.0/24", "10.0.0.0/8"}}},
			[]iptables.Rule{rule("-m set --match-set "+nets4+" src", "-j "+ChainDeny)}, nil},
		// notNets only of the other family: the rule is left out there, as Calico does.
		{"notNets", api.Rule{Action: "Deny", Destination: api.EntityRule{NotNets: []string{"10.0.0.0/8"}}},
			[]iptables.Rule{rule("! -d 10.0.0.0/8", "-j "+ChainDeny)}, nil},
		{"one net and one notNet on a side: the negation through a set (one -d per rule)", api.Rule{Action: "Allow", Destination: api.EntityRule{
			Nets: []string{"10.0.0.0/8"}, NotNets: []string{"10.96.0.0/12"}}},
			[]iptables.Rule{rule("-d 10.0.0.0/8 -m set ! --match-set "+ipsets.NameFor(ipsets.FamilyInet, "nets:10.96.0.0/12")+" dst", allowMark)}, nil},
		{"nets /0 is no condition", api.Rule{Action: "Deny", Source: api.EntityRule{Nets: []string{"0.0.0.0/0"}}},
			[]iptables.Rule{rule("", "-j "+ChainDeny)}, nil},
		{"notNets /0 never matches", api.Rule{Action: "Deny", Source: api.EntityRule{NotNets: []string{"0.0.0.0/0"}}},
			nil, nil},
		{"selector", api.Rule{Action: "Allow", Source: api.EntityRule{Selector: "role == 'db'"}},
			[]iptables.Rule{rule("-m set --match-set "+selSet(ipsets.FamilyInet, "role == 'db'", "", "")+" src", allowMark)},
			[]iptables.Rule{rule("-m set --match-set "+selSet(ipsets.FamilyInet6, "role == 'db'", "", "")+" src", allowMark)}},
		{"notSelector on destination", api.Rule{Action: "Deny", Destination: api.EntityRule{NotSelector: "role == 'db'"}},
			[]iptables.Rule{rule("-m set ! --match-set "+selSet(ipsets.FamilyInet, "role == 'db'", "", "")+" dst", "-j "+ChainDeny)},
			[]iptables.Rule{rule("-m set ! --match-set "+selSet(ipsets.FamilyInet6, "role == 'db'", "", "")+" dst", "-j "+ChainDeny)}},
		{"namespaceSelector alone", api.Rule{Action: "Deny", Source: api.EntityRule{NamespaceSelector: "team == 'a'"}},
			[]iptables.Rule{rule("-m set --match-set "+selSet(ipsets.FamilyInet, "", "team == 'a'", "")+" src", "-j "+ChainDeny)},
			[]iptables.Rule{rule("-m set --match-set "+selSet(ipsets.FamilyInet6, "", "team == 'a'", "")+" src", "-j "+ChainDeny)}},
		{"log", api.Rule{Action: "Log", Protocol: tcp()},
			[]iptables.Rule{rule("-p tcp", "-j LOG --log-prefix trc-ingress:")}, []iptables.Rule{rule("-p tcp", "-j LOG --log-prefix trc-ingress:")}},
		{"pass", api.Rule{Action: "Pass", Protocol: tcp()},
			[]iptables.Rule{rule("-p tcp", "-g trc-pass")},
			[]iptables.Rule{rule("-p tcp", "-g trc-pass")}},
		{"named port becomes a hash:ip,port set", api.Rule{Action: "Allow", Protocol: tcp(), Destination: api.EntityRule{Ports: ports("http")}},
			[]iptables.Rule{rule("-p tcp -m set --match-set "+npSet(ipsets.FamilyInet, "tcp", "http", "")+" dst,dst", allowMark)},
			[]iptables.Rule{rule("-p tcp -m set --match-set "+npSet(ipsets.FamilyInet6, "tcp", "http", "")+" dst,dst", allowMark)}},
		{"named and numeric ports are alternatives", api.Rule{Action: "Allow", Protocol: tcp(), Destination: api.EntityRule{Ports: ports("http", "8080")}},
			[]iptables.Rule{rule("-p tcp --dport 8080", allowMark), rule("-p tcp -m set --match-set "+npSet(ipsets.FamilyInet, "tcp", "http", "")+" dst,dst", allowMark)},
			[]iptables.Rule{rule("-p tcp --dport 8080", allowMark), rule("-p tcp -m set --match-set "+npSet(ipsets.FamilyInet6, "tcp", "http", "")+" dst,dst", allowMark)}},
		{"named notPort", api.Rule{Action: "Deny", Protocol: udp(), Source: api.EntityRule{NotPorts: ports("dns")}},
			[]iptables.Rule{rule("-p udp -m set ! --match-set "+npSet(ipsets.FamilyInet, "udp", "dns", "")+" src,src", "-j "+ChainDeny)},
			[]iptables.Rule{rule("-p udp -m set ! --match-set "+npSet(ipsets.FamilyInet6, "udp", "dns", "")+" src,src", "-j "+ChainDeny)}},
		{"UDPLite ports always through multiport (iptables has no udplite match)", api.Rule{Action: "Allow", Protocol: ptrTo(api.ProtocolFromString("UDPLite")), Destination: api.EntityRule{Ports: ports("5000")}},
			[]iptables.Rule{rule("-p udplite -m multiport --dports 5000", allowMark)}, []iptables.Rule{rule("-p udplite -m multiport --dports 5000", allowMark)}},
		{"named port with a protocol ipset cannot hold matches nothing", api.Rule{Action: "Allow", Protocol: ptrTo(api.ProtocolFromString("UDPLite")), Destination: api.EntityRule{Ports: ports("x")}}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCalc(
				wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32", "2001:db8:1000::1/128"),
				gnp("p", nil, "app == 'web'", []api.Rule{tc.rule}, nil),
			)
			d := c.Desired()
			name := policyChain(api.KindGlobalNetworkPolicy, "", "p", dirIngress)
			diff(t, "v4", tc.v4, chainOf(t, d, v4f, name))
			diff(t, "v6", tc.v6, chainOf(t, d, v6f, name))
		})
	}
}

// TestPortSplitting checks that more than 15 multiport slots split into several rules, all with the
// same action.
func TestPortSplitting(t *testing.T) {
	var ps []string
	for i := range 20 {
		ps = append(ps, fmt.Sprint(1000+i))
	}
	ps = append(ps, "2000:2100")
	c := newCalc(
		wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32"),
		gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Protocol: tcp(), Destination: api.EntityRule{Ports: ports(ps...)}}}, nil),
	)
	got := chainOf(t, c.Desired(), v4f, policyChain(api.KindGlobalNetworkPolicy, "", "p", dirIngress))
	want := []iptables.Rule{
		rule("-p tcp -m multiport --dports 1000,1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014", allowMark),
		rule("-p tcp -m multiport --dports 1015,1016,1017,1018,1019,2000:2100", allowMark),
	}
	diff(t, "split", want, got)
}

// TestSetMembersFromSelectors checks selector ipsets hold every matching endpoint and network set
// in the cluster, local or not, with Calico's namespace rules.
func TestSetMembersFromSelectors(t *testing.T) {
	base := []update{
		wep("ns1", "local", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32"),
		wep("ns1", "remote-db", "host-2", "trc0123456789b", map[string]string{"role": "db", "pcns.team": "a"}, "198.18.1.1/32", "2001:db8:1000::11/128"),
		wep("ns2", "other-db", "host-3", "trc0123456789c", map[string]string{"role": "db"}, "198.18.2.1/32"),
		netset("ns1", "ext", map[string]string{"role": "db"}, "192.0.2.0/28"),
		netset("", "gext", map[string]string{"role": "db"}, "198.51.100.0/24", "0.0.0.0/0"),
		hep("h2", "host-2", "eth0", map[string]string{"role": "db"}, "192.0.2.2"),
	}
	cases := []struct {
		name    string
		policy  update
		set     string
		members []string
	}{
		{"global policy: every namespace and global entities",
			gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'db'"}}}, nil),
			selSet(ipsets.FamilyInet, "role == 'db'", "", ""),
			[]string{"0.0.0.0/1", "128.0.0.0/1", "192.0.2.0/28", "192.0.2.2", "198.18.1.1", "198.18.2.1", "198.51.100.0/24"}},
		{"namespaced policy: own namespace only",
			np("ns1", "p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'db'"}}}, nil),
			selSet(ipsets.FamilyInet, "role == 'db'", "", "ns1"),
			[]string{"192.0.2.0/28", "198.18.1.1"}},
		{"namespaceSelector by namespace name",
			np("ns1", "p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'db'", NamespaceSelector: "projectcalico.org/name == 'ns2'"}}}, nil),
			selSet(ipsets.FamilyInet, "role == 'db'", "projectcalico.org/name == 'ns2'", ""),
			[]string{"198.18.2.1"}},
		{"namespaceSelector by pcns. namespace label",
			gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{NamespaceSelector: "team == 'a'"}}}, nil),
			selSet(ipsets.FamilyInet, "", "team == 'a'", ""),
			[]string{"198.18.1.1"}},
		{"namespaceSelector global() selects non-namespaced entities",
			gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'db'", NamespaceSelector: "global()"}}}, nil),
			selSet(ipsets.FamilyInet, "role == 'db'", "global()", ""),
			[]string{"0.0.0.0/1", "128.0.0.0/1", "192.0.2.2", "198.51.100.0/24"}},
		{"selector matching nothing gives an empty set",
			gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'nothing'"}}}, nil),
			selSet(ipsets.FamilyInet, "role == 'nothing'", "", ""),
			[]string{}},
		{"IPv6 set",
			gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'db'"}}}, nil),
			selSet(ipsets.FamilyInet6, "role == 'db'", "", ""),
			[]string{"2001:db8:1000::11"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCalc(append(base, tc.policy)...)
			s, ok := c.Desired().IPSets[tc.set]
			if !ok {
				t.Fatalf("set %s missing; have %v", tc.set, sortedKeys(c.Desired().IPSets))
			}
			diff(t, "members", tc.members, s.Members)
			if s.Meta.Type != ipsets.TypeHashNet {
				t.Errorf("type %s, want hash:net", s.Meta.Type)
			}
		})
	}
}

// TestNamespacedPolicySelectsOwnNamespace checks a NetworkPolicy's own selector only applies in
// its namespace, and a GlobalNetworkPolicy namespaceSelector narrows the endpoints it applies to.
func TestPolicyEndpointSelection(t *testing.T) {
	eps := []update{
		wep("ns1", "a", testNode, "trc0000000000a", map[string]string{"app": "web"}, "198.18.0.1/32"),
		wep("ns2", "b", testNode, "trc0000000000b", map[string]string{"app": "web"}, "198.18.0.2/32"),
	}
	cases := []struct {
		name     string
		policy   update
		isolated []string // interfaces whose ingress chain has a policy
	}{
		{"network policy", np("ns1", "p", nil, "app == 'web'", nil, nil), []string{"0000000000a"}},
		{"global policy", gnp("p", nil, "app == 'web'", nil, nil), []string{"0000000000a", "0000000000b"}},
		{"global policy with namespaceSelector", func() update {
			u := gnp("p", nil, "app == 'web'", nil, nil)
			u.r.(*api.GlobalNetworkPolicy).Spec.NamespaceSelector = "projectcalico.org/name == 'ns2'"
			return u
		}(), []string{"0000000000b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newCalc(append(eps, tc.policy)...).Desired()
			var got []string
			for _, hex := range []string{"0000000000a", "0000000000b"} {
				if len(chainOf(t, d, v4f, "trc-tw-"+hex)) > 3 {
					got = append(got, hex)
				}
			}
			diff(t, "isolated", tc.isolated, got)
		})
	}
}

// npSet names the named-port set for a side without selector in a global policy.
func npSet(f ipsets.Family, proto, name, ns string) string {
	m := selMatcher{sel: selector.MustParse("all()"), ns: ns}
	return ipsets.NameFor(f, "namedport:"+proto+":"+name+"|"+m.identity())
}

func withSA(u update, sa string, labels map[string]string) update {
	w := u.r.(*api.WorkloadEndpoint)
	w.Spec.ServiceAccountName = sa
	for k, v := range labels {
		w.Metadata.Labels["pcsa."+k] = v
	}
	return u
}

// TestServiceAccounts checks rule serviceAccounts narrow the selector set and a policy's
// serviceAccountSelector narrows the endpoints it applies to.
func TestServiceAccounts(t *testing.T) {
	base := []update{
		withSA(wep("ns1", "local", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32"), "web-sa", map[string]string{"tier": "front"}),
		withSA(wep("ns1", "r1", "host-2", "trc0123456789b", map[string]string{"app": "db"}, "198.18.1.1/32"), "db-sa", map[string]string{"tier": "back"}),
		withSA(wep("ns1", "r2", "host-2", "trc0123456789c", map[string]string{"app": "db"}, "198.18.1.2/32"), "batch", nil),
		withSA(wep("ns2", "r3", "host-2", "trc0123456789d", map[string]string{"app": "db"}, "198.18.1.3/32"), "db-sa", map[string]string{"tier": "back"}),
	}
	cases := []struct {
		name    string
		sa      api.ServiceAccountMatch
		members []string
	}{
		{"by name, own namespace", api.ServiceAccountMatch{Names: []string{"db-sa", "batch"}}, []string{"198.18.1.1", "198.18.1.2"}},
		{"by account labels", api.ServiceAccountMatch{Selector: "tier == 'back'"}, []string{"198.18.1.1"}},
		{"by account name label", api.ServiceAccountMatch{Selector: "projectcalico.org/name == 'batch'"}, []string{"198.18.1.2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := api.Rule{Action: "Allow", Source: api.EntityRule{Selector: "app == 'db'", ServiceAccounts: &tc.sa}}
			c := newCalc(append(base, np("ns1", "p", nil, "app == 'web'", []api.Rule{r}, nil))...)
			got := chainOf(t, c.Desired(), v4f, policyChain(api.KindNetworkPolicy, "ns1", "p", dirIngress))
			if len(got) != 1 {
				t.Fatalf("rules: %+v", got)
			}
			name := strings.Fields(got[0].Match)[3]
			diff(t, "members", tc.members, c.Desired().IPSets[name].Members)
		})
	}
	t.Run("policy serviceAccountSelector", func(t *testing.T) {
		for _, sel := range []struct {
			s        string
			isolated bool
		}{{"tier == 'front'", true}, {"tier == 'back'", false}, {"projectcalico.org/name == 'web-sa'", true}} {
			p := gnp("p", nil, "app == 'web'", nil, nil)
			p.r.(*api.GlobalNetworkPolicy).Spec.ServiceAccountSelector = sel.s
			d := newCalc(append(base, p)...).Desired()
			if got := len(chainOf(t, d, v4f, "trc-tw-0123456789a")) > 3; got != sel.isolated {
				t.Errorf("%s: isolated=%v, want %v", sel.s, got, sel.isolated)
			}
		}
	})
}

// TestNamedPortMembers checks a named-port set holds address,proto:port of the endpoints in the
// selector's scope that declare the port with that protocol, and follows port changes.
func TestNamedPortMembers(t *testing.T) {
	withPorts := func(u update, ps ...api.WorkloadEndpointPort) update {
		u.r.(*api.WorkloadEndpoint).Spec.Ports = ps
		return u
	}
	http := api.WorkloadEndpointPort{Name: "http", Protocol: api.ProtocolFromString("TCP"), Port: 8080}
	base := []update{
		wep("ns1", "local", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32"),
		withPorts(wep("ns1", "db1", "host-2", "trc0123456789b", map[string]string{"app": "db"}, "198.18.1.1/32", "2001:db8:1000::1/128"), http),
		withPorts(wep("ns1", "db2", "host-2", "trc0123456789c", map[string]string{"app": "db"}, "198.18.1.2/32"),
			api.WorkloadEndpointPort{Name: "http", Protocol: api.ProtocolFromString("UDP"), Port: 9090}),
		withPorts(wep("ns2", "db3", "host-2", "trc0123456789d", map[string]string{"app": "db"}, "198.18.1.3/32"), http),
		withPorts(wep("ns1", "web2", "host-2", "trc0123456789e", map[string]string{"app": "web2"}, "198.18.1.4/32"), http),
	}
	r := api.Rule{Action: "Allow", Protocol: tcp(), Destination: api.EntityRule{Selector: "app == 'db'", Ports: ports("http")}}
	c := newCalc(append(base, np("ns1", "p", nil, "app == 'web'", nil, []api.Rule{r}))...)
	got := chainOf(t, c.Desired(), v4f, policyChain(api.KindNetworkPolicy, "ns1", "p", dirEgress))
	if len(got) != 1 {
		t.Fatalf("rules %+v", got)
	}
	fields := strings.Fields(got[0].Match)
	name := fields[slices.Index(fields, "dst,dst")-1]
	s := c.Desired().IPSets[name]
	diff(t, "type", ipsets.TypeHashIPPort, s.Meta.Type)
	diff(t, "members", []string{"198.18.1.1,tcp:8080"}, s.Members)
	feed(c, withPorts(wep("ns1", "db2", "host-2", "trc0123456789c", map[string]string{"app": "db"}, "198.18.1.2/32"),
		api.WorkloadEndpointPort{Name: "http", Protocol: api.ProtocolFromString("TCP"), Port: 80}))
	d := c.Flush()
	diff(t, "delta", []IPSetMembers{{Name: name, Added: []string{"198.18.1.2,tcp:80"}, Removed: []string{}}}, d.IPSetMembers)

	// No selector on the side: it matches any address, so the port is resolved on every
	// endpoint declaring it, in other namespaces too (as Calico), not only in ns1.
	open := api.Rule{Action: "Allow", Protocol: tcp(), Destination: api.EntityRule{Ports: ports("http")}}
	c = newCalc(append(base, np("ns1", "p", nil, "app == 'web'", nil, []api.Rule{open}))...)
	got = chainOf(t, c.Desired(), v4f, policyChain(api.KindNetworkPolicy, "ns1", "p", dirEgress))
	if len(got) != 1 {
		t.Fatalf("rules %+v", got)
	}
	fields = strings.Fields(got[0].Match)
	diff(t, "members without a selector", []string{"198.18.1.1,tcp:8080", "198.18.1.3,tcp:8080", "198.18.1.4,tcp:8080"},
		c.Desired().IPSets[fields[slices.Index(fields, "dst,dst")-1]].Members)
}

// TestRenderedFamiliesFollowRuleFamilies: a rule lands in exactly the families api.RuleFamilies
// allows (the decision validation refuses no-family rules by), for rules that can otherwise match.
func TestRenderedFamiliesFollowRuleFamilies(t *testing.T) {
	v := func(n int) *int { return &n }
	icmp := &api.Protocol{Name: "ICMP"}
	icmp6 := &api.Protocol{Name: "ICMPv6"}
	rules := []api.Rule{
		{Action: "Allow"},
		{Action: "Allow", IPVersion: v(4)},
		{Action: "Allow", IPVersion: v(6)},
		{Action: "Allow", Protocol: icmp},
		{Action: "Allow", Protocol: icmp6},
		{Action: "Allow", Source: api.EntityRule{Nets: []string{"10.0.0.0/8"}}},
		{Action: "Allow", Source: api.EntityRule{Nets: []string{"2001:db8::/32", "10.0.0.0/8"}}},
		{Action: "Allow", Destination: api.EntityRule{NotNets: []string{"2001:db8::/32"}}},
		{Action: "Allow", Destination: api.EntityRule{NotNets: []string{"0.0.0.0/0", "2001:db8::/32"}}},
		{Action: "Allow", Destination: api.EntityRule{NotNets: []string{"::/0", "10.0.0.0/8"}}},
		{Action: "Allow", Destination: api.EntityRule{Nets: []string{"0.0.0.0/0"}}},
		{Action: "Allow", Source: api.EntityRule{Nets: []string{"10.0.0.0/8", "2001:db8::/32"}}, Destination: api.EntityRule{Nets: []string{"2001:db8:1::/48"}}},
	}
	for i, r := range rules {
		c := newCalc(
			wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32", "2001:db8:1000::1/128"),
			gnp("p", nil, "app == 'web'", []api.Rule{r}, nil),
		)
		d := c.Desired()
		name := policyChain(api.KindGlobalNetworkPolicy, "", "p", dirIngress)
		want4, want6, _ := api.RuleFamilies(&r)
		got4, got6 := len(chainOf(t, d, v4f, name)) > 0, len(chainOf(t, d, v6f, name)) > 0
		if got4 != want4 || got6 != want6 {
			t.Errorf("rule %d %+v: rendered in v4 %v, v6 %v; RuleFamilies says %v, %v", i, r, got4, got6, want4, want6)
		}
	}
}

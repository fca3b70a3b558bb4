package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

var (
	ctInvalid = rule("-m conntrack --ctstate INVALID", "-j DROP")
	ctEstab   = rule("-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT")
	clearMk   = rule("", "-j MARK --set-xmark 0x0/0x30000")
	dropEnd   = iptables.Rule{Match: "-m mark --mark 0x0/0x20000", Action: "-j " + ChainDeny, Comment: "no policy allowed the packet"}
)

func jump(chain string) iptables.Rule { return rule("-m mark --mark 0x0/0x20000", "-j "+chain) }

func TestIsolation(t *testing.T) {
	web := wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32")
	pi := policyChain(api.KindGlobalNetworkPolicy, "", "in", dirIngress)
	po := policyChain(api.KindGlobalNetworkPolicy, "", "out", dirEgress)
	open := []iptables.Rule{ctInvalid, ctEstab, clearMk}
	cases := []struct {
		name     string
		policies []update
		tw, fw   []iptables.Rule
	}{
		{"no policy: both directions open", nil, open, open},
		{"ingress policy isolates ingress only",
			[]update{gnp("in", nil, "app == 'web'", []api.Rule{{Action: "Allow"}}, nil)},
			[]iptables.Rule{ctInvalid, ctEstab, clearMk, jump(pi), retAccept, dropEnd}, open},
		{"policy with no rules still isolates (default deny)",
			[]update{gnp("in", nil, "app == 'web'", nil, nil)},
			[]iptables.Rule{ctInvalid, ctEstab, clearMk, jump(pi), retAccept, dropEnd}, open},
		{"egress policy isolates egress only",
			[]update{gnp("out", nil, "app == 'web'", nil, []api.Rule{{Action: "Deny"}})},
			open, []iptables.Rule{ctInvalid, ctEstab, clearMk, jump(po), retAccept, dropEnd}},
		{"policy not selecting the endpoint changes nothing",
			[]update{gnp("in", nil, "app == 'db'", []api.Rule{{Action: "Allow"}}, nil)}, open, open},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newCalc(append([]update{web}, tc.policies...)...).Desired()
			diff(t, "to-workload", tc.tw, endpointRules(t, d, v4f, "trc-tw-0123456789a"))
			diff(t, "from-workload", tc.fw, endpointRules(t, d, v4f, "trc-fw-0123456789a"))
			diff(t, "to-workload v6", tc.tw, endpointRules(t, d, v6f, "trc-tw-0123456789a"))
		})
	}
}

// TestPolicyOrder checks policies run by order (missing order last), then name, and that the
// policy chains carry Deny/Pass/Allow in rule order.
func TestPolicyOrder(t *testing.T) {
	sel := "app == 'web'"
	us := []update{
		wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32"),
		gnp("z-no-order", nil, sel, []api.Rule{{Action: "Allow"}}, nil),
		gnp("b-order-10", ptrTo(10.0), sel, []api.Rule{{Action: "Pass", Protocol: tcp()}, {Action: "Deny"}}, nil),
		gnp("a-order-10", ptrTo(10.0), sel, []api.Rule{{Action: "Deny", Protocol: udp()}}, nil),
		np("ns1", "a-order-5", ptrTo(5.0), sel, []api.Rule{{Action: "Log"}}, nil),
		gnp("a-no-order", nil, sel, []api.Rule{{Action: "Allow"}}, nil),
		gnp("neg", ptrTo(-1.5), sel, []api.Rule{{Action: "Allow", Protocol: icmp()}}, nil),
	}
	d := newCalc(us...).Desired()
	g := func(n string) string { return policyChain(api.KindGlobalNetworkPolicy, "", n, dirIngress) }
	want := []iptables.Rule{ctInvalid, ctEstab, clearMk,
		jump(g("neg")), retAccept,
		jump(policyChain(api.KindNetworkPolicy, "ns1", "a-order-5", dirIngress)), retAccept,
		jump(g("a-order-10")), retAccept,
		jump(g("b-order-10")), retAccept,
		jump(g("a-no-order")), retAccept,
		jump(g("z-no-order")), retAccept,
		dropEnd,
	}
	diff(t, "endpoint chain", want, endpointRules(t, d, v4f, "trc-tw-0123456789a"))
	diff(t, "pass then deny", []iptables.Rule{
		rule("-p tcp", "-g trc-pass"),
		rule("", "-j "+ChainDeny),
	}, chainOf(t, d, v4f, g("b-order-10")))
}

func TestHostEndpointFailsafes(t *testing.T) {
	h := hep("h1", testNode, "eth0", map[string]string{"host": "yes"}, "192.0.2.1")
	fh := iptables.ChainName("fh", "if:eth0")
	th := iptables.ChainName("th", "if:eth0")
	fs := func(m string) iptables.Rule { return iptables.Rule{Match: m, Action: "-j ACCEPT", Comment: "failsafe"} }
	cases := []struct {
		name        string
		cfg         []update
		in4, out4   []iptables.Rule
		in6         []iptables.Rule
		endpointAct string
	}{
		{"defaults", nil,
			[]iptables.Rule{fs("-p tcp --dport 22"), fs("-p udp --dport 68"), fs("-p tcp --dport 179"), fs("-p tcp --dport 2379"), fs("-p tcp --dport 2380"), fs("-p tcp --dport 6443")},
			[]iptables.Rule{fs("-p udp --dport 53"), fs("-p udp --dport 67"), fs("-p tcp --dport 179"), fs("-p tcp --dport 2379"), fs("-p tcp --dport 2380"), fs("-p tcp --dport 6443")},
			[]iptables.Rule{fs("-p tcp --dport 22"), fs("-p udp --dport 68"), fs("-p tcp --dport 179"), fs("-p tcp --dport 2379"), fs("-p tcp --dport 2380"), fs("-p tcp --dport 6443")},
			"-j DROP"},
		{"cluster config with nets, node override of outbound and host action",
			[]update{
				felixCfg("default", api.FelixConfigurationSpec{
					FailsafeInboundHostPorts:    &[]api.ProtoPort{{Protocol: "TCP", Port: 22, Net: "192.0.2.0/24"}, {Protocol: "tcp", Port: 443}},
					DefaultEndpointToHostAction: "Accept"}),
				felixCfg("node."+testNode, api.FelixConfigurationSpec{FailsafeOutboundHostPorts: &[]api.ProtoPort{}}),
				felixCfg("node.other", api.FelixConfigurationSpec{DefaultEndpointToHostAction: "Return"}),
			},
			[]iptables.Rule{fs("-p tcp --dport 22 -s 192.0.2.0/24"), fs("-p tcp --dport 443")},
			nil,
			[]iptables.Rule{fs("-p tcp --dport 443")},
			"-j ACCEPT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := gnp("hp", nil, "host == 'yes'", []api.Rule{{Action: "Deny"}}, []api.Rule{{Action: "Deny"}})
			d := newCalc(append(tc.cfg, h, pol)...).Desired()
			diff(t, "failsafe in v4", tc.in4, chainOf(t, d, v4f, ChainFailsafeIn))
			diff(t, "failsafe out v4", tc.out4, chainOf(t, d, v4f, ChainFailsafeOut))
			diff(t, "failsafe in v6", tc.in6, chainOf(t, d, v6f, ChainFailsafeIn))
			g := func(n string, dir int) string { return policyChain(api.KindGlobalNetworkPolicy, "", n, dir) }
			diff(t, "host ingress chain", []iptables.Rule{ctInvalid, ctEstab, rule("", "-j "+ChainFailsafeIn), clearMk, jump(g("hp", dirIngress)), retAccept, dropEnd},
				endpointRules(t, d, v4f, fh))
			diff(t, "host egress chain", []iptables.Rule{ctInvalid, ctEstab, rule("", "-j "+ChainFailsafeOut), clearMk, jump(g("hp", dirEgress)), retAccept, dropEnd},
				endpointRules(t, d, v4f, th))
			diff(t, "dispatch in", []iptables.Rule{rule("-i eth0", "-g "+fh)}, chainOf(t, d, v4f, ChainFromHostEp))
			diff(t, "dispatch out", []iptables.Rule{rule("-o eth0", "-g "+th)}, chainOf(t, d, v4f, ChainToHostEp))
			wl := chainOf(t, d, v4f, ChainWlToHost)
			diff(t, "workload to host", []iptables.Rule{rule("", "-j "+ChainFromWlDispatch),
				{Action: tc.endpointAct, Comment: "defaultEndpointToHostAction"}}, wl)
		})
	}
}

func TestNATOutgoing(t *testing.T) {
	c := newCalc(
		pool("nat", "198.18.0.0/16", true, false),
		pool("plain", "198.19.0.0/16", false, false),
		pool("nat-disabled", "198.19.128.0/24", true, true),
		pool("v6", "2001:db8:1000::/48", false, false),
	)
	d := c.Desired()
	all := ipsets.NameFor(ipsets.FamilyInet, "pools:all:198.18.0.0/16,198.19.128.0/24,198.19.0.0/16")
	// A disabled pool still masquerades: pods left in it while it is drained keep outbound NAT.
	masq := ipsets.NameFor(ipsets.FamilyInet, "pools:masq:198.18.0.0/16,198.19.128.0/24")
	diff(t, "nat chain", []iptables.Rule{{Match: "-m set --match-set " + masq + " src -m set ! --match-set " + all + " dst",
		Action: "-j MASQUERADE", Comment: "natOutgoing"}}, chainOf(t, d, v4n, ChainNATOutgoing))
	diff(t, "all pools", []string{"198.18.0.0/16", "198.19.0.0/16", "198.19.128.0/24"}, d.IPSets[all].Members)
	diff(t, "masq pools", []string{"198.18.0.0/16", "198.19.128.0/24"}, d.IPSets[masq].Members)
	diff(t, "no IPv6 nat", []iptables.Rule(nil), chainOf(t, d, TableID{6, "nat"}, ChainNATOutgoing))
	diff(t, "postrouting jump", []iptables.Rule{{Action: "-j " + ChainPostrouting}}, d.Tables[v4n].Insertions["POSTROUTING"])

	// Turning natOutgoing off removes the rule and both sets.
	feed(c, pool("nat", "198.18.0.0/16", false, false), pool("nat-disabled", "198.19.128.0/24", false, true))
	delta := c.Flush()
	diff(t, "removed sets", []string{masq, all}, delta.IPSetsRemoved)
	diff(t, "nat chain after", []iptables.Rule(nil), chainOf(t, c.Desired(), v4n, ChainNATOutgoing))

	// natOutgoingAddress SNATs instead.
	feed(c, pool("nat", "198.18.0.0/16", true, false), felixCfg("default", api.FelixConfigurationSpec{NATOutgoingAddress: "192.0.2.10"}))
	c.Flush()
	if got := chainOf(t, c.Desired(), v4n, ChainNATOutgoing); len(got) != 1 || got[0].Action != "-j SNAT --to-source 192.0.2.10" {
		t.Errorf("SNAT rule: %+v", got)
	}
}

// TestNATPortRange: natPortRange maps TCP, UDP and SCTP into the range (MASQUERADE --to-ports,
// or SNAT to address:range, bracketed in IPv6) and leaves other protocols to a plain rule after.
func TestNATPortRange(t *testing.T) {
	pr := func(lo, hi int) *api.Port { return &api.Port{MinPort: lo, MaxPort: hi} }
	cases := []struct {
		name   string
		spec   api.FelixConfigurationSpec
		v4, v6 []string // actions in order
	}{
		{"unset", api.FelixConfigurationSpec{}, []string{"-j MASQUERADE"}, []string{"-j MASQUERADE"}},
		{"range, masquerade", api.FelixConfigurationSpec{NATPortRange: pr(32768, 65535)},
			[]string{"-j MASQUERADE --to-ports 32768-65535", "-j MASQUERADE --to-ports 32768-65535", "-j MASQUERADE --to-ports 32768-65535", "-j MASQUERADE"},
			[]string{"-j MASQUERADE --to-ports 32768-65535", "-j MASQUERADE --to-ports 32768-65535", "-j MASQUERADE --to-ports 32768-65535", "-j MASQUERADE"}},
		{"single port, SNAT v4 only", api.FelixConfigurationSpec{NATPortRange: pr(40000, 40000), NATOutgoingAddress: "192.0.2.10"},
			[]string{"-j SNAT --to-source 192.0.2.10:40000", "-j SNAT --to-source 192.0.2.10:40000", "-j SNAT --to-source 192.0.2.10:40000", "-j SNAT --to-source 192.0.2.10"},
			[]string{"-j MASQUERADE --to-ports 40000", "-j MASQUERADE --to-ports 40000", "-j MASQUERADE --to-ports 40000", "-j MASQUERADE"}},
		{"SNAT v6", api.FelixConfigurationSpec{NATPortRange: pr(1024, 2047), NATOutgoingAddress: "2001:db8::10"},
			[]string{"-j MASQUERADE --to-ports 1024-2047", "-j MASQUERADE --to-ports 1024-2047", "-j MASQUERADE --to-ports 1024-2047", "-j MASQUERADE"},
			[]string{"-j SNAT --to-source [2001:db8::10]:1024-2047", "-j SNAT --to-source [2001:db8::10]:1024-2047", "-j SNAT --to-source [2001:db8::10]:1024-2047", "-j SNAT --to-source 2001:db8::10"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCalc(pool("nat", "198.18.0.0/16", true, false), pool("nat6", "2001:db8:1000::/48", true, false),
				felixCfg("default", tc.spec))
			for _, fam := range []struct {
				table TableID
				want  []string
			}{{v4n, tc.v4}, {TableID{6, "nat"}, tc.v6}} {
				rules := chainOf(t, c.Desired(), fam.table, ChainNATOutgoing)
				var got []string
				for i, r := range rules {
					got = append(got, r.Action)
					wantProto := i < len(rules)-1
					if hasProto := strings.HasPrefix(r.Match, "-p "); hasProto != wantProto {
						t.Errorf("%v rule %d: protocol match %v, want %v: %+v", fam.table, i, hasProto, wantProto, r)
					}
				}
				diff(t, fmt.Sprintf("%v actions", fam.table), fam.want, got)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	c := newCalc(
		wep("ns1", "a", testNode, "trc0123456789a", nil, "198.18.0.1/32", "2001:db8:1000::1/128"),
		wep("ns1", "b", "host-2", "trc0123456789b", nil, "198.18.1.1/32"),
		hep("h", testNode, "eth0", nil, "192.0.2.1"),
		// Not Terrace's interface: routing its network there could take the host's traffic.
		wep("ns1", "odd", testNode, "eth1", nil, "198.18.0.9/32"),
	)
	c.SetBlocks([]netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:1000::/122")})
	c.Flush()
	want := map[netip.Prefix]routes.Target{
		netip.MustParsePrefix("198.18.0.1/32"):        {Dev: "trc0123456789a"},
		netip.MustParsePrefix("2001:db8:1000::1/128"): {Dev: "trc0123456789a"},
		netip.MustParsePrefix("198.18.0.0/26"):        {Blackhole: true},
		netip.MustParsePrefix("2001:db8:1000::/122"):  {Blackhole: true},
	}
	diff(t, "routes", want, c.Desired().Routes)

	// A new sandbox of the pod: same addresses, new interface. The routes follow it.
	feed(c, wep("ns1", "a", testNode, "trc0123456789c", nil, "198.18.0.1/32", "2001:db8:1000::1/128"))
	c.Flush()
	want[netip.MustParsePrefix("198.18.0.1/32")] = routes.Target{Dev: "trc0123456789c"}
	want[netip.MustParsePrefix("2001:db8:1000::1/128")] = routes.Target{Dev: "trc0123456789c"}
	diff(t, "routes after the interface changed", want, c.Desired().Routes)

	feed(c, del(wep("ns1", "a", "", "", nil)))
	delta := c.Flush()
	diff(t, "removed", []netip.Prefix{netip.MustParsePrefix("198.18.0.1/32"), netip.MustParsePrefix("2001:db8:1000::1/128")}, delta.RoutesRemoved)
	diff(t, "endpoint removed", []string{EndpointKey(api.KindWorkloadEndpoint, "ns1", "a")}, delta.EndpointsRemoved)
}

func TestRevision(t *testing.T) {
	web := wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32")
	db := wep("ns1", "b", testNode, "trc0123456789b", map[string]string{"app": "db"}, "198.18.0.2/32")
	c := newCalc(web, db, gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow"}}, nil))
	key := EndpointKey(api.KindWorkloadEndpoint, "ns1", "a")
	dbKey := EndpointKey(api.KindWorkloadEndpoint, "ns1", "b")
	r1, dbRev := c.Desired().Endpoints[key].Revision, c.Desired().Endpoints[dbKey].Revision

	feed(c, gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Deny"}}, nil))
	delta := c.Flush()
	r2 := c.Desired().Endpoints[key].Revision
	if r1 == r2 || r2 == "" {
		t.Errorf("revision did not change with the policy: %q -> %q", r1, r2)
	}
	if len(delta.Endpoints) != 1 || delta.Endpoints[0].Name != "a" {
		t.Errorf("delta endpoints = %+v, want only a", delta.Endpoints)
	}
	if got := c.Desired().Endpoints[dbKey].Revision; got != dbRev {
		t.Errorf("unrelated endpoint revision changed: %q -> %q", dbRev, got)
	}
	// Back to the first content: same revision, as revisions are content hashes.
	feed(c, gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow"}}, nil))
	c.Flush()
	if got := c.Desired().Endpoints[key].Revision; got != r1 {
		t.Errorf("revision %q, want %q", got, r1)
	}
}

// TestStaticChains pins the fixed skeleton: kernel-chain jumps, forward/input/output dispatch, the
// verdict chains and IPv6 neighbour discovery before workload-to-host policy.
func TestStaticChains(t *testing.T) {
	d := newCalc().Desired()
	for _, tb := range []TableID{v4f, v6f} {
		diff(t, "insertions", map[string][]iptables.Rule{
			"FORWARD": {{Action: "-j trc-FORWARD"}}, "INPUT": {{Action: "-j trc-INPUT"}}, "OUTPUT": {{Action: "-j trc-OUTPUT"}},
		}, d.Tables[tb].Insertions)
		diff(t, "forward", []iptables.Rule{
			rule("-i trc+", "-j "+ChainFromWlDispatch), rule("-o trc+", "-j "+ChainToWlDispatch),
			{Match: "-i trc+", Action: "-j ACCEPT", Comment: "allowed by workload policy"},
			{Match: "-o trc+", Action: "-j ACCEPT", Comment: "allowed by workload policy"},
		}, chainOf(t, d, tb, ChainForward))
		hostAllowed := iptables.Rule{Match: "-m mark --mark 0x10000/0x10000", Action: "-j ACCEPT", Comment: "allowed by host endpoint policy"}
		hostPassed := iptables.Rule{Match: "-m mark --mark 0x20000/0x20000", Action: "-j ACCEPT", Comment: "passed by host endpoint policy"}
		diff(t, "input", []iptables.Rule{rule("-i trc+", "-g "+ChainWlToHost), rule("", "-j MARK --set-xmark 0x0/0x30000"),
			rule("", "-j "+ChainFromHostEp), hostAllowed, hostPassed}, chainOf(t, d, tb, ChainInput))
		diff(t, "output", []iptables.Rule{{Match: "-o trc+", Action: "-j RETURN", Comment: "host to local workload is not filtered"},
			rule("", "-j MARK --set-xmark 0x0/0x30000"), rule("", "-j "+ChainToHostEp), hostAllowed, hostPassed}, chainOf(t, d, tb, ChainOutput))
		diff(t, "deny", []iptables.Rule{{Action: "-j DROP", Comment: "denied by policy"}}, chainOf(t, d, tb, ChainDeny))
		diff(t, "allow", []iptables.Rule{rule("", "-j MARK --set-xmark 0x10000/0x10000")}, chainOf(t, d, tb, ChainAllow))
		diff(t, "pass", []iptables.Rule{rule("", "-j MARK --set-xmark 0x20000/0x20000")}, chainOf(t, d, tb, ChainPass))
		diff(t, "no workloads: dispatch drops", []iptables.Rule{{Action: "-j DROP", Comment: "unknown workload interface"}}, chainOf(t, d, tb, ChainToWlDispatch))
	}
	wl6 := chainOf(t, d, v6f, ChainWlToHost)
	if len(wl6) != 6 || wl6[0].Match != "-p ipv6-icmp -m icmp6 --icmpv6-type 133" || wl6[4].Action != "-j "+ChainFromWlDispatch {
		t.Errorf("IPv6 workload-to-host chain: %+v", wl6)
	}
	// Without IPv6 nothing is rendered for it.
	c := New(Config{NodeName: testNode})
	c.Flush()
	if _, ok := c.Desired().Tables[v6f]; ok {
		t.Error("IPv6 table rendered with IPv6 off")
	}
}

// TestFilterActions: FelixConfiguration iptablesFilterAllowAction and iptablesFilterDenyAction
// reach the final verdicts (workload FORWARD, host endpoint INPUT/OUTPUT, trc-deny), the node's
// value over the cluster's, and a change re-renders them without touching policy chains.
func TestFilterActions(t *testing.T) {
	cases := []struct {
		name          string
		cfg           []update
		allow, deny   string
		policyChanges bool
	}{
		{"defaults", nil, "-j ACCEPT", "-j DROP", false},
		{"cluster Return and Reject", []update{felixCfg("default", api.FelixConfigurationSpec{
			IptablesFilterAllowAction: "Return", IptablesFilterDenyAction: "Reject"})}, "-j RETURN", "-j REJECT", false},
		{"node overrides cluster", []update{
			felixCfg("default", api.FelixConfigurationSpec{IptablesFilterAllowAction: "Return", IptablesFilterDenyAction: "Reject"}),
			felixCfg("node."+testNode, api.FelixConfigurationSpec{IptablesFilterAllowAction: "Accept", IptablesFilterDenyAction: "Drop"})},
			"-j ACCEPT", "-j DROP", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCalc(wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "a"}, "198.18.0.1/32"),
				gnp("deny-all", ptrTo(1.0), "all()", []api.Rule{{Action: "Deny"}}, nil))
			before := c.Stats().PolicyRenders
			feed(c, tc.cfg...)
			c.Flush()
			if got := c.Stats().PolicyRenders - before; got != 0 {
				t.Errorf("a FelixConfiguration change rendered %d policies again", got)
			}
			d := c.Desired()
			for _, tb := range []TableID{v4f, v6f} {
				fwd := chainOf(t, d, tb, ChainForward)
				if len(fwd) != 4 || fwd[2].Action != tc.allow || fwd[3].Action != tc.allow {
					t.Errorf("%v forward: want final %q, got %+v", tb, tc.allow, fwd)
				}
				for _, ch := range []string{ChainInput, ChainOutput} {
					rs := chainOf(t, d, tb, ch)
					acc, pass := rs[len(rs)-2], rs[len(rs)-1]
					if acc.Match != "-m mark --mark 0x10000/0x10000" || acc.Action != tc.allow || pass.Match != "-m mark --mark 0x20000/0x20000" || pass.Action != tc.allow {
						t.Errorf("%v %s: want host endpoint verdicts (allowed, passed) %q last, got %+v", tb, ch, tc.allow, rs)
					}
				}
				diff(t, "deny chain", []iptables.Rule{{Action: tc.deny, Comment: "denied by policy"}}, chainOf(t, d, tb, ChainDeny))
				pol := chainOf(t, d, tb, policyChain(api.KindGlobalNetworkPolicy, "", "deny-all", dirIngress))
				diff(t, "deny rule goes through trc-deny", []iptables.Rule{rule("", "-j "+ChainDeny)}, pol)
			}
		})
	}
}

// TestChainInsertMode: chainInsertMode Append reaches the Delta once, when it changes, and the
// desired state; going back to Insert is a change too.
func TestChainInsertMode(t *testing.T) {
	c := newCalc()
	appendOf := func(d *Delta) string {
		if d.AppendInsertions == nil {
			return "unchanged"
		}
		return strconv.FormatBool(*d.AppendInsertions)
	}
	steps := []struct {
		name    string
		cfg     update
		delta   string
		desired bool
	}{
		{"cluster Append", felixCfg("default", api.FelixConfigurationSpec{ChainInsertMode: "Append"}), "true", true},
		{"other field, same mode", felixCfg("default", api.FelixConfigurationSpec{ChainInsertMode: "Append", IptablesFilterDenyAction: "Reject"}), "unchanged", true},
		{"node Insert wins", felixCfg("node."+testNode, api.FelixConfigurationSpec{ChainInsertMode: "Insert"}), "false", false},
		{"node config gone", del(felixCfg("node."+testNode, api.FelixConfigurationSpec{})), "true", true},
	}
	for _, st := range steps {
		feed(c, st.cfg)
		d := c.Flush()
		if got := appendOf(d); got != st.delta {
			t.Errorf("%s: delta AppendInsertions %s, want %s", st.name, got, st.delta)
		}
		if got := c.Desired().AppendInsertions; got != st.desired {
			t.Errorf("%s: desired AppendInsertions %v, want %v", st.name, got, st.desired)
		}
	}
}

// TestPolicyListsShared: endpoints selected by the same policies in the same order share one
// policy-list chain; an endpoint whose labels change moves to another list; a list goes with its
// last user, and an endpoint no policy selects uses none.
func TestPolicyListsShared(t *testing.T) {
	var us []update
	for i := range 6 {
		app := []string{"web", "db"}[i%2]
		us = append(us, wep("ns1", fmt.Sprintf("e%d", i), testNode, fmt.Sprintf("trc%011x", i), map[string]string{"app": app}, fmt.Sprintf("198.18.0.%d/32", i+1)))
	}
	us = append(us,
		gnp("all", ptrTo(1.0), "has(app)", []api.Rule{{Action: "Allow", Protocol: tcp()}}, nil),
		gnp("web", ptrTo(2.0), "app == 'web'", []api.Rule{{Action: "Allow"}}, nil))
	c := newCalc(us...)
	g := func(n string) string { return policyChain(api.KindGlobalNetworkPolicy, "", n, dirIngress) }
	webList, dbList := listChain(g("all"), g("web")), listChain(g("all"))
	lists := func(d *Desired) map[string]int {
		out := map[string]int{}
		for name, rules := range d.Tables[v4f].Chains {
			if strings.HasPrefix(name, "trc-tw-") && rules[len(rules)-1].Match == "" && strings.HasPrefix(rules[len(rules)-1].Action, "-g ") {
				out[strings.TrimPrefix(rules[len(rules)-1].Action, "-g ")]++
			}
		}
		return out
	}
	d := c.Desired()
	diff(t, "users per list", map[string]int{webList: 3, dbList: 3}, lists(d))
	diff(t, "web list", []iptables.Rule{jump(g("all")), retAccept, jump(g("web")), retAccept, dropEnd}, chainOf(t, d, v4f, webList))
	diff(t, "db list v6", []iptables.Rule{jump(g("all")), retAccept, dropEnd}, chainOf(t, d, v6f, dbList))

	// Every db endpoint becomes web: the db list goes in the same flush.
	for _, i := range []int{1, 3, 5} {
		feed(c, wep("ns1", fmt.Sprintf("e%d", i), testNode, fmt.Sprintf("trc%011x", i), map[string]string{"app": "web"}, fmt.Sprintf("198.18.0.%d/32", i+1)))
	}
	delta := c.Flush()
	d = c.Desired()
	diff(t, "users after relabel", map[string]int{webList: 6}, lists(d))
	var removed []string
	for _, r := range delta.ChainsRemoved {
		removed = append(removed, fmt.Sprint(r.Table.IPVersion, " ", r.Name))
	}
	diff(t, "removed", []string{"4 " + dbList, "6 " + dbList}, removed)

	// No policy left: no list, endpoints fall off their chains open.
	feed(c, del(gnp("all", nil, "", nil, nil)), del(gnp("web", nil, "", nil, nil)))
	c.Flush()
	d = c.Desired()
	diff(t, "users without policy", map[string]int{}, lists(d))
	for name := range d.Tables[v4f].Chains {
		if strings.HasPrefix(name, "trc-pl-") {
			t.Errorf("list %s left behind", name)
		}
	}
	diff(t, "open chain", []iptables.Rule{ctInvalid, ctEstab, clearMk}, chainOf(t, d, v4f, "trc-tw-00000000000"))
}

// TestIPv6SourceCheck: IPv6 workload sources are checked in the raw table (rpfilter) before any
// policy; IPv4 has the interface's rp_filter and gets no raw table at all.
func TestIPv6SourceCheck(t *testing.T) {
	d := newCalc().Desired()
	raw6 := TableID{6, "raw"}
	diff(t, "raw PREROUTING chain", []iptables.Rule{{Match: "-i trc+ -m rpfilter --invert", Action: "-j DROP",
		Comment: "workload source not routed to its interface"}}, chainOf(t, d, raw6, ChainPrerouting))
	diff(t, "raw PREROUTING jump", []iptables.Rule{{Action: "-j " + ChainPrerouting}}, d.Tables[raw6].Insertions["PREROUTING"])
	if _, ok := d.Tables[TableID{4, "raw"}]; ok {
		t.Error("an IPv4 raw table was rendered")
	}
}

// TestHostEndpointByExpectedIPs: a host endpoint without interfaceName is placed, as in Calico,
// on every host interface holding one of its expectedIPs; an endpoint naming the interface wins
// it; of two by address the lower key wins; moving an address, changing the endpoint's
// addresses or removing it re-renders the dispatch; loopback and workload interfaces are never
// placed; with no interface addresses known nothing is placed.
func TestHostEndpointByExpectedIPs(t *testing.T) {
	byIPs := func(name string) string {
		return iptables.ChainName("fh", "hep:"+EndpointKey(api.KindHostEndpoint, "", name))
	}
	c := newCalc(hep("b-ips", testNode, "", nil, "192.0.2.1", "2001:db8::1"))
	dispatch := func() []iptables.Rule {
		c.Flush()
		return chainOf(t, c.Desired(), v4f, ChainFromHostEp)
	}
	diff(t, "no interfaces known", []iptables.Rule(nil), dispatch())
	c.SetHostInterfaces(map[string][]netip.Addr{
		"eth0": addrs("192.0.2.1"), "eth1": addrs("198.51.100.1", "2001:db8::1"), "eth2": addrs("203.0.113.9"),
		"lo": addrs("127.0.0.1", "192.0.2.1"), "trc0123456789a": addrs("192.0.2.1"),
	})
	diff(t, "placed by address, v4 and v6 alike", []iptables.Rule{
		rule("-i eth0", "-g "+byIPs("b-ips")), rule("-i eth1", "-g "+byIPs("b-ips")),
	}, dispatch())
	if n := len(chainOf(t, c.Desired(), v4f, byIPs("b-ips"))); n == 0 {
		t.Fatal("the endpoint's own chain is missing")
	}

	feed(c, hep("named", testNode, "eth0", nil), hep("a-ips", testNode, "", nil, "198.51.100.1"))
	fhNamed := iptables.ChainName("fh", "if:eth0")
	diff(t, "a named endpoint takes eth0; the lower key takes eth1", []iptables.Rule{
		rule("-i eth0", "-g "+fhNamed), rule("-i eth1", "-g "+byIPs("a-ips")),
	}, dispatch())

	c.SetHostInterfaces(map[string][]netip.Addr{"eth0": addrs("192.0.2.1"), "eth1": addrs("198.51.100.1"), "eth2": addrs("203.0.113.9", "2001:db8::1")})
	diff(t, "an address moved to eth2", []iptables.Rule{
		rule("-i eth0", "-g "+fhNamed), rule("-i eth1", "-g "+byIPs("a-ips")), rule("-i eth2", "-g "+byIPs("b-ips")),
	}, dispatch())

	feed(c, hep("b-ips", testNode, "", nil, "203.0.113.9"), del(hep("a-ips", "", "", nil)))
	diff(t, "expectedIPs changed, a-ips gone", []iptables.Rule{
		rule("-i eth0", "-g "+fhNamed), rule("-i eth2", "-g "+byIPs("b-ips")),
	}, dispatch())

	feed(c, hep("b-ips", "host-2", "", nil, "203.0.113.9"))
	diff(t, "moved to another node", []iptables.Rule{rule("-i eth0", "-g "+fhNamed)}, dispatch())
	if _, ok := c.Desired().Tables[v4f].Chains[byIPs("b-ips")]; ok {
		t.Error("chain of an endpoint no longer on this node is still there")
	}
}

// TestInterfaceExclude: FelixConfiguration interfaceExclude (default kube-ipvs0, as Calico) takes
// interfaces out of host endpoint resolution, by name and by /regexp/: no endpoint by name or by
// address lands on them, and "*" lets their packets leave the dispatch before it.
func TestInterfaceExclude(t *testing.T) {
	ret := func(flag, name string) iptables.Rule {
		return iptables.Rule{Match: flag + " " + name, Action: "-j RETURN", Comment: "interfaceExclude"}
	}
	byIPs := iptables.ChainName("fh", "hep:"+EndpointKey(api.KindHostEndpoint, "", "by-ips"))
	all := iptables.ChainName("fh", "if:*")
	c := newCalc(hep("by-ips", testNode, "", nil, "192.0.2.1"), hep("all", testNode, "*", nil))
	c.SetHostInterfaces(map[string][]netip.Addr{
		"eth0": addrs("192.0.2.1"), "kube-ipvs0": addrs("192.0.2.1", "10.96.0.1"), "vlan10": addrs("198.51.100.1"),
	})
	dispatch := func() []iptables.Rule {
		c.Flush()
		return chainOf(t, c.Desired(), v4f, ChainFromHostEp)
	}
	diff(t, "default: kube-ipvs0 excluded", []iptables.Rule{
		rule("-i eth0", "-g "+byIPs),
		ret("-i", "kube-ipvs0"),
		rule("! -i lo", "-g "+all),
	}, dispatch())

	feed(c, felixCfg("default", api.FelixConfigurationSpec{InterfaceExclude: "eth0, /^vlan[0-9]+$/,lo9"}))
	diff(t, "a name, a regular expression and a name the host does not have (yet)", []iptables.Rule{
		rule("-i kube-ipvs0", "-g "+byIPs),
		ret("-i", "eth0"), ret("-i", "lo9"), ret("-i", "vlan10"),
		rule("! -i lo", "-g "+all),
	}, dispatch())
	if got := chainOf(t, c.Desired(), v4f, ChainToHostEp); !slices.Contains(got, ret("-o", "vlan10")) {
		t.Errorf("to-host dispatch lacks the exclusion of vlan10: %v", got)
	}

	feed(c, hep("named", testNode, "vlan10", nil), del(hep("all", "", "", nil)))
	diff(t, "an endpoint naming an excluded interface gets nothing; without * no RETURNs", []iptables.Rule{
		rule("-i kube-ipvs0", "-g "+byIPs),
	}, dispatch())
}

// addrs parses addresses for host interface tables.
func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

package calc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/internal/nstest"
)

// restoreInput renders one table of a Desired as iptables-restore input (what the writer sends,
// minus its hash comments).
func restoreInput(d *Desired, id TableID) string {
	ts := d.Tables[id]
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", id.Table)
	names := sortedKeys(ts.Chains)
	for _, n := range names {
		fmt.Fprintf(&b, ":%s - [0:0]\n", n)
	}
	for _, n := range names {
		for _, r := range ts.Chains[n] {
			line := "-A " + n
			if r.Comment != "" {
				line += ` -m comment --comment "` + r.Comment + `"`
			}
			fmt.Fprintln(&b, strings.Join(strings.Fields(line+" "+r.Match+" "+r.Action), " "))
		}
	}
	for _, kc := range sortedKeys(ts.Insertions) {
		for _, r := range ts.Insertions[kc] {
			fmt.Fprintf(&b, "-A %s %s\n", kc, r.Action)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// TestKernelAcceptsRendering loads everything the calculation renders — every rule feature, in
// both IP versions, filter and nat — into the real ipset and iptables tools (legacy and nft) in a
// throw-away network namespace (unshare), so a syntax the kernel refuses fails here and not on a host.
func TestKernelAcceptsRendering(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tool := range []string{"unshare", "ipset", "iptables-legacy-restore", "iptables-nft-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	final, blocks := finalState(3)
	var rules []api.Rule
	for _, r := range []api.Rule{
		{Action: "Deny", Protocol: tcp(), Source: api.EntityRule{Ports: ports("1024:65535")}, Destination: api.EntityRule{Ports: ports("80", "443", "8000:8080"), NotPorts: ports("81")}},
		{Action: "Allow", Protocol: icmp(), ICMP: &api.ICMPFields{Type: ptrTo(8), Code: ptrTo(0)}},
		{Action: "Allow", Protocol: icmp(), NotICMP: &api.ICMPFields{Type: ptrTo(3)}},
		{Action: "Allow", Protocol: icmp6(), ICMP: &api.ICMPFields{Type: ptrTo(128)}},
		{Action: "Pass", Protocol: udp(), NotProtocol: tcp()},
		{Action: "Deny", NotProtocol: tcp(), Destination: api.EntityRule{Nets: []string{"198.51.100.7"}}},
		{Action: "Allow", Protocol: tcp(), Source: api.EntityRule{NotPorts: ports("http")}, Destination: api.EntityRule{Selector: "k == '1'", Ports: ports("http", "81", "1000:1001")}},
		{Action: "Log", Protocol: ptrTo(api.ProtocolFromInt(47))},
		{Action: "Deny", Protocol: ptrTo(api.ProtocolFromString("SCTP")), Destination: api.EntityRule{Ports: ports("9")}},
		{Action: "Deny", Source: api.EntityRule{Nets: []string{"10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"}, NotNets: []string{"10.1.0.0/16"}}},
		{Action: "Allow", Destination: api.EntityRule{Selector: "app == 'web'", NotSelector: "tier == 'x'", NamespaceSelector: "all()"}},
		// One net and one negated net on a side: iptables takes one -d per rule.
		{Action: "Allow", Destination: api.EntityRule{Nets: []string{"10.0.0.0/8"}, NotNets: []string{"10.96.0.0/12"}}},
		{Action: "Deny", Source: api.EntityRule{Nets: []string{"2001:db8::/32"}, NotNets: []string{"2001:db8:1::/48"}}},
	} {
		rules = append(rules, r)
	}
	final = append(final,
		func() update {
			u := wep("ns1", "kernel", testNode, "trc0000000000ff", map[string]string{"k": "1"}, "198.18.3.1/32", "2001:db8:1000::99/128")
			u.r.(*api.WorkloadEndpoint).Spec.Ports = []api.WorkloadEndpointPort{{Name: "http", Protocol: api.ProtocolFromString("TCP"), Port: 80}}
			return u
		}(),
		hep("kernel-hep", testNode, "eth9", map[string]string{"k": "1"}, "192.0.2.99"),
		hep("kernel-all", testNode, "*", map[string]string{"k": "1"}),
		pool("kernel-nat", "198.18.0.0/16", true, false),
		pool("kernel-nat6", "2001:db8:1000::/48", true, false),
		// The non-default verdicts and NAT forms: REJECT, RETURN, MASQUERADE with ports (v4),
		// SNAT to [address]:ports (v6); marks at both ends of the 32 bits.
		felixCfg("default", api.FelixConfigurationSpec{FailsafeInboundHostPorts: &[]api.ProtoPort{{Protocol: "TCP", Port: 22, Net: "192.0.2.0/24"}},
			IptablesFilterDenyAction: "Reject", IptablesFilterAllowAction: "Return",
			NATPortRange: &api.Port{MinPort: 32768, MaxPort: 65535}, NATOutgoingAddress: "2001:db8::10",
			InterfaceExclude: "kube-ipvs0,eth.dot_9,/^vlan/", IptablesMarkMask: ptrTo(uint32(0x80000001))}),
		gnp("kernel", nil, "k == '1'", rules, rules),
	)
	c := New(Config{NodeName: testNode, IPv6: true})
	feed(c, final...)
	c.SetBlocks(blocks)
	c.Flush()
	d := c.Desired()

	dir := t.TempDir()
	var sets strings.Builder
	for _, name := range sortedKeys(d.IPSets) {
		s := d.IPSets[name]
		fmt.Fprintf(&sets, "create %s %s family %s\n", name, s.Meta.Type, s.Meta.Family)
		for _, m := range s.Members {
			fmt.Fprintf(&sets, "add %s %s\n", name, m)
		}
	}
	files := map[string]string{"sets": sets.String()}
	total := 0
	for id, ts := range d.Tables {
		files[fmt.Sprintf("%s%d", id.Table, id.IPVersion)] = restoreInput(d, id)
		for _, rs := range ts.Chains {
			total += len(rs)
		}
	}
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, be := range []string{"legacy", "nft"} {
		t.Run(be, func(t *testing.T) {
			script := fmt.Sprintf(`set -e
cd %s
ipset restore < sets
for tb in filter nat; do iptables-%[2]s-restore < ${tb}4; ip6tables-%[2]s-restore < ${tb}6; done
ip6tables-%[2]s-restore < raw6
{ iptables-%[2]s-save; ip6tables-%[2]s-save; } | grep -c '^-A trc-'
`, dir, be)
			out, err := exec.Command("unshare", "--net", "sh", "-c", script).CombinedOutput()
			if err != nil {
				t.Fatalf("loading the rendering failed: %v\n%s", err, out)
			}
			var n int
			if _, err := fmt.Sscan(string(out), &n); err != nil || n != total {
				t.Fatalf("kernel holds %q trc- rules, want %d", strings.TrimSpace(string(out)), total)
			}
		})
	}
}

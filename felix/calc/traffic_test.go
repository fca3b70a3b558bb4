package calc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/internal/nstest"
)

func nsRun(t *testing.T, ns string, args ...string) error {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func nsMust(t *testing.T, ns string, args ...string) {
	t.Helper()
	if err := nsRun(t, ns, args...); err != nil {
		t.Fatal(err)
	}
}

func nsStdin(t *testing.T, ns, input string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s\ninput:\n%s", strings.Join(args, " "), err, out, input)
	}
}

// probe runs this test binary as TestProbeHelper inside ns.
func probe(t *testing.T, ns, mode string) error {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestProbeHelper$")
	cmd.Env = append(os.Environ(), "TRC_PROBE="+mode)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("probe %s in %s: %v: %s", mode, ns, err, out)
	}
	return nil
}

// TestProbeHelper is not a test: TestTrafficSemantics runs it inside a namespace to listen on or
// connect to a TCP address ("listen:ADDR" or "dial:ADDR" in TRC_PROBE).
func TestProbeHelper(t *testing.T) {
	mode, addr, ok := strings.Cut(os.Getenv("TRC_PROBE"), ":")
	if !ok {
		t.Skip("helper process only")
	}
	switch mode {
	case "listen":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		for {
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		}
	case "dial":
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
}

// TestTrafficSemantics programs the calculated ruleset into a fresh "host" namespace wired to two
// "pod" namespaces the Terrace way (pure L3, proxy ARP) and checks with real TCP connections that isolation,
// Allow/Deny/Pass precedence, order, selectors and namespace scoping behave as documented.
func TestTrafficSemantics(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tool := range []string{"ip", "ipset", "iptables-legacy-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	pfx := fmt.Sprintf("trccalc%d", os.Getpid())
	host, podA, podB := pfx+"h", pfx+"a", pfx+"b"
	for _, ns := range []string{host, podA, podB} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	nsMust(t, host, "ip", "link", "set", "lo", "up")
	nsMust(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Proxy ARP answers for 169.254.1.1 only when the host has a route to it elsewhere; a real host
	// has its default route, this one gets one into a veth pair.
	nsMust(t, host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	nsMust(t, host, "ip", "link", "set", "up0", "up")
	nsMust(t, host, "ip", "link", "set", "up1", "up")
	nsMust(t, host, "ip", "route", "add", "default", "dev", "up0")
	for _, p := range []struct{ ns, iface, ip string }{{podA, "trc0000000000a", "198.18.0.1"}, {podB, "trc0000000000b", "198.18.0.2"}} {
		nsMust(t, host, "ip", "link", "add", p.iface, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		nsMust(t, host, "ip", "link", "set", p.iface, "up")
		nsMust(t, host, "sysctl", "-qw", "net.ipv4.conf."+p.iface+".proxy_arp=1", "net.ipv4.neigh."+p.iface+".proxy_delay=0")
		nsMust(t, host, "ip", "route", "add", p.ip+"/32", "dev", p.iface)
		nsMust(t, p.ns, "ip", "link", "set", "lo", "up")
		nsMust(t, p.ns, "ip", "link", "set", "eth0", "up")
		nsMust(t, p.ns, "ip", "addr", "add", p.ip+"/32", "dev", "eth0")
		nsMust(t, p.ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		nsMust(t, p.ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
	}

	listener := exec.Command("ip", "netns", "exec", podB, os.Args[0], "-test.run=^TestProbeHelper$")
	listener.Env = append(os.Environ(), "TRC_PROBE=listen:198.18.0.2:8080")
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Process.Kill(); _ = listener.Wait() })
	ready := false
	for range 50 {
		if probe(t, podB, "dial:198.18.0.2:8080") == nil {
			ready = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !ready {
		t.Fatal("probe listener did not come up")
	}

	epA := func(ns string) update {
		return wep(ns, "a", testNode, "trc0000000000a", map[string]string{"app": "a"}, "198.18.0.1/32")
	}
	epB := wep("ns1", "b", testNode, "trc0000000000b", map[string]string{"app": "b"}, "198.18.0.2/32")
	epB.r.(*api.WorkloadEndpoint).Spec.Ports = []api.WorkloadEndpointPort{{Name: "web", Protocol: api.ProtocolFromString("TCP"), Port: 8080}}
	tcpRule := func(action string) api.Rule { return api.Rule{Action: action, Protocol: tcp()} }
	portRule := func(ps ...string) api.Rule {
		return api.Rule{Action: "Allow", Protocol: tcp(), Destination: api.EntityRule{Ports: ports(ps...)}}
	}
	var others []update
	for i := range 300 {
		others = append(others, wep("ns1", fmt.Sprintf("o%d", i), testNode, spreadIface(i), map[string]string{"app": "o"}, fmt.Sprintf("198.18.%d.%d/32", 1+i/200, i%200)))
	}
	cases := []struct {
		name     string
		us       []update
		reaching bool
	}{
		{"no policy allows", []update{epA("ns1"), epB}, true},
		{"deny tcp on ingress", []update{epA("ns1"), epB, gnp("d", nil, "app == 'b'", []api.Rule{tcpRule("Deny")}, nil)}, false},
		{"policy without rules isolates", []update{epA("ns1"), epB, gnp("d", nil, "app == 'b'", nil, nil)}, false},
		{"ingress policy elsewhere leaves egress open", []update{epA("ns1"), epB, gnp("d", nil, "app == 'a'", nil, nil, api.PolicyTypeIngress)}, true},
		{"egress deny on the sender", []update{epA("ns1"), epB, gnp("d", nil, "app == 'a'", nil, []api.Rule{tcpRule("Deny")})}, false},
		{"pass skips a later deny, then the implicit profile allows", []update{epA("ns1"), epB,
			gnp("1-pass", ptrTo(1.0), "app == 'b'", []api.Rule{tcpRule("Pass")}, nil),
			gnp("2-deny", ptrTo(2.0), "app == 'b'", []api.Rule{tcpRule("Deny")}, nil)}, true},
		{"earlier deny beats later allow", []update{epA("ns1"), epB,
			gnp("1-deny", ptrTo(1.0), "app == 'b'", []api.Rule{tcpRule("Deny")}, nil),
			gnp("2-allow", ptrTo(2.0), "app == 'b'", []api.Rule{tcpRule("Allow")}, nil)}, false},
		{"earlier allow by source selector beats later deny", []update{epA("ns1"), epB,
			gnp("1-allow", ptrTo(1.0), "app == 'b'", []api.Rule{{Action: "Log"}, {Action: "Allow", Source: api.EntityRule{Selector: "app == 'a'"}}}, nil),
			gnp("2-deny", ptrTo(2.0), "app == 'b'", []api.Rule{tcpRule("Deny")}, nil)}, true},
		{"allow from a selector not matching the sender", []update{epA("ns1"), epB,
			gnp("1-allow", ptrTo(1.0), "app == 'b'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "app == 'c'"}}}, nil)}, false},
		{"network policy selectors stay in its namespace", []update{epA("ns2"), epB,
			np("ns1", "allow-a", nil, "app == 'b'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "app == 'a'"}}}, nil)}, false},
		{"namespaceSelector reaches the other namespace", []update{epA("ns2"), epB,
			np("ns1", "allow-a", nil, "app == 'b'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "app == 'a'", NamespaceSelector: "projectcalico.org/name == 'ns2'"}}}, nil)}, true},
		{"allow by source net", []update{epA("ns1"), epB,
			gnp("n", nil, "app == 'b'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Nets: []string{"198.18.0.0/30", "192.0.2.0/24"}}}}, nil)}, true},
		{"deny by notNets", []update{epA("ns1"), epB,
			gnp("n", nil, "app == 'b'", []api.Rule{{Action: "Allow", Source: api.EntityRule{NotNets: []string{"198.18.0.1/32"}}}}, nil)}, false},
		{"destination port match", []update{epA("ns1"), epB, gnp("n", nil, "app == 'b'", []api.Rule{portRule("80", "8000:8100")}, nil)}, true},
		{"named destination port", []update{epA("ns1"), epB, gnp("n", nil, "app == 'b'", []api.Rule{portRule("web")}, nil)}, true},
		{"named port of another name", []update{epA("ns1"), epB, gnp("n", nil, "app == 'b'", []api.Rule{portRule("db")}, nil)}, false},
		{"destination port mismatch", []update{epA("ns1"), epB, gnp("n", nil, "app == 'b'", []api.Rule{portRule("9090")}, nil)}, false},
		{"notPorts", []update{epA("ns1"), epB, gnp("n", nil, "app == 'b'", []api.Rule{{Action: "Allow", Protocol: tcp(),
			Destination: api.EntityRule{NotPorts: ports("8080")}}}, nil)}, false},
		{"other protocol allowed only", []update{epA("ns1"), epB, gnp("n", nil, "app == 'b'", []api.Rule{{Action: "Allow", Protocol: udp()}}, nil)}, false},
		// Enough endpoints for the dispatch chains to branch twice on the way to a and b.
		{"many endpoints: dispatch reaches both pods", append([]update{epA("ns1"), epB}, others...), true},
		{"many endpoints: dispatch reaches b's ingress policy", append([]update{epA("ns1"), epB,
			gnp("d", nil, "app == 'b'", []api.Rule{tcpRule("Deny")}, nil)}, others...), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Config{NodeName: testNode})
			feed(c, tc.us...)
			c.Flush()
			d := c.Desired()
			nsStdin(t, host, "*filter\nCOMMIT\n*nat\nCOMMIT\n", "iptables-legacy-restore")
			nsMust(t, host, "ipset", "destroy")
			var sets strings.Builder
			for _, name := range sortedKeys(d.IPSets) {
				s := d.IPSets[name]
				fmt.Fprintf(&sets, "create %s %s family %s\n", name, s.Meta.Type, s.Meta.Family)
				for _, m := range s.Members {
					fmt.Fprintf(&sets, "add %s %s\n", name, m)
				}
			}
			nsStdin(t, host, sets.String(), "ipset", "restore")
			nsStdin(t, host, restoreInput(d, v4f)+restoreInput(d, v4n), "iptables-legacy-restore")
			err := probe(t, podA, "dial:198.18.0.2:8080")
			if got := err == nil; got != tc.reaching {
				t.Fatalf("TCP connect reached=%v, want %v (%v)\n%s", got, tc.reaching, err, restoreInput(d, v4f))
			}
		})
	}
}

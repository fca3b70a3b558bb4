package felix

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/felix/dataplane/fastpath"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/sysctl"
	"github.com/terracenet/terrace/internal/nstest"
	"github.com/terracenet/terrace/ipam"
)

// nsFS reads and writes /proc/sys from a thread inside the test's namespace.
type nsFS struct{ ns string }

func (f nsFS) Read(path string) (string, error) {
	var v string
	err := nstest.Enter(f.ns, func() error {
		var err error
		v, err = sysctl.ProcFS{}.Read(path)
		return err
	})
	return v, err
}

func (f nsFS) Write(path, value string) error {
	return nstest.Enter(f.ns, func() error { return sysctl.ProcFS{}.Write(path, value) })
}

func decodeOne(t *testing.T, doc string) api.Resource {
	t.Helper()
	docs, err := api.Decode([]byte(doc))
	if err != nil || len(docs) != 1 || docs[0].Err != nil {
		t.Fatalf("decode %s: %v %+v", doc, err, docs)
	}
	return docs[0].Resource
}

// TestAgentInNamespace runs the whole agent (real calc, real writers, real embedded etcd) against
// a fresh network namespace: a workload endpoint and a policy become chains, a set, routes and
// interface settings; the status key is written; tampering is repaired by a forced resync; and
// deleting the policy and the endpoint removes what they caused.
func TestAgentInNamespace(t *testing.T) {
	for _, b := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run(string(b), func(t *testing.T) {
			if _, err := exec.LookPath("iptables-" + string(b) + "-restore"); err != nil {
				t.Skipf("skipping: iptables-%s-restore not installed", b)
			}
			testAgentInNamespace(t, b)
		})
	}
}

func testAgentInNamespace(t *testing.T, backend iptables.Backend) {
	ns := nstest.New(t, "ipset", "iptables-save", "iptables-restore")
	const (
		node  = "host-1"
		iface = "trc0a1b2c3d4e5"
		podIP = "198.18.0.5"
	)
	for _, c := range [][]string{
		{"ip", "link", "add", iface, "type", "veth", "peer", "name", "wl0"},
		{"ip", "link", "set", iface, "up"},
		{"ip", "link", "set", "wl0", "up"},
	} {
		nstest.Run(t, ns, c...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, client := startTestDatastore(t, ctx)

	// Present before the agent starts, as after a restart.
	wepRes, err := client.Create(ctx, decodeOne(t, fmt.Sprintf(`
apiVersion: terrace.dev/v1
kind: WorkloadEndpoint
metadata: {name: host--1-k8s-web-eth0, namespace: shop, labels: {app: web}}
spec: {node: %s, orchestrator: k8s, workload: web, pod: web, endpoint: eth0, interfaceName: %s, ipNetworks: ["%s/32"]}
`, node, iface, podIP)))
	if err != nil {
		t.Fatal(err)
	}
	block := "198.18.0.0/26"
	if _, err := store.Put(ctx, ipam.AffinityKey(node, mustPrefix(t, block)), fmt.Appendf(nil, `{"state":"confirmed","node":%q,"cidr":%q}`, node, block)); err != nil {
		t.Fatal(err)
	}

	nsh, nl := nstest.Handle(t, ns)
	cmd := cmdrun.InNetns(ns)
	fp, err := fastpath.LoadBPF(&nsh)
	if err != nil {
		t.Fatalf("load the fast path (Linux 6.6 with BTF, as this machine has): %v", err)
	}
	defer fp.Close()
	dp, _, err := NewDataplane(ctx, DataplaneConfig{Cmd: cmd, Netlink: nl, Sysctl: nsFS{ns}, Backend: backend, HostSysctls: true,
		FastPath: fp, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The fast path's map: the pod's address to the ifindex its interface has now (0: none).
	fastPathEntry := func() (entry, ifindex int) {
		m, err := fp.Workloads()
		if err != nil {
			t.Fatal(err)
		}
		l, err := nl.LinkByName(iface)
		if err != nil {
			t.Fatal(err)
		}
		return m[netip.MustParseAddr(podIP)], l.Attrs().Index
	}
	links, err := SubscribeLinks(ctx, &nsh, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{NodeName: node, Client: client, ApplyInterval: 10 * time.Millisecond, Refresh: noRefresh, LinkEvents: links, Logger: testLogger(t)},
		dp, calc.New(calc.Config{NodeName: node}))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	save := func() string { return nstest.Run(t, ns, "iptables-"+string(backend)+"-save", "-t", "filter") }
	routesOut := func() string { return nstest.Run(t, ns, "ip", "-4", "route", "show", "proto", "80") }
	waitNS := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				ok, why := a.Ready()
				t.Fatalf("timed out waiting for %s (ready=%v %s)\nfilter:\n%s\nroutes:\n%s", what, ok, why, save(), routesOut())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	waitNS("readiness", func() bool { ok, _ := a.Ready(); return ok })
	waitNS("workload route and blackhole", func() bool {
		r := routesOut()
		return strings.Contains(r, podIP+" dev "+iface) && strings.Contains(r, "blackhole "+block)
	})
	if got := strings.TrimSpace(nstest.Run(t, ns, "cat", "/proc/sys/net/ipv4/conf/"+iface+"/proxy_arp")); got != "1" {
		t.Errorf("proxy_arp on %s = %s, want 1", iface, got)
	}
	waitNS("fast path entry for the pod", func() bool { e, idx := fastPathEntry(); return e == idx })
	if got := strings.TrimSpace(nstest.Run(t, ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")); got != "1" {
		t.Errorf("nf_conntrack_tcp_be_liberal = %s with the fast path on, want 1", got)
	}
	statusKey := datastore.EndpointStatusKey(node, "shop", "host--1-k8s-web-eth0")
	waitNS("endpoint status", func() bool {
		e, err := store.Get(ctx, statusKey)
		if err != nil {
			return false
		}
		st, err := datastore.ParseEndpointStatus(e.Value)
		return err == nil && st.Programmed && fmt.Sprint(st.Revision) == wepRes.(*api.WorkloadEndpoint).Metadata.ResourceVersion
	})

	if _, err := client.Create(ctx, decodeOne(t, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-ingress}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {nets: [198.18.1.0/24, 198.18.2.0/24]}
    destination: {ports: [80]}
`)); err != nil {
		t.Fatal(err)
	}
	var setName string
	waitNS("policy chain and its set", func() bool {
		s := save()
		if !strings.Contains(s, ":trc-pi-") || !strings.Contains(s, "--dport 80") {
			return false
		}
		for _, l := range strings.Split(s, "\n") {
			if i := strings.Index(l, "--match-set "); i >= 0 && strings.HasPrefix(l, "-A trc-pi-") {
				setName = strings.Fields(l[i:])[1]
				return true
			}
		}
		return false
	})
	members := nstest.Run(t, ns, "ipset", "list", setName)
	for _, m := range []string{"198.18.1.0/24", "198.18.2.0/24"} {
		if !strings.Contains(members, m) {
			t.Errorf("set %s lacks %s:\n%s", setName, m, members)
		}
	}

	// A third party tampers with everything Terrace owns.
	var policyChain string
	for _, l := range strings.Split(save(), "\n") {
		if strings.HasPrefix(l, ":trc-pi-") {
			policyChain = strings.Fields(l[1:])[0]
		}
	}
	nstest.Run(t, ns, "iptables-"+string(backend), "-F", policyChain)
	nstest.Run(t, ns, "ipset", "flush", setName)
	nstest.Run(t, ns, "ip", "route", "del", podIP+"/32")
	nstest.Run(t, ns, "sysctl", "-w", "net.ipv4.conf."+iface+".proxy_arp=0")
	if err := a.ForceResync(ctx); err != nil {
		t.Fatalf("forced resync: %v", err)
	}
	if s := save(); !strings.Contains(s, "-A "+policyChain+" ") {
		t.Errorf("flushed chain %s not repaired:\n%s", policyChain, s)
	}
	if m := nstest.Run(t, ns, "ipset", "list", setName); !strings.Contains(m, "198.18.1.0/24") {
		t.Errorf("flushed set not repaired:\n%s", m)
	}
	if r := routesOut(); !strings.Contains(r, podIP+" dev "+iface) {
		t.Errorf("deleted route not repaired:\n%s", r)
	}
	if got := strings.TrimSpace(nstest.Run(t, ns, "cat", "/proc/sys/net/ipv4/conf/"+iface+"/proxy_arp")); got != "1" {
		t.Errorf("proxy_arp not repaired: %s", got)
	}

	// The pod's veth is re-created under the same name (a restarted sandbox): its route died
	// with the old device and comes back without waiting for a resync (disabled here).
	nstest.Run(t, ns, "ip", "link", "del", iface)
	nstest.Run(t, ns, "ip", "link", "add", iface, "type", "veth", "peer", "name", "wl0")
	nstest.Run(t, ns, "ip", "link", "set", iface, "up")
	nstest.Run(t, ns, "ip", "link", "set", "wl0", "up")
	waitNS("route and settings of the re-created interface", func() bool {
		arp := strings.TrimSpace(nstest.Run(t, ns, "cat", "/proc/sys/net/ipv4/conf/"+iface+"/proxy_arp"))
		return strings.Contains(routesOut(), podIP+" dev "+iface) && arp == "1"
	})
	waitNS("fast path entry for the re-created interface", func() bool { e, idx := fastPathEntry(); return e == idx })

	if _, err := client.Delete(ctx, api.KindGlobalNetworkPolicy, "", "web-ingress", ""); err != nil {
		t.Fatal(err)
	}
	waitNS("policy chain removed", func() bool { return !strings.Contains(save(), ":trc-pi-") })
	waitNS("its set destroyed", func() bool {
		return !strings.Contains(nstest.Run(t, ns, "ipset", "list", "-n"), setName)
	})
	if _, err := client.Delete(ctx, api.KindWorkloadEndpoint, "shop", "host--1-k8s-web-eth0", ""); err != nil {
		t.Fatal(err)
	}
	waitNS("route removed", func() bool { return !strings.Contains(routesOut(), podIP+" ") })
	waitNS("fast path entry removed", func() bool { e, _ := fastPathEntry(); return e == 0 })
	waitNS("status removed", func() bool {
		_, err := store.Get(ctx, statusKey)
		return errors.Is(err, kv.ErrNotFound)
	})
	if !strings.Contains(routesOut(), "blackhole "+block) {
		t.Errorf("blackhole for the node's block went with the endpoint:\n%s", routesOut())
	}
}

// TestNoLegacyTablesCreated: a namespace that only has nft rules gets no legacy iptables tables
// from felix's start (detection, and the clean-up of the back end not in use): an empty legacy
// table still hooks every packet.
func TestNoLegacyTablesCreated(t *testing.T) {
	ns := nstest.New(t, "iptables-nft-restore", "iptables-legacy-save", "ip6tables-legacy-save")
	cmd := cmdrun.InNetns(ns)
	ctx := context.Background()
	nstest.Run(t, ns, "iptables-nft", "-A", "INPUT", "-s", "192.0.2.2/32", "-j", "ACCEPT")
	_, nl := nstest.Handle(t, ns)
	dp, got, err := NewDataplane(ctx, DataplaneConfig{Cmd: cmd, Netlink: nl, IPv6: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got != iptables.BackendNFT {
		t.Fatalf("detected %s, want nft", got)
	}
	dp.AfterProgrammed(ctx)
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		// The file is absent where the legacy modules were never loaded: nothing was created.
		out, _ := exec.Command("ip", "netns", "exec", ns, "cat", f).Output()
		if tables := strings.TrimSpace(string(out)); tables != "" {
			t.Errorf("legacy tables created in an nft-only namespace (%s): %q", f, tables)
		}
	}
}

// TestIPv6OffCleansStaleRules: ip6tables state a run with IPv6 left (trc- chains in filter, nat
// and raw, and the jumps to them) is removed when a run without IPv6 builds its dataplane, while
// a foreign ip6tables rule and chain stay.
func TestIPv6OffCleansStaleRules(t *testing.T) {
	for _, b := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run(string(b), func(t *testing.T) {
			base := "ip6tables-" + string(b)
			if _, err := exec.LookPath(base + "-restore"); err != nil {
				t.Skipf("skipping: %s-restore not installed", base)
			}
			ns := nstest.New(t, base+"-restore", base+"-save", base)
			cmd := cmdrun.InNetns(ns)
			ctx := context.Background()
			nstest.Run(t, ns, base, "-N", "OTHER")
			nstest.Run(t, ns, base, "-A", "INPUT", "-s", "2001:db8::1/128", "-j", "OTHER")
			// What an earlier run with IPv6 left behind.
			run := iptables.NewExecRunner(cmd, b, 6)
			for _, tbl := range []struct{ table, kernel string }{{"filter", "FORWARD"}, {"nat", "POSTROUTING"}, {"raw", "PREROUTING"}} {
				tb := iptables.NewTable(tbl.table, run, iptables.Options{})
				if err := tb.UpdateChain(iptables.Chain{Name: "trc-x", Rules: []iptables.Rule{{Action: "-j RETURN"}}}); err != nil {
					t.Fatal(err)
				}
				if err := tb.SetInsertions(tbl.kernel, []iptables.Rule{{Action: "-j trc-x"}}); err != nil {
					t.Fatal(err)
				}
				if err := tb.Apply(ctx); err != nil {
					t.Fatal(err)
				}
			}
			all := func() string {
				var out []string
				for _, tbl := range []string{"filter", "nat", "raw"} {
					out = append(out, nstest.Run(t, ns, base+"-save", "-t", tbl))
				}
				return strings.Join(out, "\n")
			}
			if s := all(); strings.Count(s, "-j trc-x") != 3 {
				t.Fatalf("set-up: want three jumps to trc-x:\n%s", s)
			}
			_, nl := nstest.Handle(t, ns)
			if _, _, err := NewDataplane(ctx, DataplaneConfig{Cmd: cmd, Netlink: nl, Backend: b, IPv6: false, Logger: testLogger(t)}); err != nil {
				t.Fatal(err)
			}
			s := all()
			if strings.Contains(s, "trc") {
				t.Errorf("Terrace's ip6tables state left after a run without IPv6:\n%s", s)
			}
			if !strings.Contains(s, ":OTHER") || !strings.Contains(s, "-A INPUT -s 2001:db8::1/128 -j OTHER") {
				t.Errorf("foreign ip6tables state touched:\n%s", s)
			}
		})
	}
}

// TestOtherBackendCleaned: an earlier run left Terrace's chains and jumps in one iptables back
// end; the host's tools now use the other. Detection follows the tools (Terrace's own rules are
// not counted), building the dataplane leaves the old rules in place (they still enforce policy
// until the new back end is programmed), and the after-programmed clean-up removes them, v4 and
// v6, leaving other tools' rules in both back ends alone.
func TestOtherBackendCleaned(t *testing.T) {
	for _, b := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run("now "+string(b), func(t *testing.T) {
			old := b.Other()
			var bins []string
			for _, be := range []iptables.Backend{b, old} {
				for _, base := range []string{"iptables-", "ip6tables-"} {
					bins = append(bins, base+string(be), base+string(be)+"-save", base+string(be)+"-restore")
				}
			}
			ns := nstest.New(t, bins...)
			cmd := cmdrun.InNetns(ns)
			ctx := context.Background()
			// Other tools: one rule in the old back end, two in the new one.
			nstest.Run(t, ns, "iptables-"+string(old), "-A", "INPUT", "-s", "192.0.2.1/32", "-j", "ACCEPT")
			nstest.Run(t, ns, "iptables-"+string(b), "-A", "INPUT", "-s", "192.0.2.2/32", "-j", "ACCEPT")
			nstest.Run(t, ns, "iptables-"+string(b), "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.2/32", "-j", "RETURN")
			// What the earlier run left in the old back end: more rules than the tools have.
			for _, v := range []int{4, 6} {
				run := iptables.NewExecRunner(cmd, old, v)
				for _, tbl := range []struct{ table, kernel string }{{"filter", "FORWARD"}, {"nat", "POSTROUTING"}} {
					tb := iptables.NewTable(tbl.table, run, iptables.Options{})
					must := func(err error) {
						if err != nil {
							t.Fatal(err)
						}
					}
					must(tb.UpdateChain(iptables.Chain{Name: "trc-x", Rules: []iptables.Rule{{Action: "-j RETURN"}, {Action: "-j RETURN"}, {Action: "-j RETURN"}}}))
					must(tb.SetInsertions(tbl.kernel, []iptables.Rule{{Action: "-j trc-x"}}))
					must(tb.Apply(ctx))
				}
			}
			state := func(be iptables.Backend) string {
				var out []string
				for _, base := range []string{"iptables-", "ip6tables-"} {
					for _, tbl := range []string{"filter", "nat"} {
						out = append(out, nstest.Run(t, ns, base+string(be)+"-save", "-t", tbl))
					}
				}
				return strings.Join(out, "\n")
			}
			if s := state(old); strings.Count(s, "-j trc-x") != 4 {
				t.Fatalf("set-up: want four jumps to trc-x in %s:\n%s", old, s)
			}
			_, nl := nstest.Handle(t, ns)
			dp, got, err := NewDataplane(ctx, DataplaneConfig{Cmd: cmd, Netlink: nl, IPv6: true, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if got != b {
				t.Fatalf("detected %s, want %s (where the other tools' rules are)", got, b)
			}
			if s := state(old); strings.Count(s, "-j trc-x") != 4 {
				t.Fatalf("the old back end was cleaned before the new one was programmed:\n%s", s)
			}
			if dp.AfterProgrammed == nil {
				t.Fatal("no after-programmed clean-up")
			}
			dp.AfterProgrammed(ctx)
			s := state(old)
			if strings.Contains(s, "trc") {
				t.Errorf("Terrace's rules left in the %s back end:\n%s", old, s)
			}
			if !strings.Contains(s, "-A INPUT -s 192.0.2.1/32 -j ACCEPT") {
				t.Errorf("another tool's rule in the %s back end was touched:\n%s", old, s)
			}
			if s := state(b); !strings.Contains(s, "-A INPUT -s 192.0.2.2/32 -j ACCEPT") || !strings.Contains(s, "-A POSTROUTING -s 192.0.2.2/32 -j RETURN") {
				t.Errorf("another tool's rules in the %s back end were touched:\n%s", b, s)
			}
		})
	}
}

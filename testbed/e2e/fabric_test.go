package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/testbed"
)

// TestECMPFailover: a host dual-homed to two ToRs, without the mesh, holds each remote block as
// one route over both ToRs; when one ToR stops, the route keeps only the other and traffic flows.
func TestECMPFailover(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, Tors: 2, NoMesh: true, LogLevel: "info"})
	ctx := context.Background()
	addPod(t, tb, "host-1", "p")
	p2 := addPod(t, tb, "host-2", "p")
	block := blockOf(t, p2.IPv4)
	nexthops := func() int {
		line := kernelRoutes(t, tb, "host-1", "4")[block]
		return strings.Count(line, "nexthop via")
	}
	eventually(t, waitTimeout, func() string {
		if n := nexthops(); n != 2 {
			st, _ := bgpStatus(t, tb, "host-1")
			return fmt.Sprintf("host-1's route to %s has %d ECMP next hops, want 2: %q (bgp peers %+v)", block, n, kernelRoutes(t, tb, "host-1", "4")[block], st.Peers)
		}
		return ""
	})
	if err := ping(tb, "host-1/p", p2.IPv4, 2); err != nil {
		t.Fatalf("ping over ECMP: %v", err)
	}
	if err := tb.StopTor(ctx, "tor-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() string {
		line := kernelRoutes(t, tb, "host-1", "4")[block]
		if !strings.Contains(line, "via 198.51.100.") || strings.Contains(line, "192.0.2.") {
			return fmt.Sprintf("after tor-1 stopped, host-1's route to %s is %q, want only via tor-2", block, line)
		}
		return ""
	})
	if err := ping(tb, "host-1/p", p2.IPv4, 3); err != nil {
		t.Errorf("ping after failover: %v", err)
	}
	if err := tb.StartTor(ctx, "tor-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() string {
		if n := nexthops(); n != 2 {
			return fmt.Sprintf("after tor-1 returned, %d next hops, want 2", n)
		}
		return ""
	})
}

// TestRouteReflector: with the mesh off, host-1 becomes route reflector (routeReflectorClusterID
// and a label) and a BGPPeer with nodeSelector/peerSelector makes the others its clients.
func TestRouteReflector(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 3, NoMesh: true, LogLevel: "info"})
	for _, h := range tb.Hosts() {
		addPod(t, tb, h, "p")
	}
	out := output(t, tb, "host-1", "terracectl", "get", "node", "host-1", "-o", "json")
	var n map[string]any
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("decode node: %v: %s", err, out)
	}
	md := n["metadata"].(map[string]any)
	labels, _ := md["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels["route-reflector"] = "true"
	md["labels"] = labels
	spec := n["spec"].(map[string]any)
	spec["bgp"].(map[string]any)["routeReflectorClusterID"] = "224.0.0.1"
	nb, _ := json.Marshal(n)
	peer := `{"apiVersion":"terrace.dev/v1","kind":"BGPPeer","metadata":{"name":"rr-clients"},` +
		`"spec":{"nodeSelector":"!has(route-reflector)","peerSelector":"has(route-reflector)"}}`
	h1, _ := tb.Host("host-1")
	for name, body := range map[string]string{"node.json": string(nb), "peer.json": peer} {
		path := filepath.Join(h1.Dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		output(t, tb, "host-1", "terracectl", "apply", "-f", path)
	}
	eventually(t, waitTimeout, func() string {
		st, ok := bgpStatus(t, tb, "host-1")
		if !ok {
			return "no bgp status on host-1"
		}
		clients := 0
		for _, p := range st.Peers {
			if p.Type == "rrclient" && p.State == "established" {
				clients++
			}
		}
		if clients != 2 {
			return fmt.Sprintf("reflector has %d established clients, want 2: %+v", clients, st.Peers)
		}
		return ""
	})
	for _, h := range []string{"host-2", "host-3"} {
		eventually(t, waitTimeout, func() string {
			st, ok := bgpStatus(t, tb, h)
			if !ok {
				return "no bgp status on " + h
			}
			for _, p := range st.Peers {
				// The other client's block and the reflector's arrive through the reflector.
				if p.Type == "reflector" && p.State == "established" && p.Accepted >= 2 {
					return ""
				}
			}
			return fmt.Sprintf("%s has no established reflector session with 2 accepted prefixes: %+v", h, st.Peers)
		})
	}
	pods := tb.Pods()
	if err := ping(tb, "host-2/p", pods[2].IPv4, 2); err != nil {
		t.Errorf("ping host-2/p -> host-3/p: %v", err)
	}
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// TestGracefulRestart: while terrace-node on host-1 stops and starts again, its routes stay in
// its own kernel and in host-2's (the peer keeps them as graceful-restart helper), and a stream
// of pings between pods on the two hosts goes on.
func TestGracefulRestart(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	ctx := context.Background()
	p1 := addPod(t, tb, "host-1", "p")
	p2 := addPod(t, tb, "host-2", "p")
	b1, b2 := blockOf(t, p1.IPv4), blockOf(t, p2.IPv4)
	eventually(t, waitTimeout, func() string {
		if _, ok := kernelRoutes(t, tb, "host-1", "4")[b2]; !ok {
			return "host-1 lacks " + b2
		}
		if _, ok := kernelRoutes(t, tb, "host-2", "4")[b1]; !ok {
			return "host-2 lacks " + b1
		}
		return ""
	})
	ns, err := tb.Namespace("host-2/p")
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pinger := exec.CommandContext(pctx, "ip", "netns", "exec", ns, "ping", "-c", "100", "-i", "0.1", "-W", "1", p1.IPv4)
	var pout strings.Builder
	pinger.Stdout, pinger.Stderr = &pout, &pout
	if err := pinger.Start(); err != nil {
		t.Fatal(err)
	}
	// A long TCP flow through host-1, which felix's fast path carries (until terrace-node stops,
	// when its links close and the kernel takes the flow, then again after the restart).
	flow := startStream(t, tb, "host-1/p", p1.IPv4, 7070, "host-2/p")
	time.Sleep(time.Second)
	if n, why := fastPathForwarded(t, tb, "host-1"); n == 0 {
		t.Errorf("host-1's fast path forwarded nothing of an established TCP flow to its pod %s", why)
	}
	if err := tb.StopNode(ctx, "host-1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if _, ok := kernelRoutes(t, tb, "host-1", "4")[b2]; !ok {
		t.Errorf("host-1's learned route %s went away while terrace-node was stopped", b2)
	}
	if _, ok := kernelRoutes(t, tb, "host-2", "4")[b1]; !ok {
		t.Errorf("host-2 dropped host-1's block %s while host-1 restarted (no graceful restart)", b1)
	}
	if err := tb.StartNode(ctx, "host-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() string {
		st, ok := bgpStatus(t, tb, "host-1")
		if !ok || !st.Restarting {
			return fmt.Sprintf("host-1 did not come back as a graceful restart: %+v", st)
		}
		for _, p := range st.Peers {
			if p.Type == "mesh" && p.State == "established" {
				return ""
			}
		}
		return fmt.Sprintf("host-1's mesh session is not back: %+v", st.Peers)
	})
	// The restarted felix's fast path takes the flow over: its counters start again from 0.
	eventually(t, waitTimeout, func() string {
		if n, why := fastPathForwarded(t, tb, "host-1"); n == 0 {
			return "the restarted host-1's fast path has not forwarded any of the flow " + why
		}
		return ""
	})
	before := flow.received.Load()
	time.Sleep(time.Second)
	if after := flow.received.Load(); after-before < 50<<10 {
		t.Errorf("the TCP flow across host-1's restart carried %d bytes in the second after it, want about 200 KiB", after-before)
	}
	if err := flow.close(); err != nil {
		t.Errorf("the TCP flow through host-1 broke across its restart: %v", err)
	}
	_ = pinger.Wait()
	m := pingSummary.FindStringSubmatch(pout.String())
	if m == nil {
		t.Fatalf("no ping summary:\n%s", pout.String())
	}
	sent, _ := strconv.Atoi(m[1])
	got, _ := strconv.Atoi(m[2])
	if sent-got > 2 {
		t.Errorf("pings across the restart: %d of %d answered, want at most 2 lost", got, sent)
	}
	if _, ok := kernelRoutes(t, tb, "host-2", "4")[b1]; !ok {
		t.Errorf("host-2 lacks %s after host-1 came back", b1)
	}
}

// TestMD5: sessions to a BIRD ToR that requires a TCP MD5 password come up with the password the
// BGPPeer names through a node-local secret file, which never appears in status or logs.
func TestMD5(t *testing.T) {
	const secret = "trc-md5-Secret"
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, BGPPassword: secret, LogLevel: "debug"})
	pods := []testbed.PodState{addPod(t, tb, "host-1", "p"), addPod(t, tb, "host-2", "p")}
	eventually(t, waitTimeout, func() string {
		ss, err := tb.TorSessions(context.Background(), "tor-1")
		if err != nil {
			return err.Error()
		}
		up := 0
		for _, s := range ss {
			if s.Info == "Established" {
				up++
			}
		}
		if up != 2 {
			return fmt.Sprintf("tor-1 has %d established sessions, want 2: %+v", up, ss)
		}
		return ""
	})
	out, _ := tb.TorRoutes(context.Background(), "tor-1")
	for _, p := range pods {
		if b := blockOf(t, p.IPv4); !strings.Contains(out, b) {
			t.Errorf("tor-1 lacks %s over the MD5 session:\n%s", b, out)
		}
	}
	// A wrong password on host-1 (its secret file changed, the BGPPeer touched so the agent reads
	// it again): that session never comes up, and host-2's is unaffected.
	const wrong = "trc-md5-Wrong"
	h1, _ := tb.Host("host-1")
	torAddr := netip.MustParseAddr(strings.Split(h1.Uplinks[0].TorAddr, "/")[0])
	secretFile := filepath.Join(h1.StateDir, "secrets", "bgp", "tor")
	if err := os.WriteFile(secretFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	touch := func(label string) {
		doc := fmt.Sprintf("apiVersion: terrace.dev/v1\nkind: BGPPeer\nmetadata: {name: host-1-tor-1, labels: {try: %s}}\n"+
			"spec: {node: host-1, peerIP: %q, asNumber: %d, sourceAddress: None, password: {secretKeyRef: {name: bgp, key: tor}}}\n",
			label, torAddr, testbed.DefaultTorAS)
		path := filepath.Join(h1.Dir, "peer-"+label+".yaml")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		output(t, tb, "host-1", "terracectl", "apply", "-f", path)
	}
	touch("wrong")
	torState := func() map[string]string {
		ss, _ := tb.TorSessions(context.Background(), "tor-1")
		m := map[string]string{}
		for _, s := range ss {
			m[s.Name] = s.Info
		}
		return m
	}
	eventually(t, waitTimeout, func() string {
		st, ok := bgpStatus(t, tb, "host-1")
		if !ok {
			return "no bgp status on host-1" // not an answer: the session may still be up
		}
		seen := false
		for _, p := range st.Peers {
			if p.Address == torAddr {
				seen = true
				if p.State == "established" {
					return "host-1's ToR session still established with the wrong password"
				}
			}
		}
		if !seen {
			return "no status line for host-1's ToR session"
		}
		return ""
	})
	time.Sleep(3 * time.Second) // connection attempts with the wrong signature run meanwhile
	if st := torState(); st["host_2"] != "Established" || st["host_1"] == "Established" {
		t.Errorf("tor-1 sessions with host-1 on a wrong password: %v; want host_1 down, host_2 established", st)
	}
	st, _ := bgpStatus(t, tb, "host-1")
	for _, p := range st.Peers {
		if p.Address == torAddr {
			t.Logf("host-1's ToR peer with the wrong password: state %s, last error %q", p.State, p.LastError)
			if !strings.Contains(p.LastError, "MD5") {
				t.Errorf("status of a session failing on its password does not point at MD5: %q", p.LastError)
			}
		}
	}
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	touch("right")
	eventually(t, waitTimeout, func() string {
		if st := torState(); st["host_1"] != "Established" {
			return fmt.Sprintf("host-1's session did not come back with the right password: %v", st)
		}
		return ""
	})
	for _, h := range tb.Hosts() {
		hs, _ := tb.Host(h)
		logs, _ := os.ReadFile(hs.LogFile)
		status := output(t, tb, h, "terracectl", "node", "status", "-o", "json")
		for _, pw := range []string{secret, wrong} {
			if strings.Contains(string(logs), pw) || strings.Contains(status, pw) {
				t.Errorf("%s leaks a BGP password in its log or status", h)
			}
		}
	}
}

// TestRequestedAddress: a pod that asks for an address in another host's block (pod add --ip,
// the runtime's "ips" capability argument) gets it, its host advertises it as a borrowed /32 that
// the owner of the block and the ToR learn, and it is reachable both ways. A second pod asking for
// the same address is refused with the reason and leaves nothing behind; deleting the first pod
// withdraws the /32.
func TestRequestedAddress(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	ctx := context.Background()
	owner := addPod(t, tb, "host-2", "b")
	want := netip.MustParseAddr(owner.IPv4)
	for range 7 {
		want = want.Next()
	}
	if blockOf(t, want.String()) != blockOf(t, owner.IPv4) {
		t.Fatalf("test set-up: %s is not in host-2's block %s", want, blockOf(t, owner.IPv4))
	}
	p, err := tb.AddPod(ctx, testbed.PodSpec{Host: "host-1", Name: "static", IPs: []netip.Addr{want}})
	if err != nil {
		t.Fatalf("add pod asking for %s: %v", want, err)
	}
	if p.IPv4 != want.String() {
		t.Fatalf("pod asking for %s got %q", want, p.IPv4)
	}
	addr := want.String()
	eventually(t, waitTimeout, func() string {
		if _, ok := kernelRoutes(t, tb, "host-2", "4")[addr]; !ok {
			return fmt.Sprintf("host-2 (owner of %s) has no /32 route for %s: %v", blockOf(t, addr), addr, kernelRoutes(t, tb, "host-2", "4"))
		}
		if out, _ := tb.TorRoutes(ctx, "tor-1"); !strings.Contains(out, addr+"/32") {
			return fmt.Sprintf("tor-1 lacks %s/32:\n%s", addr, out)
		}
		return ""
	})
	if err := ping(tb, "host-2/b", addr, 2); err != nil {
		t.Errorf("host-2/b cannot reach the requested address %s on host-1: %v", addr, err)
	}
	if err := ping(tb, "host-1/static", owner.IPv4, 2); err != nil {
		t.Errorf("host-1/static (%s) cannot reach host-2/b: %v", addr, err)
	}

	_, err = tb.AddPod(ctx, testbed.PodSpec{Host: "host-2", Name: "dup", IPs: []netip.Addr{want}})
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second pod asking for %s: err = %v, want one saying it is already in use", addr, err)
	}
	for _, pod := range tb.Pods() {
		if pod.Name == "dup" {
			t.Errorf("refused pod recorded: %+v", pod)
		}
	}
	if out := output(t, tb, "host-2", "ip", "-o", "link", "show"); strings.Count(out, "trc") != 1 {
		t.Errorf("host-2 should have one workload interface after the refused pod:\n%s", out)
	}

	if err := tb.DelPod(ctx, "host-1", "static"); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() string {
		if r, ok := kernelRoutes(t, tb, "host-2", "4")[addr]; ok {
			return "host-2 still routes the deleted pod's " + addr + ": " + r
		}
		return ""
	})
}

// TestBorrowedAddress: a host that may own only one block and has filled it borrows an address
// from another host's block; it advertises that address as a /32, which wins over the owner's
// block route everywhere (the owner included) and reaches the pod.
func TestBorrowedAddress(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	h1, _ := tb.Host("host-1")
	pools := `---
apiVersion: terrace.dev/v1
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 198.18.0.0/24, blockSize: 30, ipipMode: Never, vxlanMode: Never, natOutgoing: false}
`
	path := filepath.Join(h1.Dir, "tiny-pool.yaml")
	if err := os.WriteFile(path, []byte(pools), 0o644); err != nil {
		t.Fatal(err)
	}
	output(t, tb, "host-1", "terracectl", "delete", "ippool", "default-ipv4-ippool")
	output(t, tb, "host-1", "terracectl", "apply", "-f", path)
	output(t, tb, "host-1", "terracectl", "ipam", "configure", "--max-blocks-per-host", "1")

	owner := addPod(t, tb, "host-2", "b")
	ownerBlock := netip.PrefixFrom(netip.MustParseAddr(owner.IPv4), 30).Masked()
	var borrowed testbed.PodState
	for i := 1; i <= 5; i++ {
		p := addPod(t, tb, "host-1", fmt.Sprintf("a%d", i))
		if ownerBlock.Contains(netip.MustParseAddr(p.IPv4)) {
			borrowed = p
			break
		}
	}
	if borrowed.Name == "" {
		t.Fatalf("no pod on host-1 borrowed from host-2's block %s: %+v", ownerBlock, tb.Pods())
	}
	addr := borrowed.IPv4
	eventually(t, waitTimeout, func() string {
		_, ok := kernelRoutes(t, tb, "host-2", "4")[addr]
		if !ok {
			return fmt.Sprintf("host-2 (owner of %s) has no /32 route for borrowed %s: %v", ownerBlock, addr, kernelRoutes(t, tb, "host-2", "4"))
		}
		out, _ := tb.TorRoutes(context.Background(), "tor-1")
		if !strings.Contains(out, addr+"/32") {
			return fmt.Sprintf("tor-1 lacks %s/32:\n%s", addr, out)
		}
		return ""
	})
	if err := ping(tb, "host-2/b", addr, 2); err != nil {
		t.Errorf("owner's pod cannot reach the borrowed address %s on host-1: %v", addr, err)
	}
}

// TestBGPFilter: a BGPFilter on host-1's ToR session keeps one of host-1's blocks from the ToR
// (export: traffic to it through the ToR then stops) and the ToR's injected routes out of
// host-1's kernel (import), while host-2, whose session names no filter, is unaffected and the
// session stays up throughout; taking the filter off brings both back.
func TestBGPFilter(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	ctx := context.Background()
	a, b := addPod(t, tb, "host-1", "a"), addPod(t, tb, "host-2", "b")
	blockA, blockB := blockOf(t, a.IPv4), blockOf(t, b.IPv4)
	injected, err := testbed.InjectPrefixes(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.InjectTorRoutes(ctx, "tor-1", injected); err != nil {
		t.Fatal(err)
	}
	inj := injected[0].Addr().String() // ip route prints a /32 without its length
	state := func(wantA bool, wantInjected bool) func() string {
		return func() string {
			out, _ := tb.TorRoutes(ctx, "tor-1")
			if strings.Contains(out, blockA) != wantA || !strings.Contains(out, blockB) {
				return fmt.Sprintf("tor-1 routes (want %s: %v, %s: true):\n%s", blockA, wantA, blockB, out)
			}
			if _, ok := kernelRoutes(t, tb, "host-1", "4")[inj]; ok != wantInjected {
				return fmt.Sprintf("host-1 has the injected %s: %v, want %v", inj, ok, wantInjected)
			}
			if _, ok := kernelRoutes(t, tb, "host-2", "4")[inj]; !ok {
				return "host-2 lacks the injected " + inj
			}
			return ""
		}
	}
	eventually(t, waitTimeout, state(true, true))
	since := func() string {
		ss, _ := tb.TorSessions(ctx, "tor-1")
		for _, s := range ss {
			if s.Name == "host_1" && s.Info == "Established" {
				return s.Since
			}
		}
		return ""
	}
	before := since()

	h1, _ := tb.Host("host-1")
	torAddr := strings.Split(h1.Uplinks[0].TorAddr, "/")[0]
	apply := func(name, filters string) {
		doc := fmt.Sprintf(`apiVersion: terrace.dev/v1
kind: BGPFilter
metadata: {name: edge}
spec:
  exportV4:
  - {action: Reject, matchOperator: Equal, cidr: %s}
  importV4:
  - {action: Reject, matchOperator: In, cidr: 198.18.64.0/24, prefixLength: {min: 32}}
---
apiVersion: terrace.dev/v1
kind: BGPPeer
metadata: {name: host-1-tor-1}
spec: {node: host-1, peerIP: %q, asNumber: %d, sourceAddress: None, filters: %s}
`, blockA, torAddr, testbed.DefaultTorAS, filters)
		path := filepath.Join(h1.Dir, name+".yaml")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		output(t, tb, "host-1", "terracectl", "apply", "-f", path)
	}
	apply("filter-on", "[edge]")
	eventually(t, waitTimeout, state(false, false))
	// Hosts reach each other only through the ToR, a router: without blockA it drops the traffic.
	if err := ping(tb, "host-2/b", a.IPv4, 2); err == nil {
		t.Errorf("host-2/b reaches %s although tor-1 was not told where it is", a.IPv4)
	}
	apply("filter-off", "[]")
	eventually(t, waitTimeout, state(true, true))
	if err := ping(tb, "host-2/b", a.IPv4, 2); err != nil {
		t.Errorf("host-2/b cannot reach %s once the filter is off: %v", a.IPv4, err)
	}
	if after := since(); before == "" || after != before {
		t.Errorf("host-1's ToR session was reset by filter changes: established since %q, then %q", before, after)
	}
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terracenet/terrace/testbed"
)

const (
	// resync is the felix resync interval the fault tests run with, so a repair is quick to see.
	resync = 3 * time.Second
	// backendPolicy lets only frontends reach backends, on TCP 7777.
	backendPolicy = `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: backend-ingress}
spec:
  selector: role == 'backend'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'frontend'}
    destination: {ports: [7777]}
`
	backendExpect = `
*          */be  *    blocked
*/fe       */be  tcp  reachable
`
)

// TestFelixTamperRepaired: with the resync interval at 3 s, a third party flushing a trc- chain,
// deleting the jump into Terrace's chains, flushing Terrace's ipsets and deleting a workload route
// (the real tools, inside the host's namespace) sees all of it repaired within about one interval,
// and the policy matrix is as before.
func TestFelixTamperRepaired(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info",
		NodeArgs: []string{"--felix-resync-interval", resync.String()}})
	felixPod(t, tb, "host-1", "fe", "default", map[string]string{"role": "frontend"})
	felixPod(t, tb, "host-1", "other", "default", map[string]string{"role": "other"})
	be := felixPod(t, tb, "host-2", "be", "default", map[string]string{"role": "backend"})
	applyYAML(t, tb, "policy", backendPolicy)
	checkMatrix(t, tb, "before tampering", backendExpect, waitTimeout)

	b := iptOf(t, tb, "host-2")
	want := takeSnapshot(t, tb, "host-2", b)
	if !strings.Contains(want.sets, "add trc") || !strings.Contains(want.routes, be.IPv4) {
		t.Fatalf("host-2 holds no ipset members or no route to %s before tampering:\n%s\n%s", be.IPv4, want.sets, want.routes)
	}
	run := func(argv ...string) { output(t, tb, "host-2", argv...) }
	for _, l := range strings.Split(want.rules, "\n") {
		for _, kind := range []string{"trc-tw-", "trc-pl-"} {
			if c, ok := strings.CutPrefix(l, ":"+kind); ok {
				run(b.cmd, "-t", "filter", "-F", kind+strings.Fields(c)[0])
			}
		}
	}
	// With the endpoint chains and the policy lists flushed nothing references the policy
	// chains: delete them outright.
	deleted := 0
	for _, l := range strings.Split(want.rules, "\n") {
		if c, ok := strings.CutPrefix(l, ":trc-pi-"); ok {
			name := "trc-pi-" + strings.Fields(c)[0]
			run(b.cmd, "-t", "filter", "-F", name)
			if _, err := tb.Output(context.Background(), "host-2", b.cmd, "-t", "filter", "-X", name); err == nil {
				deleted++
			}
		}
	}
	if deleted == 0 {
		t.Fatalf("could not delete any trc-pi- chain on host-2:\n%s", want.rules)
	}
	fwd := output(t, tb, "host-2", b.cmd, "-t", "filter", "-S", "FORWARD")
	for _, l := range strings.Split(fwd, "\n") {
		if strings.Contains(l, "-j trc-FORWARD") {
			// Delete by rule number: the comment's quoting does not survive a naive split.
			n := ruleNumber(t, tb, b, "FORWARD", "trc-FORWARD")
			run(b.cmd, "-t", "filter", "-D", "FORWARD", n)
			break
		}
	}
	for _, l := range strings.Split(want.sets, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "create" {
			run("ipset", "flush", f[1])
		}
	}
	run("ip", "route", "del", be.IPv4+"/32")
	tampered := time.Now()
	got := takeSnapshot(t, tb, "host-2", b)
	if d := got.diff(want); !strings.Contains(d, "iptables") || !strings.Contains(d, "ipsets") || !strings.Contains(d, "routes") {
		t.Fatalf("tampering did not change everything it should (changed: %q)", d)
	}
	eventually(t, 2*resync+5*time.Second, func() string {
		if d := takeSnapshot(t, tb, "host-2", b).diff(want); d != "" {
			return "not repaired yet: " + d
		}
		return ""
	})
	t.Logf("repaired %s after tampering (resync interval %s)", time.Since(tampered).Round(100*time.Millisecond), resync)
	checkMatrix(t, tb, "after repair", backendExpect, policyWait)
}

// ruleNumber finds the position of the first rule in chain that jumps to target.
func ruleNumber(t *testing.T, tb *testbed.Testbed, b ipt, chain, target string) string {
	t.Helper()
	out := output(t, tb, "host-2", b.cmd, "-t", "filter", "-L", chain, "-n", "--line-numbers")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && f[1] == target {
			return f[0]
		}
	}
	t.Fatalf("no rule in %s jumps to %s:\n%s", chain, target, out)
	return ""
}

// TestFelixRestartNoGap: while terrace-node on the backend's host stops and starts again, a probe
// loop on the allowed flow (frontend to backend) never fails and one on the denied flow (other to
// backend) never gets through: felix leaves the dataplane as it is while it is down and changes
// nothing before it is in sync again.
func TestFelixRestartNoGap(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	felixPod(t, tb, "host-1", "fe", "default", map[string]string{"role": "frontend"})
	felixPod(t, tb, "host-1", "other", "default", map[string]string{"role": "other"})
	be := felixPod(t, tb, "host-2", "be", "default", map[string]string{"role": "backend"})
	applyYAML(t, tb, "policy", backendPolicy)
	checkMatrix(t, tb, "before restart", backendExpect, waitTimeout)
	listener(t, tb, "host-2/be", 7777)

	ctx, cancel := context.WithCancel(context.Background())
	type result struct{ ok, fail int }
	results := map[string]*result{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, from := range []string{"host-1/fe", "host-1/other"} {
		r := &result{}
		results[from] = r
		// One long-lived loop per flow: a process per probe would be too slow to see a short gap.
		// Each probe gets 0.9 s: room for bash's start on a loaded machine, yet shorter than the
		// first SYN retransmission (1 s), so a dropped SYN still counts as a failure.
		script := fmt.Sprintf(`while :; do if timeout 0.9 bash -c 'echo > /dev/tcp/%s/7777' 2>/dev/null; then echo ok; else echo fail; fi; sleep 0.05; done`, be.IPv4)
		cmd, err := tb.Command(ctx, from, "bash", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				mu.Lock()
				if sc.Text() == "ok" {
					r.ok++
				} else {
					r.fail++
				}
				mu.Unlock()
			}
			_ = cmd.Wait()
		}()
	}
	time.Sleep(time.Second)
	if err := tb.StopNode(ctx, "host-2"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := tb.StartNode(ctx, "host-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, func() string {
		out, err := tb.Output(context.Background(), "host-2", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9099/readiness")
		if err != nil || out != "200" {
			return fmt.Sprintf("felix on host-2 not ready after restart: %q %v", out, err)
		}
		return ""
	})
	time.Sleep(3 * time.Second) // the first applies after the restart happen here
	cancel()
	wg.Wait()
	allowed, denied := results["host-1/fe"], results["host-1/other"]
	t.Logf("allowed flow: %d ok, %d failed; denied flow: %d ok, %d failed", allowed.ok, allowed.fail, denied.ok, denied.fail)
	if allowed.ok < 20 {
		t.Fatalf("too few probes on the allowed flow to judge (%d)", allowed.ok)
	}
	if allowed.fail > 0 {
		t.Errorf("allowed flow failed %d of %d times across the restart", allowed.fail, allowed.ok+allowed.fail)
	}
	if denied.ok > 0 {
		t.Errorf("denied flow got through %d of %d times across the restart", denied.ok, denied.ok+denied.fail)
	}
}

// TestFelixNATOutgoing: with natOutgoing on the pool, a pod's connection to host-2's underlay
// address (outside every pool) arrives from host-1's address, while pod-to-pod keeps the pod's
// own address; without natOutgoing both keep it.
func TestFelixNATOutgoing(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	p := addPod(t, tb, "host-1", "p")
	q := addPod(t, tb, "host-2", "q")
	h1, _ := tb.Host("host-1")
	h2, _ := tb.Host("host-2")
	hostLog := listener(t, tb, "host-2", 9000)
	podLog := listener(t, tb, "host-2/q", 9001)
	peerOf := func(addr string, port int, log string) string {
		t.Helper()
		before := peerCount(log)
		eventually(t, waitTimeout, func() string {
			if tcpOpen(tb, "host-1/p", addr, port, time.Second) {
				return ""
			}
			return fmt.Sprintf("host-1/p cannot connect to %s:%d", addr, port)
		})
		// The connection succeeds before the listener has accepted it and written its peer:
		// read the log only once the line is there (else the last line is an older one).
		eventually(t, 5*time.Second, func() string {
			if peerCount(log) > before {
				return ""
			}
			return fmt.Sprintf("the listener on port %d logged no peer for the connection from host-1/p", port)
		})
		return lastPeer(log)
	}
	if got := peerOf(h2.IPv4, 9000, hostLog); got != p.IPv4 {
		t.Fatalf("without natOutgoing, host-2 sees the pod as %q, want its own address %s", got, p.IPv4)
	}

	out := output(t, tb, "host-1", "terracectl", "get", "ippool", "default-ipv4-ippool", "-o", "json")
	var pool map[string]any
	if err := json.Unmarshal([]byte(out), &pool); err != nil {
		t.Fatalf("decode pool: %v: %s", err, out)
	}
	pool["spec"].(map[string]any)["natOutgoing"] = true
	body, _ := json.Marshal(pool)
	path := filepath.Join(h1.Dir, "pool.json")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	output(t, tb, "host-1", "terracectl", "apply", "-f", path)

	h1Addrs := map[string]bool{h1.IPv4: true}
	for _, u := range h1.Uplinks {
		h1Addrs[u.HostAddr] = true
	}
	eventually(t, policyWait, func() string {
		if got := peerOf(h2.IPv4, 9000, hostLog); !h1Addrs[got] {
			return fmt.Sprintf("with natOutgoing, host-2 sees the pod as %q, want one of host-1's addresses %v", got, h1Addrs)
		}
		return ""
	})
	if got := peerOf(q.IPv4, 9001, podLog); got != p.IPv4 {
		t.Errorf("pod-to-pod with natOutgoing: the peer sees %q, want the pod's own address %s (no masquerade inside the pools)", got, p.IPv4)
	}
}

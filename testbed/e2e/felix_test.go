package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/testbed"
)

// policyWait bounds how long a policy change may take to show in the connectivity matrix: the
// write, the watch, one coalesced apply, plus the check's own probe timeouts.
const policyWait = 20 * time.Second

// TestFelixPolicyMatrix applies policies in stages on a three-host fabric and after each stage
// checks every pod pair (ICMP and TCP, within and across hosts) against the expected matrix. The
// stages add up, so each expectation repeats the earlier stages' lines: selectors and ports,
// NetworkPolicy and namespaceSelector, GlobalNetworkSet nets, order with Pass and Deny, egress.
func TestFelixPolicyMatrix(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 3, LogLevel: "info"})
	fe := felixPod(t, tb, "host-1", "fe", "default", map[string]string{"role": "frontend"})
	felixPod(t, tb, "host-1", "db", "default", map[string]string{"role": "db"})
	felixPod(t, tb, "host-2", "be", "default", map[string]string{"role": "backend"})
	felixPod(t, tb, "host-2", "ops", "ops", map[string]string{"role": "ops"})
	other := felixPod(t, tb, "host-3", "other", "default", map[string]string{"role": "other"})

	// No policy: every endpoint is open (Kubernetes-style isolation starts with the first policy).
	expect := "* * * reachable\n"
	checkMatrix(t, tb, "no policy", expect, waitTimeout)

	// Selectors and ports. backend: TCP only from frontends and only on a port range holding the
	// probe port, ICMP from anyone; db: only TCP 8080, so the probe port and ICMP are closed.
	applyYAML(t, tb, "stage-ports", `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: backend-ingress}
spec:
  order: 100
  selector: role == 'backend'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'frontend'}
    destination: {ports: ["7000:7800"]}
  - action: Allow
    protocol: ICMP
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-ingress}
spec:
  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [8080]}
`)
	expect += `
*          host-2/be  tcp  blocked
host-1/fe  host-2/be  tcp  reachable
*          host-1/db  *    blocked
`
	checkMatrix(t, tb, "selectors and ports", expect, policyWait)

	// Namespaces: a NetworkPolicy in ops admits only frontends of the default namespace; the
	// namespaced policy selects nothing outside ops.
	applyYAML(t, tb, "stage-namespaces", `
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ops-ingress, namespace: ops}
spec:
  selector: all()
  types: [Ingress]
  ingress:
  - action: Allow
    source:
      namespaceSelector: projectcalico.org/name == 'default'
      selector: role == 'frontend'
`)
	expect += `
*          host-2/ops  *  blocked
host-1/fe  host-2/ops  *  reachable
`
	checkMatrix(t, tb, "namespaces", expect, policyWait)

	// Nets: a GlobalNetworkSet of two pod addresses, selected by label in a db rule.
	applyYAML(t, tb, "stage-nets", fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: trusted
  labels: {trust: "yes"}
spec:
  nets: [%s/32, %s/32]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-trusted}
spec:
  order: 200
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: trust == 'yes'}
`, fe.IPv4, other.IPv4))
	expect += `
host-1/fe     host-1/db  *  reachable
host-3/other  host-1/db  *  reachable
`
	checkMatrix(t, tb, "global network set", expect, policyWait)

	// Order, Pass and Deny on "other": order 5 allows ICMP from db before order 10 denies db;
	// frontends are passed at order 10 and so escape order 20's Deny (after a Pass the profile
	// stage allows); ops is denied at 10; the rest is allowed at 20.
	applyYAML(t, tb, "stage-order", `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: other-20}
spec:
  order: 20
  selector: role == 'other'
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: role == 'frontend'}
  - action: Allow
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: other-10}
spec:
  order: 10
  selector: role == 'other'
  types: [Ingress]
  ingress:
  - action: Pass
    source: {selector: role == 'frontend'}
  - action: Deny
    source: {namespaceSelector: projectcalico.org/name == 'ops'}
  - action: Deny
    source: {selector: role == 'db'}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: other-5}
spec:
  order: 5
  selector: role == 'other'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: ICMP
    source: {selector: role == 'db'}
`)
	expect += `
host-2/ops  host-3/other  *    blocked
host-1/db   host-3/other  tcp  blocked
`
	checkMatrix(t, tb, "order, pass and deny", expect, policyWait)

	// Egress: frontends may not ping backends; everything else they send is allowed.
	applyYAML(t, tb, "stage-egress", `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: frontend-egress}
spec:
  selector: role == 'frontend'
  types: [Egress]
  egress:
  - action: Deny
    protocol: ICMP
    destination: {selector: role == 'backend'}
  - action: Allow
`)
	expect += `
host-1/fe  host-2/be  icmp  blocked
`
	checkMatrix(t, tb, "egress", expect, policyWait)

	// Removing the Pass makes order 20's Deny reach frontends: the Pass was what let them in.
	output(t, tb, "host-1", "terracectl", "delete", "globalnetworkpolicy", "other-10")
	expect += `
host-1/fe   host-3/other  *    blocked
host-2/ops  host-3/other  *    reachable
host-1/db   host-3/other  tcp  reachable
`
	checkMatrix(t, tb, "pass removed", expect, policyWait)
}

// TestFelixHostEndpointFailsafe: a HostEndpoint on host-1's uplink with a deny-all ingress policy
// closes the host to everything except the failsafe ports: SSH (TCP 22) still answers from
// host-2, a listener on another port does not, and host-1's BGP sessions stay up.
func TestFelixHostEndpointFailsafe(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	h1, err := tb.Host("host-1")
	if err != nil {
		t.Fatal(err)
	}
	listener(t, tb, "host-1", 22)
	listener(t, tb, "host-1", 7777)
	p1 := addPod(t, tb, "host-1", "p")
	addPod(t, tb, "host-2", "p")
	for _, port := range []int{22, 7777} {
		if !tcpOpen(tb, "host-2", h1.IPv4, port, 2*time.Second) {
			t.Fatalf("before any host endpoint, host-2 cannot reach host-1 %s:%d", h1.IPv4, port)
		}
	}
	applyYAML(t, tb, "hep", fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: host-1-uplink
  labels: {hep: uplink}
spec:
  node: host-1
  interfaceName: %s
  expectedIPs: [%s]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hep-deny-all}
spec:
  selector: hep == 'uplink'
  types: [Ingress]
  ingress:
  - action: Deny
`, h1.Uplinks[0].HostIf, h1.IPv4))
	// A connection that merely timed out on a loaded machine must not pass for the policy: the
	// port must fail twice in a row while the failsafe port answers in between.
	eventually(t, policyWait, func() string {
		if tcpOpen(tb, "host-2", h1.IPv4, 7777, time.Second) {
			return "host-1:7777 still reachable through the deny-all host endpoint"
		}
		if !tcpOpen(tb, "host-2", h1.IPv4, 22, 2*time.Second) {
			return "failsafe TCP 22 on host-1 not answering"
		}
		if tcpOpen(tb, "host-2", h1.IPv4, 7777, time.Second) {
			return "host-1:7777 still reachable through the deny-all host endpoint"
		}
		return ""
	})
	for i := 0; i < 3; i++ {
		if !tcpOpen(tb, "host-2", h1.IPv4, 22, 2*time.Second) {
			t.Fatalf("failsafe TCP 22 on host-1 closed by a deny-all host endpoint policy")
		}
	}
	if err := ping(tb, "host-2", h1.IPv4, 1); err == nil {
		t.Errorf("host-2 can still ping host-1 through the deny-all host endpoint")
	}
	// BGP (failsafe 179) keeps working: a fresh pod's block still reaches the other host.
	if err := ping(tb, "host-2/p", p1.IPv4, 2); err != nil {
		t.Errorf("pod traffic across hosts broke under the host endpoint policy: %v", err)
	}
	st, ok := bgpStatus(t, tb, "host-1")
	if !ok {
		t.Fatal("no bgp status on host-1")
	}
	est := 0
	for _, p := range st.Peers {
		if p.State == "established" {
			est++
		}
	}
	if est == 0 {
		t.Errorf("host-1 has no established BGP session under the host endpoint policy: %+v", st.Peers)
	}
}

// TestFelixUDPPorts: UDP port rules (a single port and a range, rendered with multiport) admit
// exactly their ports; a UDP echo on a third port answers before the policy and not after.
func TestFelixUDPPorts(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	felixPod(t, tb, "host-1", "c", "default", map[string]string{"role": "client"})
	s := felixPod(t, tb, "host-2", "s", "default", map[string]string{"role": "udp-server"})
	ports := []int{5353, 6005, 7000}
	udpEcho(t, tb, "host-2/s", ports)
	answers := func() map[int]bool {
		got := map[int]bool{}
		for _, p := range ports {
			got[p] = udpAnswers(tb, "host-1/c", s.IPv4, p)
		}
		return got
	}
	eventually(t, waitTimeout, func() string {
		if got := answers(); !got[5353] || !got[6005] || !got[7000] {
			return fmt.Sprintf("before any policy, UDP echo answers %v, want all", got)
		}
		return ""
	})
	applyYAML(t, tb, "udp", `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: udp-server}
spec:
  selector: role == 'udp-server'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: UDP
    destination: {ports: [5353]}
  - action: Allow
    protocol: UDP
    destination: {ports: ["6000:6010"]}
`)
	eventually(t, policyWait, func() string {
		if got := answers(); !got[5353] || !got[6005] || got[7000] {
			return fmt.Sprintf("with the UDP policy, echo answers %v, want 5353 and 6005 only", got)
		}
		return ""
	})
}

// TestSpoofedSourceDropped: a pod that takes another pod's address and sends from it is stopped
// at its own host, over IPv4 (strict rp_filter on the workload interface) and IPv6 (rpfilter in
// the raw table), so it cannot pass for that pod in policy anywhere. Counted at the destination
// pod: its own address gets through, the borrowed one never arrives.
func TestSpoofedSourceDropped(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, IPv6: true, LogLevel: "info"})
	p := addPod(t, tb, "host-1", "p")
	q := addPod(t, tb, "host-1", "q")
	r := addPod(t, tb, "host-2", "r")
	for _, fam := range []struct {
		name, ipt, save, proto, bits string
		own, borrowed, dst           string
		ping                         []string
	}{
		{"IPv4", "iptables", "iptables-save", "icmp", "/32", p.IPv4, q.IPv4, r.IPv4, []string{"ping", "-4"}},
		{"IPv6", "ip6tables", "ip6tables-save", "ipv6-icmp", "/128", p.IPv6, q.IPv6, r.IPv6, []string{"ping", "-6"}},
	} {
		t.Run(fam.name, func(t *testing.T) {
			for _, src := range []string{fam.own, fam.borrowed} {
				output(t, tb, "host-2/r", fam.ipt, "-I", "INPUT", "-p", fam.proto, "-s", src)
			}
			arrived := func(src string) int {
				// *-save -c prints "[packets:bytes] -A INPUT -s ADDR/LEN -p PROTO".
				out := output(t, tb, "host-2/r", fam.save, "-c", "-t", "filter")
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, "-A INPUT -s "+src+fam.bits+" ") && strings.HasPrefix(line, "[") {
						n, err := strconv.Atoi(line[1:strings.Index(line, ":")])
						if err != nil {
							t.Fatalf("read counter in %q: %v", line, err)
						}
						return n
					}
				}
				t.Fatalf("no counting rule for %s in r's INPUT:\n%s", src, out)
				return 0
			}
			eventually(t, waitTimeout, func() string {
				args := append(slices.Clone(fam.ping), "-c", "1", "-W", "2", fam.dst)
				if out, err := tb.Output(context.Background(), "host-1/p", args...); err != nil {
					return fmt.Sprintf("p cannot reach r from its own address: %v %s", err, out)
				}
				return ""
			})
			if arrived(fam.own) == 0 {
				t.Fatal("r counted nothing from p's own address: the counter does not work")
			}
			output(t, tb, "host-1/p", "ip", "addr", "add", fam.borrowed+fam.bits, "dev", "eth0", "nodad")
			// The replies would go to q, so ping fails either way; the counter at r tells.
			args := append(slices.Clone(fam.ping), "-c", "3", "-i", "0.2", "-W", "1", "-I", fam.borrowed, fam.dst)
			_, _ = tb.Output(context.Background(), "host-1/p", args...)
			if n := arrived(fam.borrowed); n != 0 {
				t.Errorf("%d packets from p with q's address %s reached r on another host", n, fam.borrowed)
			}
		})
	}
}

// TestFelixHostEndpointVerdicts: what Terrace's verdicts mean to the rest of a host's firewall,
// with a foreign rule in host-1's INPUT chain (appended after Terrace's jump, as another tool
// would) that drops TCP 7777. A host endpoint policy allowing 7777 ACCEPTs it, so the foreign
// rule never sees it; iptablesFilterDenyAction Reject turns the policy's drop of 8888 into a
// refusal; iptablesFilterAllowAction Return, and chainInsertMode Append (Terrace's jump below the
// foreign rule), each hand 7777 to the foreign rule; back to the defaults it is open again. The
// host endpoint is given by its address alone (no interfaceName): felix places it on the
// interface that holds the address.
func TestFelixHostEndpointVerdicts(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 2, LogLevel: "info"})
	h1, err := tb.Host("host-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{22, 7777, 8888} {
		listener(t, tb, "host-1", port)
	}
	b := iptOf(t, tb, "host-1")
	output(t, tb, "host-1", b.cmd, "-A", "INPUT", "-p", "tcp", "--dport", "7777", "-j", "DROP")
	reach := func(port int) string { return tcpConnect(tb, "host-2", h1.IPv4, port, time.Second) }
	eventually(t, policyWait, func() string {
		if got := reach(8888); got != "open" {
			return "before any host endpoint, 8888 is " + got
		}
		return ""
	})
	if got := reach(7777); got == "open" {
		t.Fatalf("the foreign DROP for 7777 does not work before any host endpoint: %s", got)
	}
	applyYAML(t, tb, "hep", fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: host-1-uplink
  labels: {hep: uplink}
spec:
  node: host-1
  expectedIPs: [%s]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hep-allow-7777}
spec:
  selector: hep == 'uplink'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [7777]}
`, h1.IPv4))
	// blocked: never open, twice, with the failsafe port answering in between, so a loaded
	// machine's slow connect cannot pass for the policy.
	blocked := func(port int) string {
		for i := range 2 {
			if got := reach(port); got == "open" {
				return fmt.Sprintf("%d is open", port)
			}
			if i == 0 && reach(22) != "open" {
				return "failsafe 22 not answering"
			}
		}
		return ""
	}
	inputRules := func() string {
		var input []string
		for _, l := range strings.Split(output(t, tb, "host-1", b.save, "-t", "filter"), "\n") {
			if strings.HasPrefix(l, "-A INPUT ") {
				input = append(input, l)
			}
		}
		return strings.Join(input, "\n")
	}
	step := func(name string, want7777 bool, want8888 string) {
		t.Helper()
		eventually(t, policyWait, func() string {
			if want7777 {
				if got := reach(7777); got != "open" {
					return fmt.Sprintf("%s: 7777 is %s, want open", name, got)
				}
			} else if msg := blocked(7777); msg != "" {
				return name + ": " + msg + "; INPUT:\n" + inputRules()
			}
			if got := reach(8888); got != want8888 {
				return fmt.Sprintf("%s: 8888 is %s, want %s", name, got, want8888)
			}
			return ""
		})
	}
	step("host endpoint allows 7777 (ACCEPT, before the foreign DROP)", true, "timeout")
	felixCfg := func(spec string) {
		applyYAML(t, tb, "felixcfg", "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: "+spec+"\n")
	}
	felixCfg("{iptablesFilterDenyAction: Reject}")
	step("deny action Reject", true, "refused")
	felixCfg("{iptablesFilterDenyAction: Reject, iptablesFilterAllowAction: Return}")
	step("allow action Return (the foreign DROP sees 7777)", false, "refused")
	felixCfg("{iptablesFilterDenyAction: Reject, chainInsertMode: Append}")
	step("chainInsertMode Append (the foreign DROP comes first)", false, "refused")
	if input := strings.Split(inputRules(), "\n"); len(input) < 2 || !strings.Contains(input[len(input)-1], "-j trc-INPUT") || !strings.Contains(input[0], "--dport 7777 -j DROP") {
		t.Errorf("with chainInsertMode Append, INPUT should hold the foreign rule then Terrace's jump:\n%s", strings.Join(input, "\n"))
	}
	felixCfg("{}")
	step("defaults again", true, "timeout")
}

// tcpConnect tries one TCP connection and says how it ended: "open", "refused" (an RST or an
// ICMP port unreachable, as REJECT sends), "timeout", or "error <errno>".
func tcpConnect(tb *testbed.Testbed, target, addr string, port int, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	script := fmt.Sprintf(`import socket
s = socket.socket()
s.settimeout(%g)
try:
    s.connect((%q, %d))
    print("open")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
`, timeout.Seconds(), addr, port)
	out, err := tb.Output(ctx, target, "python3", "-c", script)
	if err != nil {
		return "error " + err.Error()
	}
	return strings.TrimSpace(out)
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/testbed"
)

const demoPolicy = `apiVersion: terrace.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: backend-ingress
spec:
  selector: role == 'backend'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports: [8080]
`

// The demo's intent: everything reaches the frontends; the backends take TCP 8080 from frontends only.
const demoExpect = `*      *      *    reachable
*      */be-* *    blocked
*/fe-* */be-* tcp  reachable
`

func newDemoCmd(e *env) *cobra.Command {
	var hosts int
	c := &cobra.Command{
		Use:   "demo",
		Short: "Build a 3-host fabric with two pods per host and a policy, and show it (make demo)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), e, cmd.OutOrStdout(), hosts)
		},
	}
	c.Flags().IntVar(&hosts, "hosts", 3, "number of hosts")
	return c
}

func section(w io.Writer, title string) { fmt.Fprintf(w, "\n=== %s ===\n", title) }

func runDemo(ctx context.Context, e *env, w io.Writer, hosts int) error {
	self, _ := os.Executable()
	fmt.Fprintln(w, "Tearing down any earlier testbed, then building a new one ...")
	if err := testbed.Down(ctx, e.stateDir, e.prefix, e.log); err != nil {
		return err
	}
	tb, err := testbed.Up(ctx, testbed.Options{Hosts: hosts, StateDir: e.stateDir, Prefix: e.prefix,
		BinDir: e.binDir, LogLevel: e.logLevel, Logger: e.log})
	if err != nil {
		return err
	}
	if err := printUp(w, tb); err != nil {
		return err
	}

	section(w, "pods (two per host)")
	for _, h := range tb.Hosts() {
		n := strings.TrimPrefix(h, "host-")
		for _, p := range []testbed.PodSpec{
			{Host: h, Name: "fe-" + n, Labels: map[string]string{"role": "frontend"}},
			{Host: h, Name: "be-" + n, Labels: map[string]string{"role": "backend"}},
		} {
			if _, err := tb.AddPod(ctx, p); err != nil {
				return err
			}
		}
	}
	printPods(w, tb.Pods())
	if !tb.CNIAvailable(ctx) {
		fmt.Fprintln(w, "NOT BUILT YET: terrace-cni does not answer VERSION, so the testbed wired these pods itself")
		fmt.Fprintln(w, "  (no IPAM, no WorkloadEndpoints: policy cannot select them and BGP does not advertise them).")
	}

	section(w, "policy: frontends may reach backends on TCP 8080, nothing else reaches backends")
	fmt.Fprint(w, demoPolicy)
	st := tb.State()
	polFile := filepath.Join(st.Options.StateDir, "demo-policy.yaml")
	if err := os.WriteFile(polFile, []byte(demoPolicy), 0o644); err != nil {
		return fmt.Errorf("write demo policy: %w", err)
	}
	if out, err := tb.Output(ctx, "host-1", "terracectl", "apply", "-f", polFile); err != nil {
		fmt.Fprintf(w, "NOT APPLIED (terracectl apply failed): %s\n", lastLine(err.Error()))
	} else {
		fmt.Fprint(w, out)
	}
	// Give BGP and the policy a moment to reach every host before looking.
	time.Sleep(3 * time.Second)

	section(w, "terracectl node status (host-1)")
	showOutput(w, tb, ctx, "host-1", "terracectl", "node", "status")

	for _, tor := range tb.Tors() {
		section(w, tor+": routes learned over BGP (birdc show route)")
		if out, err := tb.TorRoutes(ctx, tor); err != nil {
			fmt.Fprintln(w, "error:", err)
		} else {
			fmt.Fprint(w, out)
		}
		ss, _ := tb.TorSessions(ctx, tor)
		for _, s := range ss {
			fmt.Fprintf(w, "  session %-10s %-6s %s\n", s.Name, s.State, s.Info)
		}
	}
	for _, h := range tb.Hosts() {
		section(w, h+": ip route (proto 80 = terrace workloads, 81 = learned over BGP)")
		showOutput(w, tb, ctx, h, "ip", "route")
	}

	section(w, "connectivity matrix, TCP 8080 and ICMP: expected (the design) vs actual")
	exp, err := testbed.ParseExpectation(demoExpect)
	if err != nil {
		return err
	}
	m, err := tb.Check(ctx, testbed.CheckOptions{Port: 8080, Expect: exp, Settle: 10 * time.Second})
	if err != nil {
		return err
	}
	printMatrix(w, m)
	explainDifferences(w, m)

	expFile := filepath.Join(st.Options.StateDir, "demo-expect.txt")
	if err := os.WriteFile(expFile, []byte(demoExpect), 0o644); err != nil {
		return fmt.Errorf("write demo expectation: %w", err)
	}
	if st.Options.StateDir != testbed.DefaultStateDir {
		self += " --state-dir " + st.Options.StateDir
	}
	section(w, "look around")
	fmt.Fprintf(w, `  %[1]s status
  %[1]s exec host-1 -- terracectl node status
  %[1]s exec host-1/fe-1 -- ip addr
  %[1]s exec tor-1 -- birdc -s %[2]s show protocols
  %[1]s check --port 8080 --expect %[3]s
  %[1]s stop-node host-2 | start-node host-2 | link-down host-3 | stop-tor tor-1 ...
Tear down: make demo-down   (or %[1]s down)
`, self, st.Tors[0].Socket, expFile)
	return nil
}

func showOutput(w io.Writer, tb *testbed.Testbed, ctx context.Context, target string, argv ...string) {
	out, err := tb.Output(ctx, target, argv...)
	if err != nil {
		fmt.Fprintf(w, "NOT AVAILABLE YET (%s failed): %s\n", strings.Join(argv, " "), lastLine(err.Error()))
		return
	}
	fmt.Fprint(w, out)
}

// explainDifferences says which missing part each difference points at, instead of hiding it.
func explainDifferences(w io.Writer, m *testbed.Matrix) {
	var cross, policy int
	for _, c := range m.Cells {
		if c.OK() {
			continue
		}
		sameHost := strings.SplitN(c.From, "/", 2)[0] == strings.SplitN(c.To, "/", 2)[0]
		if c.Expected == testbed.Reachable && !sameHost {
			cross++
		} else {
			policy++
		}
	}
	if cross > 0 {
		fmt.Fprintf(w, "%d cross-host probes fail that should work: look at the BGP sessions and learned routes (terracectl node status, ip route show proto 81).\n", cross)
	}
	if policy > 0 {
		fmt.Fprintf(w, "%d probes differ on policy: look at felix's readiness (terracectl node status) and the trc- chains (iptables-save).\n", policy)
	}
	if cross == 0 && policy == 0 {
		fmt.Fprintln(w, "The fabric behaves as designed.")
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

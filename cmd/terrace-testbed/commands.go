package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/testbed"
)

func newUpCmd(e *env) *cobra.Command {
	o := testbed.Options{}
	var mesh, noMesh bool
	var cni string
	c := &cobra.Command{
		Use:   "up --hosts N [--tors 1|2] [--ipv6] [--mesh|--no-mesh]",
		Short: "Build the fabric: ctl with etcd, BIRD ToRs, N hosts running terrace-node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mesh && noMesh {
				return usageError{errors.New("--mesh and --no-mesh exclude each other")}
			}
			o.NoMesh, o.CNI = noMesh, testbed.CNIMode(cni)
			o.StateDir, o.Prefix, o.BinDir, o.LogLevel, o.Logger = e.stateDir, e.prefix, e.binDir, e.logLevel, e.log
			tb, err := testbed.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			return printUp(cmd.OutOrStdout(), tb)
		},
	}
	f := c.Flags()
	f.IntVar(&o.Hosts, "hosts", 3, "number of hosts (1..100)")
	f.IntVar(&o.Tors, "tors", 1, "number of top-of-rack routers (2: every host dual-homed)")
	f.BoolVar(&o.IPv6, "ipv6", false, "IPv6 underlay and pod addresses too")
	f.BoolVar(&mesh, "mesh", false, "node-to-node BGP mesh on (the default)")
	f.BoolVar(&noMesh, "no-mesh", false, "node-to-node BGP mesh off (hosts learn through the ToRs only)")
	f.BoolVar(&o.NoNode, "no-node", false, "do not start terrace-node run on the hosts")
	f.StringVar(&cni, "cni", string(testbed.CNIAuto), "pod wiring: auto (terrace-cni when it works, decided by the first pod and kept), cni, manual")
	return c
}

// printUp says what was built and returns an error (exit 1) when a part did not come up: a
// terrace-node that exited or never opened its socket, a fabric config not applied. The fabric
// stays for inspection.
func printUp(w io.Writer, tb *testbed.Testbed) error {
	st := tb.State()
	fmt.Fprintf(w, "testbed up: %d hosts, %d tor(s), etcd at %s (state in %s)\n",
		len(st.Hosts), len(st.Tors), st.Ctl.Endpoint, st.Options.StateDir)
	for _, h := range st.Hosts {
		fmt.Fprintf(w, "  %-8s ip %-15s socket %s\n", h.Name, h.IPv4, h.Socket)
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "  problem: %s\n", warn)
	}
	if n := len(st.Warnings); n > 0 {
		return fmt.Errorf("up: %d part(s) of the fabric did not come up (listed above); it stays for inspection (status, exec), remove it with down", n)
	}
	return nil
}

func newDownCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop what the testbed started and delete its namespaces (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("tear down: %w: needs root", testbed.ErrInvalid)
			}
			if err := testbed.Down(cmd.Context(), e.stateDir, e.prefix, e.log); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "testbed down")
			return nil
		},
	}
}

func newStatusCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status",
		Short: "List namespaces, processes with pids, BGP sessions and pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tb, err := e.load()
			if err != nil {
				return err
			}
			s := tb.Status(cmd.Context())
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			printStatus(cmd.OutOrStdout(), s)
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

func printStatus(w io.Writer, s testbed.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tROLE\tEXISTS")
	for _, n := range s.Namespaces {
		fmt.Fprintf(tw, "%s\t%s\t%t\n", n.Name, n.Role, n.Exists)
	}
	fmt.Fprintln(tw, "\nPROCESS\tWHERE\tPID\tSTATE\tLOG")
	for _, p := range s.Processes {
		state := "running"
		if !p.Alive {
			state = "stopped"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.What, p.Where, p.Pid, state, p.Log)
	}
	fmt.Fprintln(tw, "\nTOR\tBGP SESSION\tSTATE\tSINCE\tINFO")
	for _, b := range s.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Tor, b.Name, b.State, b.Since, b.Info)
	}
	tw.Flush()
	printPods(w, s.Pods)
	for _, m := range s.Warnings {
		fmt.Fprintln(w, "warning:", m)
	}
	for _, m := range s.Errors {
		fmt.Fprintln(w, "error:", m)
	}
}

func printPods(w io.Writer, pods []testbed.PodState) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPOD\tNAMESPACE\tIPV4\tIPV6\tHOST IF\tWIRED BY\tLABELS")
	for _, p := range pods {
		by := "terrace-cni"
		if p.Mode == testbed.CNIManual {
			by = "testbed (terrace-cni not available)"
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Host, p.Name, p.Namespace, p.IPv4, p.IPv6,
			p.HostIf, by, testbed.FormatLabels(p.Labels))
	}
	tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

func newExecCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "exec TARGET -- CMD [ARGS...]",
		Short: "Run a command inside ctl, tor-N, host-N or host-N/POD (bin/ on PATH, TERRACE_* set)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError{errors.New("exec needs a target and a command: exec host-1 -- ip route")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			tb, err := e.load()
			if err != nil {
				return err
			}
			// The child is not tied to our context: Ctrl-C at a terminal reaches it directly (it is
			// in the foreground process group with us) and it decides what to do, as a shell or
			// a capture that stops on the first Ctrl-C would. Termination signals sent to us alone
			// are passed on.
			c, err := tb.Command(context.WithoutCancel(cmd.Context()), args[0], args[1:]...)
			if err != nil {
				return err
			}
			return runForwarding(c, syscall.SIGTERM, syscall.SIGHUP)
		},
	}
}

func newPodCmd(e *env) *cobra.Command {
	pod := &cobra.Command{Use: "pod", Short: "Add, delete and list pods"}
	var ns, labels, ips string
	add := &cobra.Command{
		Use:   "add HOST NAME [--namespace NS] [--labels k=v,...] [--ip ADDR,...]",
		Short: "Create a pod on a host through terrace-cni (or the testbed's own wiring until it works)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ls, err := testbed.ParseLabels(labels)
			if err != nil {
				return err
			}
			addrs, err := testbed.ParseAddrs(ips)
			if err != nil {
				return err
			}
			tb, err := e.load()
			if err != nil {
				return err
			}
			p, err := tb.AddPod(cmd.Context(), testbed.PodSpec{Host: args[0], Name: args[1], Namespace: ns, Labels: ls, IPs: addrs})
			if err != nil {
				return err
			}
			by := "terrace-cni"
			if p.Mode == testbed.CNIManual {
				by = "the testbed's own wiring (terrace-cni not available yet)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pod %s/%s: %s %s via %s, wired by %s\n", p.Host, p.Name, p.IPv4, p.IPv6, p.HostIf, by)
			return nil
		},
	}
	add.Flags().StringVar(&ns, "namespace", "default", "the pod's (Kubernetes-style) namespace")
	add.Flags().StringVar(&labels, "labels", "", "pod labels, k=v,k2=v2")
	add.Flags().StringVar(&ips, "ip", "", "addresses the pod asks for instead of IPAM's choice, ADDR[,ADDR] (in any pool, also in another host's block)")
	del := &cobra.Command{
		Use:   "del HOST NAME",
		Short: "Delete a pod (CNI DEL, then its namespace)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tb, err := e.load()
			if err != nil {
				return err
			}
			return tb.DelPod(cmd.Context(), args[0], args[1])
		},
	}
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tb, err := e.load()
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), tb.Pods())
			}
			printPods(cmd.OutOrStdout(), tb.Pods())
			return nil
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	pod.AddCommand(add, del, list)
	return pod
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d arguments: %s", cmd.Name(), n, cmd.Use)}
		}
		return nil
	}
}

func newCheckCmd(e *env) *cobra.Command {
	var expect, output string
	var port int
	var timeout, settle time.Duration
	c := &cobra.Command{
		Use:   "check [--expect FILE]",
		Short: "Probe every pod from every other pod (ICMP and TCP); exit 1 on any difference from the expectation",
		Long: `Probe every pod from every other pod: an ICMP echo and a TCP connect to --port, where the check
opens a listener inside each pod for its duration (or uses whatever already listens there).

The expectation file has one rule per line, later rules winning; pairs no rule matches are
expected reachable:

  # FROM   TO      PROBE  RESULT
  *        *       *      reachable
  *        */be-*  *      blocked
  */fe-*   */be-*  tcp    reachable

FROM and TO are HOST/POD globs (a lone * matches every pod), PROBE is icmp, tcp or *, RESULT is
reachable or blocked. While any probe differs, the matrix is probed again every half second until
--settle has passed, since routes and policy take a moment to converge after a change. Exit status
1 when any probe still differs, 2 for a bad expectation file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := testbed.CheckOptions{Port: port, Timeout: timeout, Settle: settle}
			if expect != "" {
				b, err := os.ReadFile(expect)
				if err != nil {
					return fmt.Errorf("read expectation: %w: %w", testbed.ErrInvalid, err)
				}
				if o.Expect, err = testbed.ParseExpectation(string(b)); err != nil {
					return err
				}
			}
			tb, err := e.load()
			if err != nil {
				return err
			}
			m, err := tb.Check(cmd.Context(), o)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeJSON(cmd.OutOrStdout(), m); err != nil {
					return err
				}
			} else {
				printMatrix(cmd.OutOrStdout(), m)
			}
			if n := m.Differences(); n > 0 {
				return fmt.Errorf("check: %d of %d probes differ from the expectation", n, len(m.Cells))
			}
			if len(m.Cells) == 0 {
				// A check that probed nothing proved nothing: not a pass.
				return errors.New("check: no probes ran (it needs at least two pods with addresses; add them with `pod add`)")
			}
			return nil
		},
	}
	c.Flags().StringVar(&expect, "expect", "", "expectation file (lines: FROM TO PROBE reachable|blocked; default all reachable)")
	c.Flags().IntVar(&port, "port", testbed.DefaultCheckPort, "TCP port probed in every pod")
	c.Flags().DurationVar(&timeout, "timeout", time.Second, "timeout of one probe")
	c.Flags().DurationVar(&settle, "settle", 10*time.Second, "keep probing while any probe differs, for up to this long (0: probe once)")
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

func printMatrix(w io.Writer, m *testbed.Matrix) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tADDRESS\tPROBE\tEXPECTED\tACTUAL\t")
	for _, c := range m.Cells {
		probe := c.Probe
		if probe == testbed.ProbeTCP {
			probe = fmt.Sprintf("tcp/%d", m.Port)
		}
		mark := ""
		if !c.OK() {
			mark = "DIFFERS"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.From, c.To, c.Addr, probe, c.Expected, c.Actual, mark)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d probes, %d differ from the expectation\n", len(m.Cells), m.Differences())
}

func newListenCmd() *cobra.Command {
	var port int
	c := &cobra.Command{
		Use:    "listen --port N",
		Short:  "Serve a TCP port (accept and close), for use inside pods",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return testbed.Listen(cmd.Context(), port)
		},
	}
	c.Flags().IntVar(&port, "port", testbed.DefaultCheckPort, "TCP port")
	return c
}

func newInjectCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inject-routes TOR COUNT",
		Short: "Make a ToR originate COUNT /32 routes from 198.18.64.0 towards every host (0 withdraws them)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return usageError{fmt.Errorf("parse count %q: not a whole number", args[1])}
			}
			ps, err := testbed.InjectPrefixes(n)
			if err != nil {
				return err
			}
			tb, err := e.load()
			if err != nil {
				return err
			}
			return tb.InjectTorRoutes(cmd.Context(), args[0], ps)
		},
	}
}

func newFaultCmds(e *env) []*cobra.Command {
	type fault struct {
		use, short string
		min, max   int
		fn         func(tb *testbed.Testbed, cmd *cobra.Command, args []string) error
	}
	faults := []fault{
		{"stop-node HOST", "Stop a host's terrace-node (SIGTERM)", 1, 1, func(tb *testbed.Testbed, c *cobra.Command, a []string) error { return tb.StopNode(c.Context(), a[0]) }},
		{"kill-node HOST", "Kill a host's terrace-node (SIGKILL)", 1, 1, func(tb *testbed.Testbed, c *cobra.Command, a []string) error { return tb.KillNode(c.Context(), a[0]) }},
		{"start-node HOST", "Start a host's terrace-node again", 1, 1, func(tb *testbed.Testbed, c *cobra.Command, a []string) error { return tb.StartNode(c.Context(), a[0]) }},
		{"link-down HOST [TOR]", "Take a host's uplink(s) down", 1, 2, func(tb *testbed.Testbed, c *cobra.Command, a []string) error {
			return tb.LinkDown(c.Context(), a[0], optArg(a, 1))
		}},
		{"link-up HOST [TOR]", "Bring a host's uplink(s) back up", 1, 2, func(tb *testbed.Testbed, c *cobra.Command, a []string) error {
			return tb.LinkUp(c.Context(), a[0], optArg(a, 1))
		}},
		{"stop-etcd", "Stop the embedded etcd", 0, 0, func(tb *testbed.Testbed, c *cobra.Command, _ []string) error { return tb.StopEtcd(c.Context()) }},
		{"start-etcd", "Start the embedded etcd again", 0, 0, func(tb *testbed.Testbed, c *cobra.Command, _ []string) error { return tb.StartEtcd(c.Context()) }},
		{"stop-tor TOR", "Stop a ToR's BIRD", 1, 1, func(tb *testbed.Testbed, c *cobra.Command, a []string) error { return tb.StopTor(c.Context(), a[0]) }},
		{"start-tor TOR", "Start a ToR's BIRD again", 1, 1, func(tb *testbed.Testbed, c *cobra.Command, a []string) error { return tb.StartTor(c.Context(), a[0]) }},
	}
	var out []*cobra.Command
	for _, f := range faults {
		out = append(out, &cobra.Command{
			Use:   f.use,
			Short: f.short,
			Args: func(cmd *cobra.Command, args []string) error {
				if len(args) < f.min || len(args) > f.max {
					return usageError{fmt.Errorf("usage: %s %s", "terrace-testbed", f.use)}
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				tb, err := e.load()
				if err != nil {
					return err
				}
				if err := f.fn(tb, cmd, args); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), strings.Join(append([]string{strings.Fields(f.use)[0]}, args...), " ")+": done")
				return nil
			},
		})
	}
	return out
}

func optArg(a []string, i int) string {
	if len(a) > i {
		return a[i]
	}
	return ""
}

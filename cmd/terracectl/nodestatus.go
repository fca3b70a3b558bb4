package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/node"
)

func newNodeCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Inspect the local terrace-node", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the local node's status from its API socket",
		Args:  rangeArgs(0, 0, "node status"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dataOrText("node status", output); err != nil {
				return err
			}
			sock := e.cfg.String("node-socket")
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			st, err := node.QueryStatus(ctx, sock)
			if err != nil {
				return fmt.Errorf("is terrace-node running? %w", err)
			}
			if output != outTable {
				return writeData(e.out, output, st)
			}
			return printNodeStatus(e.out, st, time.Now())
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: readable text)")
	cmd.AddCommand(status, newNodeRoutesCmd(e))
	return cmd
}

func printNodeStatus(w io.Writer, st node.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintf(tw, "Node:\t%s\n", st.NodeName)
	fmt.Fprintf(tw, "Version:\t%s\n", dash(st.Version))
	fmt.Fprintf(tw, "Started:\t%s (up %s)\n", st.StartTime.UTC().Format(time.RFC3339), now.Sub(st.StartTime).Round(time.Second))
	fmt.Fprintf(tw, "IPv4:\t%s\n", dash(st.IPv4))
	fmt.Fprintf(tw, "IPv6:\t%s\n", dash(st.IPv6))
	a := st.Autodetection
	fmt.Fprintf(tw, "Address method:\t%s\n", dash(a.Method))
	fmt.Fprintf(tw, "Interface:\t%s\n", dash(a.Interface))
	fmt.Fprintf(tw, "Reason:\t%s\n", dash(a.Reason))
	if d := st.Datastore; d.State != "" {
		fmt.Fprintf(tw, "Datastore:\t%s since %s (%s)\n", d.State, d.Since.UTC().Format(time.RFC3339), dash(oneLine(d.Detail)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nComponents:")
	if len(st.Components) == 0 {
		fmt.Fprintln(w, "  none running (felix and BGP are both disabled on this node: --felix=false --bgp=false)")
	} else {
		tw = tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSTATE\tSINCE\tDETAIL")
		for _, n := range st.ComponentNames() {
			c := st.Components[n]
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n, c.State, c.Since.UTC().Format(time.RFC3339), dash(oneLine(c.Detail)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if c, ok := st.Components["bgp"]; !ok {
		fmt.Fprintln(w, "\nBGP peers:\n  not available: BGP is disabled on this node (--bgp=false)")
	} else if len(c.Details) == 0 {
		fmt.Fprintf(w, "\nBGP peers:\n  not available yet: BGP is %s (%s)\n", c.State, dash(oneLine(c.Detail)))
	} else {
		printBGPStatus(w, st.Components["bgp"], now)
	}
	return nil
}

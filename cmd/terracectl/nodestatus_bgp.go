package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/bgp/agent"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/node"
)

// printBGPStatus prints the bgp component's peers; details it cannot read are printed raw so that
// a newer daemon still shows something.
func printBGPStatus(w io.Writer, c node.ComponentStatus, now time.Time) {
	st, err := agent.StatusFromDetails(c.State, c.Detail, c.Details)
	if err != nil {
		if peers, ok := c.Details["peers"]; ok {
			b, _ := json.Marshal(peers)
			fmt.Fprintf(w, "\nBGP peers:\n  %s\n", strings.TrimSpace(string(b)))
		}
		return
	}
	fmt.Fprintf(w, "\nBGP: AS %d, router ID %s, %d prefixes advertised, %d routes learned, %d installed",
		st.ASN, orDash(st.RouterID), st.Advertised, st.Routes.Learned, st.Routes.Installed)
	if st.Routes.Unresolved > 0 {
		fmt.Fprintf(w, ", %d without a reachable next hop", st.Routes.Unresolved)
	}
	if st.Routes.HeldBack > 0 {
		fmt.Fprintf(w, ", %d held back by another protocol's route", st.Routes.HeldBack)
	}
	if st.Routes.Refused > 0 {
		fmt.Fprintf(w, ", %d refused by the route writer", st.Routes.Refused)
	}
	if st.Routes.LinkDown > 0 {
		fmt.Fprintf(w, ", %d waiting for their interface to come up", st.Routes.LinkDown)
	}
	fmt.Fprintln(w)
	if st.Routes.LastError != "" {
		fmt.Fprintf(w, "  route error: %s\n", oneLine(st.Routes.LastError))
	}
	for _, wn := range st.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", wn)
	}
	fmt.Fprintln(w, "\nBGP peers:")
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "  none configured")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  ADDRESS\tTYPE\tAS\tSTATE\tUPTIME\tRECEIVED\tACCEPTED\tADVERTISED\tINFO")
	for _, p := range st.Peers {
		up := "-"
		if !p.EstablishedAt.IsZero() {
			up = now.Sub(p.EstablishedAt).Round(time.Second).String()
		} else if p.Uptime > 0 {
			up = p.Uptime.Round(time.Second).String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Address, p.Type, p.ASN, p.State, up,
			p.Received, p.Accepted, p.Advertised, orDash(oneLine(p.LastError)))
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// routeRow is one BGP-installed kernel route as `node routes -o json` prints it.
type routeRow struct {
	Prefix   string   `json:"prefix"`
	Gateways []string `json:"gateways"`
	Devices  []string `json:"devices,omitempty"`
	// Metric tells terrace-node's routes (agent.RouteMetric) from leftovers of an earlier
	// version, which it removes once in sync with its peers.
	Metric int `json:"metric"`
}

// newNodeRoutesCmd lists what BGP installed: the kernel's protocol-81 routes of the namespace the
// command runs in, which is the node's own (like the node socket, it is a local command).
func newNodeRoutesCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "List the routes BGP installed in this node's kernel (protocol 81, terrace-bgp)",
		Args:  rangeArgs(0, 0, "node routes"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dataOrText("node routes", output); err != nil {
				return err
			}
			rows, err := bgpRoutes()
			if err != nil {
				return err
			}
			if output != outTable {
				return writeData(e.out, output, rows)
			}
			printRoutes(e.out, rows)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: a table)")
	return cmd
}

func bgpRoutes() ([]routeRow, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.ProtocolTerraceBGP}
	rows := []routeRow{} // JSON [] rather than null when BGP installed nothing
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("list bgp routes: %w", err)
		}
		for _, r := range rs {
			rows = append(rows, toRouteRow(r, linkName))
		}
	}
	slices.SortFunc(rows, func(a, b routeRow) int { return cmp.Or(comparePrefixes(a.Prefix, b.Prefix), a.Metric-b.Metric) })
	return rows, nil
}

func linkName(idx int) string {
	if l, err := netlink.LinkByIndex(idx); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprint(idx)
}

func toRouteRow(r netlink.Route, name func(int) string) routeRow {
	row := routeRow{Gateways: []string{}, Metric: r.Priority}
	if r.Dst != nil {
		row.Prefix = r.Dst.String()
	}
	add := func(gw []byte, idx int) {
		if a, ok := netip.AddrFromSlice(gw); ok && len(gw) > 0 {
			row.Gateways = append(row.Gateways, a.Unmap().String())
		}
		if idx > 0 {
			row.Devices = append(row.Devices, name(idx))
		}
	}
	if len(r.MultiPath) == 0 {
		add(r.Gw, r.LinkIndex)
	}
	for _, h := range r.MultiPath {
		add(h.Gw, h.LinkIndex)
	}
	return row
}

func comparePrefixes(a, b string) int {
	pa, ea := netip.ParsePrefix(a)
	pb, eb := netip.ParsePrefix(b)
	if ea != nil || eb != nil {
		return strings.Compare(a, b)
	}
	if c := pa.Addr().Compare(pb.Addr()); c != 0 {
		return c
	}
	return pa.Bits() - pb.Bits()
}

func printRoutes(w io.Writer, rows []routeRow) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "no routes installed by BGP")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tGATEWAYS\tDEVICES\tMETRIC")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", r.Prefix, orDash(strings.Join(r.Gateways, ",")), orDash(strings.Join(r.Devices, ",")), r.Metric)
	}
	_ = tw.Flush()
}

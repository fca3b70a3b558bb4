package main

// The ipam subcommands: show usage, check for leaks, release leaked addresses, configure IPAM.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/ipam"
)

func newIPAMCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "ipam", Short: "Inspect and repair IP address management", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	cmd.AddCommand(newIPAMShowCmd(e), newIPAMCheckCmd(e), newIPAMReleaseCmd(e), newIPAMConfigureCmd(e))
	return cmd
}

func (e *env) allocator(ctx context.Context) (*ipam.Allocator, *datastore.Client, error) {
	c, err := e.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	return ipam.New(c.Store(), c, e.log), c, nil
}

// dataOrText checks -o of a command whose default output is text for people, and whose data
// can be printed as JSON or YAML (the same fields either way) for scripts.
func dataOrText(what, output string) error {
	if output != outTable && output != outJSON && output != outYAML {
		return usageErrorf("%s: unknown output format %q: want json or yaml", what, output)
	}
	return nil
}

// writeData prints v as JSON or YAML (per output), with the JSON field names in both.
func writeData(w io.Writer, output string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if output == outYAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// ipamShow is the JSON shape of `ipam show -o json`.
type ipamShow struct {
	Pools []ipam.PoolUsage `json:"pools"`
	// Blocks is there with --show-blocks only, then always a list ([] with no blocks).
	Blocks *[]ipam.BlockUsage `json:"blocks,omitempty"`
}

func newIPAMShowCmd(e *env) *cobra.Command {
	var output, ip string
	var showBlocks bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show pools with used and free addresses, blocks, or who holds an address",
		Args:  rangeArgs(0, 0, "ipam show [--show-blocks] [--ip ADDR] [-o json]"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dataOrText("ipam show", output); err != nil {
				return err
			}
			var addr netip.Addr
			if ip != "" {
				var err error
				if addr, err = netip.ParseAddr(ip); err != nil {
					return usageErrorf("ipam show: --ip %q is not an IP address", ip)
				}
				if showBlocks {
					return usageErrorf("ipam show: --ip and --show-blocks show different things; give one")
				}
			}
			a, _, err := e.allocator(cmd.Context())
			if err != nil {
				return err
			}
			if addr.IsValid() {
				info, err := a.ShowIP(cmd.Context(), addr)
				if err != nil {
					return err
				}
				if output != outTable {
					return writeData(e.out, output, info)
				}
				return printIPInfo(e.out, info)
			}
			// A stored pool that cannot be decoded must not hide the others (as for get): show
			// what was read, then say what was not, and exit 1.
			var unreadable error
			partial := func(err error) error {
				if errors.Is(err, datastore.ErrUndecodable) {
					unreadable = err
					return nil
				}
				return err
			}
			var out ipamShow
			out.Pools, err = a.ShowPools(cmd.Context())
			if err := partial(err); err != nil {
				return err
			}
			if out.Pools == nil {
				out.Pools = []ipam.PoolUsage{}
			}
			if showBlocks {
				blocks, err := a.ShowBlocks(cmd.Context())
				if err := partial(err); err != nil {
					return err
				}
				if blocks == nil {
					blocks = []ipam.BlockUsage{}
				}
				out.Blocks = &blocks
			}
			if output != outTable {
				err = writeData(e.out, output, out)
			} else {
				err = printIPAMShow(e.out, out, showBlocks)
			}
			if err != nil || unreadable == nil {
				return err
			}
			e.errorf("%s", oneLine(unreadable.Error()))
			return reported{exitRuntime}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: a table)")
	cmd.Flags().BoolVar(&showBlocks, "show-blocks", false, "also list every block with its host and usage")
	cmd.Flags().StringVar(&ip, "ip", "", "say whether this address is allocated and to whom")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printIPAMShow(w io.Writer, s ipamShow, showBlocks bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tCIDR\tBLOCK SIZE\tSIZE\tUSED\tFREE\tBLOCKS\tDISABLED")
	for _, p := range s.Pools {
		fmt.Fprintf(tw, "%s\t%s\t/%d\t%s\t%d\t%s\t%d\t%v\n", p.Name, p.CIDR, p.BlockSize, p.Size, p.Used, p.Free, p.Blocks, p.Disabled)
	}
	if showBlocks {
		fmt.Fprintln(tw, "")
		fmt.Fprintln(tw, "BLOCK\tPOOL\tNODE\tSIZE\tUSED\tFREE")
		for _, b := range *s.Blocks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", b.CIDR, dash(b.Pool), dash(b.Node), b.Size, b.Used, b.Free)
		}
	}
	return tw.Flush()
}

func printIPInfo(w io.Writer, info ipam.IPInfo) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "IP:\t%s\n", info.IP)
	fmt.Fprintf(tw, "Pool:\t%s\n", dash(info.Pool))
	block := "-"
	if info.Block.IsValid() {
		block = info.Block.String()
	}
	fmt.Fprintf(tw, "Block:\t%s (node %s)\n", block, dash(info.BlockNode))
	if !info.Allocated {
		fmt.Fprintf(tw, "Allocated:\tno\n")
		return tw.Flush()
	}
	fmt.Fprintf(tw, "Allocated:\tyes\n")
	fmt.Fprintf(tw, "Handle:\t%s\n", info.Handle)
	keys := make([]string, 0, len(info.Attrs))
	for k := range info.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "  %s:\t%s\n", k, info.Attrs[k])
	}
	return tw.Flush()
}

func newIPAMCheckCmd(e *env) *cobra.Command {
	var output string
	var exitOnProblems bool
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report leaked addresses, addresses with two owners, blocks of missing nodes or pools",
		Long: "Compares IPAM allocations with WorkloadEndpoints and Nodes. An allocation is leaked when the\n" +
			"endpoint or node it names is gone and it is older than --grace-period. Save the -o json\n" +
			"report and pass it to `terracectl ipam release --from-report FILE` to release the leaks.",
		Args: rangeArgs(0, 0, "ipam check [--grace-period D] [-o json]"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dataOrText("ipam check", output); err != nil {
				return err
			}
			if grace < 0 {
				return usageErrorf("ipam check: --grace-period must not be negative")
			}
			a, _, err := e.allocator(cmd.Context())
			if err != nil {
				return err
			}
			opts := ipam.CheckOptions{GracePeriod: grace}
			if grace == 0 {
				opts.GracePeriod = -1 // the flag's 0 means no grace, not the default
			}
			r, err := a.Check(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if output != outTable {
				err = writeData(e.out, output, r)
			} else {
				err = printReport(e.out, r)
			}
			if err == nil && exitOnProblems && !r.Clean() {
				// The report is printed; only the status remains (for monitoring scripts).
				return reported{code: exitRuntime}
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: a table)")
	cmd.Flags().BoolVar(&exitOnProblems, "exit-code", false, "exit 1 when the check finds any problem (default: 0 whenever the check ran)")
	cmd.Flags().DurationVar(&grace, "grace-period", ipam.DefaultGracePeriod, "how old an allocation without owner must be to count as leaked")
	return cmd
}

func printReport(w io.Writer, r *ipam.Report) error {
	s := r.Summary
	fmt.Fprintf(w, "Checked %d blocks, %d allocations, %d handles against %d nodes and %d workload endpoints (grace period %s).\n",
		s.Blocks, s.Allocations, s.Handles, s.Nodes, s.Endpoints, r.GracePeriod)
	if r.Clean() {
		fmt.Fprintln(w, "No problems found.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if len(r.Leaks) > 0 {
		fmt.Fprintf(tw, "\nLEAKED ADDRESS\tHANDLE\tREASON\n")
		for _, l := range r.Leaks {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", l.IP, l.Handle, l.Reason)
		}
	}
	if len(r.Duplicates) > 0 {
		fmt.Fprintf(tw, "\nADDRESS WITH SEVERAL OWNERS\tHANDLE\tOWNERS\n")
		for _, d := range r.Duplicates {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", d.IP, dash(d.Handle), strings.Join(d.Owners, ","))
		}
	}
	if len(r.OrphanBlocks) > 0 {
		fmt.Fprintf(tw, "\nBLOCK OF MISSING NODE\tNODE\tIN USE\n")
		for _, o := range r.OrphanBlocks {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", o.Block, o.Node, o.InUse)
		}
	}
	if len(r.BlocksWithoutPool) > 0 {
		fmt.Fprintf(tw, "\nBLOCK OUTSIDE EVERY POOL\tNODE\tIN USE\n")
		for _, o := range r.BlocksWithoutPool {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", o.Block, dash(o.Node), o.InUse)
		}
	}
	if len(r.Inconsistencies) > 0 {
		fmt.Fprintf(tw, "\nINCONSISTENT RECORD\tDETAIL\n")
		for _, i := range r.Inconsistencies {
			fmt.Fprintf(tw, "%s\t%s\n", i.Key, i.Detail)
		}
	}
	return tw.Flush()
}

func newIPAMReleaseCmd(e *env) *cobra.Command {
	var ips []string
	var report, node, output string
	var force bool
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Release leaked addresses (--ip, --from-report) or a removed node's blocks (--node)",
		Long: "Each address is checked again before it is released: one that an endpoint uses, or that\n" +
			"was given to someone else since the report, is left alone and reported.",
		Args: rangeArgs(0, 0, "ipam release --ip ADDR... | --from-report FILE | --node NAME"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dataOrText("ipam release", output); err != nil {
				return err
			}
			modes := 0
			for _, set := range []bool{len(ips) > 0, report != "", node != ""} {
				if set {
					modes++
				}
			}
			if modes != 1 {
				return usageErrorf("ipam release: give exactly one of --ip, --from-report, --node")
			}
			if force && node == "" {
				return usageErrorf("ipam release: --force applies to --node only")
			}
			var addrs []netip.Addr
			for _, s := range ips {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return usageErrorf("ipam release: --ip %q is not an IP address", s)
				}
				addrs = append(addrs, a)
			}
			var rep ipam.Report
			if report != "" {
				data, err := os.ReadFile(report)
				if err != nil {
					return usageErrorf("ipam release: read report: %v", err)
				}
				if t := strings.TrimSpace(string(data)); t != "" && t[0] != '{' {
					// `ipam check -o yaml`: the same fields, read as strictly as JSON.
					if data, err = yaml.YAMLToJSON(data); err != nil {
						return usageErrorf("ipam release: %s is not an `ipam check -o json|yaml` report: %v", report, err)
					}
				}
				dec := json.NewDecoder(strings.NewReader(string(data)))
				dec.DisallowUnknownFields()
				err = dec.Decode(&rep)
				switch {
				case err != nil:
					return usageErrorf("ipam release: %s is not an `ipam check -o json|yaml` report: %v", report, err)
				case !atEOF(dec):
					return usageErrorf("ipam release: %s is not an `ipam check -o json|yaml` report: more data after the report", report)
				case rep.CheckedAt.IsZero():
					// {} or null would release nothing and say nothing: not a report.
					return usageErrorf("ipam release: %s is not an `ipam check -o json|yaml` report: no checkedAt", report)
				}
			}
			a, c, err := e.allocator(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case node != "":
				// A live node's blocks taken away: other hosts may borrow from them and its pods
				// are reachable only through /32s. Deleting the Node releases them anyway.
				_, gerr := c.Get(cmd.Context(), "Node", "", node)
				switch {
				case gerr == nil && !force:
					return usageErrorf("ipam release --node %s: the Node still exists; delete it (which releases its blocks) or give --force", node)
				case gerr != nil && !errors.Is(gerr, datastore.ErrNotFound):
					return fmt.Errorf("ipam release --node %s: read Node: %w", node, gerr)
				}
				res, err := a.ReleaseNode(cmd.Context(), node)
				if output != outTable {
					// What was done before a failure still goes out as JSON, for scripts; the
					// error goes to stderr and the exit status.
					if werr := writeData(e.out, output, res); werr != nil {
						return errors.Join(err, werr)
					}
					return err
				}
				for _, b := range res.Freed {
					e.printf("freed block %s\n", b)
				}
				for _, b := range res.Retained {
					e.printf("block %s keeps %d allocated addresses; it returns to the pool when they are released\n", b.CIDR, b.Used)
				}
				if err == nil && len(res.Freed) == 0 && len(res.Retained) == 0 {
					e.printf("node %s has no blocks to release\n", node)
				}
				return err
			case report != "":
				res, err := a.ReleaseFromReport(cmd.Context(), &rep)
				if output != outTable {
					if werr := writeData(e.out, output, res); werr != nil {
						return errors.Join(err, werr)
					}
				} else {
					printRepair(e, res)
				}
				if err == nil && len(res.Skipped) > 0 {
					// As --ip: something listed was not released, which a script must see.
					return reported{code: exitRuntime}
				}
				return err
			}
			res := ipam.RepairResult{Released: []netip.Addr{}, FreedBlocks: []netip.Prefix{}, Skipped: []ipam.Skipped{}}
			var failed []error
			for _, ip := range addrs {
				err := a.ReleaseIPChecked(cmd.Context(), ip)
				switch {
				case err == nil:
					res.Released = append(res.Released, ip)
				case errors.Is(err, ipam.ErrAddressInUse), errors.Is(err, ipam.ErrNotAllocated), errors.Is(err, ipam.ErrAddressNotInPool):
					res.Skipped = append(res.Skipped, ipam.Skipped{Item: ip.String(), Reason: err.Error()})
				default:
					failed = append(failed, err)
				}
			}
			if output != outTable {
				if err := writeData(e.out, output, res); err != nil {
					return err
				}
			} else {
				printRepair(e, res)
			}
			if len(failed) > 0 {
				return errors.Join(failed...)
			}
			if len(res.Skipped) > 0 {
				return reported{code: exitRuntime}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&ips, "ip", nil, "address(es) to release if nothing owns them")
	cmd.Flags().StringVar(&report, "from-report", "", "release the leaks and orphan blocks listed in this `FILE` (an `ipam check -o json` or `-o yaml` report)")
	cmd.Flags().StringVar(&node, "node", "", "release the block affinities of this removed node")
	cmd.Flags().BoolVar(&force, "force", false, "with --node: release them even though the Node still exists")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: text)")
	return cmd
}

// atEOF says whether nothing but white space follows the value dec has read (More misses a
// stray closing bracket).
func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

func printRepair(e *env, res ipam.RepairResult) {
	for _, ip := range res.Released {
		e.printf("released %s\n", ip)
	}
	for _, b := range res.FreedBlocks {
		e.printf("freed block %s\n", b)
	}
	for _, s := range res.Skipped {
		e.printf("skipped %s: %s\n", s.Item, s.Reason)
	}
}

func newIPAMConfigureCmd(e *env) *cobra.Command {
	var strict bool
	var maxBlocks int
	cmd := &cobra.Command{
		Use:   "configure",
		Short: "Set cluster IPAM options (IPAMConfiguration \"default\")",
		Args:  rangeArgs(0, 0, "ipam configure [--strict-affinity=true|false] [--max-blocks-per-host N]"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			if !f.Changed("strict-affinity") && !f.Changed("max-blocks-per-host") {
				return usageErrorf("ipam configure: give --strict-affinity and/or --max-blocks-per-host")
			}
			if maxBlocks < 0 {
				return usageErrorf("ipam configure: --max-blocks-per-host must not be negative")
			}
			c, err := e.connect(cmd.Context())
			if err != nil {
				return err
			}
			cfg := &api.IPAMConfiguration{TypeMeta: api.TypeMeta{Kind: "IPAMConfiguration", APIVersion: api.GroupVersion},
				Metadata: api.ObjectMeta{Name: api.IPAMConfigurationName}}
			cur, err := c.Get(cmd.Context(), "IPAMConfiguration", "", api.IPAMConfigurationName)
			missing := errors.Is(err, datastore.ErrNotFound)
			switch {
			case missing:
			case err != nil:
				return err
			default:
				if got, ok := cur.(*api.IPAMConfiguration); ok {
					cfg = got
				}
			}
			if f.Changed("strict-affinity") {
				cfg.Spec.StrictAffinity = strict
			}
			if f.Changed("max-blocks-per-host") {
				cfg.Spec.MaxBlocksPerHost = maxBlocks
			}
			// Both writes are compare-and-swaps on what was just read: a concurrent change, or
			// a configuration created meanwhile, fails rather than being overwritten.
			var outcome datastore.ApplyOutcome
			if missing {
				_, err = c.Create(cmd.Context(), cfg)
				outcome = datastore.Created
			} else {
				_, outcome, err = c.Apply(cmd.Context(), cfg)
			}
			if errors.Is(err, datastore.ErrExists) || errors.Is(err, datastore.ErrConflict) {
				return conflictErr("")
			}
			if err != nil {
				return err
			}
			e.printf("IPAMConfiguration default %s: strictAffinity=%v maxBlocksPerHost=%d\n",
				outcome, cfg.Spec.StrictAffinity, cfg.Spec.MaxBlocksPerHost)
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strict-affinity", false, "forbid borrowing addresses from other hosts' blocks")
	cmd.Flags().IntVar(&maxBlocks, "max-blocks-per-host", 0, "blocks one host may own (0: no limit)")
	return cmd
}

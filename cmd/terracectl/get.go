package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
)

func newGetCmd(e *env) *cobra.Command {
	var files []string
	var ns nsFlags
	var output string
	cmd := &cobra.Command{
		Use:   "get (KIND [NAME...] | KIND/NAME... | -f FILE)",
		Short: "Show resources",
		Long: "Show resources of a kind (all of them, or by name), or those named in a file.\n" +
			"Kinds are accepted by Kind, plural, singular or short name (gnp, np, ippool, wep, ...).",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var targets []api.Resource
			var info api.KindInfo
			switch {
			case len(files) > 0 && len(args) > 0:
				return usageErrorf("get: give either -f FILE or KIND [NAME...], not both")
			case len(files) > 0:
				docs, err := readDocs(files, e.in, ns.namespace, ns.explicit(cmd), false)
				if err != nil {
					return err
				}
				for _, d := range docs {
					if d.problem != nil {
						return &exitError{code: exitInput, err: fmt.Errorf("%s: %s", d.label(), describeErr(d.problem))}
					}
					targets = append(targets, d.Resource)
				}
				if len(targets) == 0 {
					// Only empty Lists: nothing to look up, so nothing to connect for.
					if output == outTable || output == outWide {
						fmt.Fprintln(e.errOut, "No resources found.")
						return nil
					}
					return printResources(e.out, nil, printOptions{format: output})
				}
			case len(args) == 0:
				return usageErrorf("get: name a kind, e.g. `terracectl get ippools` (kinds: %s)", kindList())
			case ns.all && (len(args) > 1 || strings.Contains(args[0], "/")):
				return usageErrorf("get: -A lists a kind in every namespace; to get resources by name, give their namespace with -n")
			case strings.Contains(args[0], "/"):
				var err error
				if targets, err = refResources(args, ns.namespace); err != nil {
					return err
				}
			default:
				var err error
				if info, err = api.LookupKind(args[0]); err != nil {
					return &exitError{code: exitInput, err: err}
				}
				if targets, err = namedResources(args[0], args[1:], ns.namespace); err != nil {
					return err
				}
			}
			c, err := e.connect(cmd.Context())
			if err != nil {
				return err
			}
			opts := printOptions{format: output, showNamespace: ns.all}
			var rs []api.Resource
			if len(targets) == 0 {
				namespace := ns.namespace
				if ns.all || !info.Namespaced {
					namespace = ""
				}
				var lerr error
				rs, lerr = c.List(cmd.Context(), info.Kind, namespace)
				if lerr != nil && len(rs) == 0 {
					return lerr
				}
				sort.SliceStable(rs, func(i, j int) bool { return refOf(rs[i]) < refOf(rs[j]) })
				if lerr != nil {
					// One stored value that cannot be decoded (written by a newer version, or
					// by hand) must not hide the others: show what was read, then say what
					// was not.
					if err := printResources(e.out, rs, opts); err != nil {
						return errors.Join(lerr, err)
					}
					e.errorf("%s", oneLine(lerr.Error()))
					return reported{exitRuntime}
				}
				if len(rs) == 0 && (output == outTable || output == outWide) {
					fmt.Fprintf(e.errOut, "No %s found.\n", info.Plural)
					return nil
				}
			} else {
				opts.single = len(targets) == 1
				var errs []error
				for _, t := range targets {
					m := t.GetObjectMeta()
					r, err := c.Get(cmd.Context(), kindName(t), m.Namespace, m.Name)
					if errors.Is(err, datastore.ErrNotFound) {
						errs = append(errs, fmt.Errorf("%s not found", refOf(t)))
						continue
					}
					if err != nil {
						errs = append(errs, fmt.Errorf("get %s: %w", refOf(t), err))
						continue
					}
					rs = append(rs, r)
				}
				if len(rs) > 0 {
					if err := printResources(e.out, rs, opts); err != nil {
						return err
					}
				}
				for _, err := range errs {
					e.errorf("%s", oneLine(err.Error()))
				}
				if len(errs) > 0 {
					return reported{exitRuntime}
				}
				return nil
			}
			return printResources(e.out, rs, opts)
		},
	}
	addFileFlag(cmd, &files, "resources to show")
	ns.add(cmd, true)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml, json, wide or name (default: a table)")
	return cmd
}

func kindList() string {
	var s string
	for i, k := range api.Kinds() {
		if i > 0 {
			s += ", "
		}
		s += k.Plural
	}
	return s
}

package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
)

// docAction writes one valid document and says what happened ("created", "unchanged", ...).
type docAction func(ctx context.Context, c *datastore.Client, r api.Resource) (string, error)

// nsFlags are -n/--namespace as every command reads them.
type nsFlags struct {
	namespace string
	all       bool
}

func (n *nsFlags) add(cmd *cobra.Command, withAll bool) {
	cmd.Flags().StringVarP(&n.namespace, "namespace", "n", "default", "namespace of namespaced kinds")
	if withAll {
		cmd.Flags().BoolVarP(&n.all, "all-namespaces", "A", false, "every namespace")
	}
}

func (n *nsFlags) explicit(cmd *cobra.Command) bool { return cmd.Flags().Changed("namespace") }

// runDocs reads every document and reports each invalid one; if there is any, nothing is written
// (a manifest half applied could leave a deny policy out and its allow policy in). Otherwise it
// applies act to each one by one, reporting each. Exit status: 2 if any document was invalid (or
// the datastore refused one as invalid), else 1 if any write failed, else 0.
func runDocs(cmd *cobra.Command, e *env, files []string, ns *nsFlags, validate bool, act docAction) error {
	if len(files) == 0 {
		return usageErrorf("%s: no input: give -f FILE (or -f - for stdin)", cmd.CommandPath())
	}
	docs, err := readDocs(files, e.in, ns.namespace, ns.explicit(cmd), validate)
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		fmt.Fprintf(e.errOut, "%s: the input holds only empty Lists; nothing to do\n", cmd.Name())
		return nil
	}
	invalid, failed := 0, 0
	var valid []doc
	for _, d := range docs {
		if d.problem != nil {
			invalid++
			e.errorf("%s: %s", d.label(), describeErr(d.problem))
			continue
		}
		valid = append(valid, d)
	}
	if invalid > 0 {
		if len(docs) > 1 {
			e.errorf("%s: %d of %d documents invalid; nothing was changed", cmd.Name(), invalid, len(docs))
		}
		return reported{exitInput}
	}
	if len(valid) > 0 {
		c, err := e.connect(cmd.Context())
		if err != nil {
			// Bad etcd settings are the user's input (2), an etcd that does not answer is not (1),
			// as for every other command.
			return err
		}
		if validate {
			if n, err := checkPoolOverlaps(cmd.Context(), e, c, valid); err != nil {
				return err
			} else if n > 0 {
				e.errorf("%s: %d of %d documents invalid; nothing was changed", cmd.Name(), n, len(docs))
				return reported{exitInput}
			}
		}
		for _, d := range valid {
			what, err := act(cmd.Context(), c, d.Resource)
			if err != nil {
				if exitCode(err) == exitInput {
					invalid++
				} else {
					failed++
				}
				e.errorf("%s: %s", d.label(), describeErr(err))
				continue
			}
			e.printf("%s %s\n", refOf(d.Resource), what)
		}
	}
	switch {
	case invalid > 0:
		return reported{exitInput}
	case failed > 0:
		return reported{exitRuntime}
	}
	return nil
}

// checkPoolOverlaps refuses, before anything is written, the IPPools of a manifest that would
// overlap a stored pool or another pool of the same manifest, as the datastore would refuse them
// one at a time after the documents before them were written. The datastore still checks each
// write (a pool stored meanwhile is caught there). It reports each overlapping document and
// returns how many there were.
func checkPoolOverlaps(ctx context.Context, e *env, c *datastore.Client, docs []doc) (int, error) {
	var mine []doc
	for _, d := range docs {
		if _, ok := d.Resource.(*api.IPPool); ok {
			mine = append(mine, d)
		}
	}
	if len(mine) == 0 {
		return 0, nil
	}
	stored, err := c.List(ctx, api.KindIPPool, "")
	if err != nil && !errors.Is(err, datastore.ErrUndecodable) {
		// An unreadable stored pool is skipped here as the datastore's own check skips it.
		return 0, err
	}
	after := map[string]*api.IPPool{}
	for _, r := range stored {
		if p, ok := r.(*api.IPPool); ok {
			after[p.Metadata.Name] = p
		}
	}
	for _, d := range mine {
		p := d.Resource.(*api.IPPool)
		after[p.Metadata.Name] = p
	}
	others := make([]*api.IPPool, 0, len(after))
	for _, p := range after {
		others = append(others, p)
	}
	slices.SortFunc(others, func(a, b *api.IPPool) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	n := 0
	for _, d := range mine {
		if err := api.CheckPoolOverlap(d.Resource.(*api.IPPool), others); err != nil {
			n++
			e.errorf("%s: %s", d.label(), describeErr(err))
		}
	}
	return n, nil
}

// conflictErr says the same thing for every write that lost its compare-and-swap, whichever
// command made it: which version was stale, or that someone else wrote in between.
func conflictErr(rv string) error {
	if rv == "" {
		return errors.New("conflict: the resource changed while it was being written; retry")
	}
	return fmt.Errorf("conflict: resourceVersion %s is not the current one; get the resource again and retry", rv)
}

func newCreateCmd(e *env) *cobra.Command {
	var files []string
	var ns nsFlags
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create resources; fails for each one that already exists",
		Args:  rangeArgs(0, 0, "create -f FILE"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDocs(cmd, e, files, &ns, true, func(ctx context.Context, c *datastore.Client, r api.Resource) (string, error) {
				_, err := c.Create(ctx, r)
				if errors.Is(err, datastore.ErrExists) {
					return "", errors.New("already exists (use apply or replace to change it)")
				}
				return "created", err
			})
		},
	}
	addFileFlag(cmd, &files, "resources to create")
	ns.add(cmd, false)
	return cmd
}

func newApplyCmd(e *env) *cobra.Command {
	var files []string
	var ns nsFlags
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create resources or update them to match the file",
		Long: "Creates each resource, or updates it to match the file. A metadata.resourceVersion in the file\n" +
			"must be the stored one for an update (else: conflict); for a resource that is not stored it\n" +
			"is ignored, as calicoctl does, so `get -o yaml` output restores into a fresh datastore.\n" +
			"Lists are read as their items: kind List and calicoctl's <Kind>List (IPPoolList, ...).",
		Args: rangeArgs(0, 0, "apply -f FILE"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDocs(cmd, e, files, &ns, true, func(ctx context.Context, c *datastore.Client, r api.Resource) (string, error) {
				_, outcome, err := c.Apply(ctx, r)
				if errors.Is(err, datastore.ErrConflict) {
					return "", conflictErr(r.GetObjectMeta().ResourceVersion)
				}
				if err != nil {
					return "", err
				}
				switch outcome {
				case datastore.Created:
					return "created", nil
				case datastore.Unchanged:
					return "unchanged", nil
				}
				return "configured", nil
			})
		},
	}
	addFileFlag(cmd, &files, "resources to apply")
	ns.add(cmd, false)
	return cmd
}

func newReplaceCmd(e *env) *cobra.Command {
	var files []string
	var ns nsFlags
	cmd := &cobra.Command{
		Use:   "replace -f FILE",
		Short: "Replace existing resources; metadata.resourceVersion, when given, must be current",
		Args:  rangeArgs(0, 0, "replace -f FILE"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDocs(cmd, e, files, &ns, true, func(ctx context.Context, c *datastore.Client, r api.Resource) (string, error) {
				rv := r.GetObjectMeta().ResourceVersion
				_, err := c.Update(ctx, r)
				switch {
				case errors.Is(err, datastore.ErrConflict):
					return "", conflictErr(rv)
				case errors.Is(err, datastore.ErrNotFound):
					return "", errors.New("not found (use create or apply)")
				}
				return "replaced", err
			})
		},
	}
	addFileFlag(cmd, &files, "resources to replace")
	ns.add(cmd, false)
	return cmd
}

func newDeleteCmd(e *env) *cobra.Command {
	var files []string
	var ns nsFlags
	var opts deleteOpts
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | KIND NAME... | KIND/NAME...)",
		Short: "Delete resources named in a file or on the command line",
		Long: "Deleting a Node also releases its address blocks: empty ones return to their pool, ones\n" +
			"still holding addresses stay until those are released. A Node whose terrace-node is\n" +
			"running (it holds the node's name in the datastore) is refused (exit status 2) unless\n" +
			"--force is given: its pods would lose their blocks while it still routes them.\n" +
			"Deleting an IPPool in which\n" +
			"addresses are still allocated is refused (exit status 2) unless the pool is disabled\n" +
			"and --force is given; its empty blocks are freed with it. Workloads still holding\n" +
			"addresses of a force-deleted pool are no longer advertised: other hosts lose their\n" +
			"routes. Move them to another pool first.",
		RunE: func(cmd *cobra.Command, args []string) error {
			del := func(ctx context.Context, c *datastore.Client, r api.Resource) (string, error) {
				return deleteResource(ctx, e, c, r, opts)
			}
			if len(files) > 0 {
				if len(args) > 0 {
					return usageErrorf("delete: give either -f FILE or KIND NAME..., not both")
				}
				return runDocs(cmd, e, files, &ns, false, del)
			}
			var rs []api.Resource
			var err error
			switch {
			case len(args) > 0 && strings.Contains(args[0], "/"):
				rs, err = refResources(args, ns.namespace)
			case len(args) < 2:
				return usageErrorf("delete: usage: delete KIND NAME..., delete KIND/NAME... or delete -f FILE")
			default:
				rs, err = namedResources(args[0], args[1:], ns.namespace)
			}
			if err != nil {
				return err
			}
			if opts.force {
				for _, r := range rs {
					if k := kindName(r); k != "IPPool" && k != "Node" {
						return usageErrorf("delete: --force applies to IPPools and Nodes only, not %s", strings.ToLower(k))
					}
				}
			}
			c, err := e.connect(cmd.Context())
			if err != nil {
				return err
			}
			invalid, failed := 0, 0
			for _, r := range rs {
				what, err := del(cmd.Context(), c, r)
				if err != nil {
					if exitCode(err) == exitInput {
						invalid++
					} else {
						failed++
					}
					e.errorf("%s: %s", refOf(r), describeErr(err))
					continue
				}
				e.printf("%s %s\n", refOf(r), what)
			}
			switch {
			case invalid > 0:
				return reported{exitInput}
			case failed > 0:
				return reported{exitRuntime}
			}
			return nil
		},
	}
	addFileFlag(cmd, &files, "resources to delete")
	ns.add(cmd, false)
	cmd.Flags().BoolVar(&opts.ignoreNotFound, "ignore-not-found", false, "treat a missing resource as deleted")
	cmd.Flags().BoolVar(&opts.force, "force", false, "delete a disabled IPPool even though addresses are still allocated in it, or a Node whose terrace-node is running")
	return cmd
}

// refResources builds resources from references as `-o name` prints them: KIND/NAME, or
// KIND/NAMESPACE/NAME for namespaced kinds (KIND/NAME takes -n), so that output can be fed back:
// `terracectl delete $(terracectl get np -A -o name)`.
func refResources(refs []string, namespace string) ([]api.Resource, error) {
	out := make([]api.Resource, 0, len(refs))
	for _, ref := range refs {
		parts := strings.Split(ref, "/")
		bad := func(why string) error {
			return &exitError{code: exitInput, err: fmt.Errorf("reference %q: %s", ref, why)}
		}
		if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
			return nil, bad("want KIND/NAME or KIND/NAMESPACE/NAME (and then no separate KIND argument)")
		}
		info, err := api.LookupKind(parts[0])
		if err != nil {
			return nil, &exitError{code: exitInput, err: err}
		}
		r := info.New()
		m := r.GetObjectMeta()
		m.Name = parts[len(parts)-1]
		switch {
		case len(parts) == 3 && !info.Namespaced:
			return nil, bad(info.Kind + " is not namespaced")
		case len(parts) == 3:
			m.Namespace = parts[1]
		case info.Namespaced:
			m.Namespace = namespace
		}
		if err := checkName(r); err != nil {
			return nil, &exitError{code: exitInput, err: fmt.Errorf("reference %q: %w", ref, err)}
		}
		out = append(out, r)
	}
	return out, nil
}

// checkName refuses a resource without a name, or a namespaced one without a namespace, or a
// name that could not be a key segment: what a datastore call on it would do is not what anyone
// asked for.
func checkName(r api.Resource) error {
	m := r.GetObjectMeta()
	info, err := api.KindOf(r)
	if err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(m.Name) == "":
		return fmt.Errorf("%s: metadata.name is empty", info.Kind)
	case strings.ContainsAny(m.Name, "/ \t\n"):
		return fmt.Errorf("%s %q: a name has no '/' or white space", info.Kind, m.Name)
	case info.Namespaced && strings.TrimSpace(m.Namespace) == "":
		return fmt.Errorf("%s %q: no namespace", info.Kind, m.Name)
	}
	return nil
}

// namedResources builds empty resources of a kind that carry only names, for commands that
// address resources from the command line.
func namedResources(kind string, names []string, namespace string) ([]api.Resource, error) {
	info, err := api.LookupKind(kind)
	if err != nil {
		return nil, &exitError{code: exitInput, err: err}
	}
	out := make([]api.Resource, 0, len(names))
	for _, n := range names {
		r := info.New()
		r.GetObjectMeta().Name = n
		if info.Namespaced {
			r.GetObjectMeta().Namespace = namespace
		}
		if err := checkName(r); err != nil {
			return nil, &exitError{code: exitInput, err: err}
		}
		out = append(out, r)
	}
	return out, nil
}

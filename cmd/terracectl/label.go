package main

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
)

// labelChange is one KEY=VALUE (set) or KEY- (remove) argument.
type labelChange struct {
	key, value string
	remove     bool
}

func parseLabelArgs(args []string) ([]labelChange, error) {
	var out []labelChange
	seen := map[string]bool{}
	for _, a := range args {
		var ch labelChange
		switch {
		case strings.HasSuffix(a, "-") && !strings.Contains(a, "="):
			ch = labelChange{key: strings.TrimSuffix(a, "-"), remove: true}
		case strings.Contains(a, "="):
			k, v, _ := strings.Cut(a, "=")
			ch = labelChange{key: k, value: v}
		default:
			return nil, usageErrorf("label %q: want KEY=VALUE to set or KEY- to remove", a)
		}
		if ch.key == "" {
			return nil, usageErrorf("label %q: empty key", a)
		}
		if seen[ch.key] {
			return nil, usageErrorf("label %q: key given twice", ch.key)
		}
		seen[ch.key] = true
		out = append(out, ch)
	}
	return out, nil
}

// applyLabels changes labels as kubectl does: changing an existing value needs overwrite,
// removing a missing key is not an error. It reports whether anything changed.
func applyLabels(labels map[string]string, changes []labelChange, overwrite bool) (map[string]string, bool, error) {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	changed := false
	for _, ch := range changes {
		old, has := out[ch.key]
		switch {
		case ch.remove:
			if has {
				delete(out, ch.key)
				changed = true
			}
		case has && old == ch.value:
		case has && !overwrite:
			return nil, false, fmt.Errorf("label %q already has the value %q; use --overwrite to change it", ch.key, old)
		default:
			out[ch.key] = ch.value
			changed = true
		}
	}
	if len(out) == 0 {
		out = nil
	}
	return out, changed, nil
}

func newLabelCmd(e *env) *cobra.Command {
	var ns nsFlags
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "label (KIND NAME | KIND/NAME) KEY=VALUE... KEY-...",
		Short: "Set (KEY=VALUE) or remove (KEY-) labels on a resource",
		Args:  rangeArgs(2, -1, "label (KIND NAME | KIND/NAME) KEY=VALUE... KEY-..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			var targets []api.Resource
			var err error
			if strings.Contains(args[0], "/") {
				targets, err = refResources(args[:1], ns.namespace)
				args = args[1:]
			} else if len(args) < 3 {
				return usageErrorf("label: usage: label (KIND NAME | KIND/NAME) KEY=VALUE... KEY-...")
			} else {
				targets, err = namedResources(args[0], args[1:2], ns.namespace)
				args = args[2:]
			}
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return usageErrorf("label: give at least one KEY=VALUE or KEY-")
			}
			changes, err := parseLabelArgs(args)
			if err != nil {
				return err
			}
			t := targets[0]
			c, err := e.connect(cmd.Context())
			if err != nil {
				return err
			}
			// Read-modify-write under compare-and-swap; a concurrent writer makes us re-read, never
			// overwrite their change.
			for attempt := 0; attempt < 5; attempt++ {
				r, err := c.Get(cmd.Context(), kindName(t), t.GetObjectMeta().Namespace, t.GetObjectMeta().Name)
				if errors.Is(err, datastore.ErrNotFound) {
					return fmt.Errorf("%s not found", refOf(t))
				}
				if err != nil {
					return fmt.Errorf("get %s: %w", refOf(t), err)
				}
				m := r.GetObjectMeta()
				labels, changed, err := applyLabels(m.Labels, changes, overwrite)
				if err != nil {
					return fmt.Errorf("%s: %w", refOf(t), err)
				}
				if !changed {
					e.printf("%s not labeled (no change)\n", refOf(r))
					return nil
				}
				m.Labels = labels
				_, err = c.Update(cmd.Context(), r)
				if errors.Is(err, datastore.ErrConflict) {
					continue
				}
				if err != nil {
					return fmt.Errorf("label %s: %w", refOf(r), err)
				}
				e.printf("%s labeled\n", refOf(r))
				return nil
			}
			return fmt.Errorf("label %s: gave up after repeated conflicting writes", refOf(t))
		},
	}
	ns.add(cmd, false)
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing label")
	return cmd
}

package calc

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// SetWriter is the desired-state half of *ipsets.Registry.
type SetWriter interface {
	AddOrReplace(m ipsets.Meta, members []string) error
	AddMembers(name string, members []string) error
	RemoveMembers(name string, members []string) error
	Remove(name string)
}

// TableWriter is the desired-state half of *iptables.Table.
type TableWriter interface {
	UpdateChain(c iptables.Chain) error
	RemoveChain(name string)
	SetInsertions(kernelChain string, rules []iptables.Rule) error
	SetAppend(atEnd bool)
}

// RouteWriter is the desired-state half of *routes.Writer.
type RouteWriter interface {
	Set(p netip.Prefix, t routes.Target) error
	Delete(p netip.Prefix)
}

var (
	_ SetWriter   = (*ipsets.Registry)(nil)
	_ TableWriter = (*iptables.Table)(nil)
	_ RouteWriter = (*routes.Writer)(nil)
)

// Writers are the dataplane writers a Delta is recorded into; a nil writer (or a table missing
// from Tables) skips that part.
type Writers struct {
	IPSets SetWriter
	Tables map[TableID]TableWriter
	Routes RouteWriter
}

// RecordInto hands the delta to the writers' desired state; it does not touch the kernel (the
// caller then runs the writers' Apply, ipset updates before iptables before ipset deletions).
// Failures are independent and joined.
func (d *Delta) RecordInto(w Writers) error {
	var errs []error
	if w.IPSets != nil {
		for _, s := range d.IPSetsReplaced {
			if err := w.IPSets.AddOrReplace(s.Meta, s.Members); err != nil {
				errs = append(errs, fmt.Errorf("record ipset %s: %w", s.Meta.Name, err))
			}
		}
		for _, m := range d.IPSetMembers {
			if len(m.Removed) > 0 {
				if err := w.IPSets.RemoveMembers(m.Name, m.Removed); err != nil {
					errs = append(errs, fmt.Errorf("record ipset %s removals: %w", m.Name, err))
				}
			}
			if len(m.Added) > 0 {
				if err := w.IPSets.AddMembers(m.Name, m.Added); err != nil {
					errs = append(errs, fmt.Errorf("record ipset %s additions: %w", m.Name, err))
				}
			}
		}
		for _, n := range d.IPSetsRemoved {
			w.IPSets.Remove(n)
		}
	}
	for _, cu := range d.ChainsUpdated {
		if t := w.Tables[cu.Table]; t != nil {
			if err := t.UpdateChain(cu.Chain); err != nil {
				errs = append(errs, fmt.Errorf("record chain %s: %w", cu.Chain.Name, err))
			}
		}
	}
	for _, cr := range d.ChainsRemoved {
		if t := w.Tables[cr.Table]; t != nil {
			t.RemoveChain(cr.Name)
		}
	}
	if d.AppendInsertions != nil {
		for _, t := range w.Tables {
			t.SetAppend(*d.AppendInsertions)
		}
	}
	for _, iu := range d.InsertionsUpdated {
		if t := w.Tables[iu.Table]; t != nil {
			if err := t.SetInsertions(iu.Chain.Name, iu.Chain.Rules); err != nil {
				errs = append(errs, fmt.Errorf("record insertions in %s: %w", iu.Chain.Name, err))
			}
		}
	}
	if w.Routes != nil {
		for p, t := range d.RoutesSet {
			if err := w.Routes.Set(p, t); err != nil {
				errs = append(errs, fmt.Errorf("record route %s: %w", p, err))
			}
		}
		for _, p := range d.RoutesRemoved {
			w.Routes.Delete(p)
		}
	}
	return errors.Join(errs...)
}

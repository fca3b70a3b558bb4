package felix

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// cycle flushes the calculator into the writers and applies them; the writers of the classes in
// resync re-read the kernel first. It returns the joined errors of the writers that failed.
func (a *Agent) cycle(ctx context.Context, resync classSet) error {
	start := time.Now()
	a.dirty = false
	resync |= a.retryResync
	a.retryResync = 0
	a.push(a.calc.Flush())
	a.log.Debug("calculated and pushed", "took", time.Since(start).String())
	results, ok, suspect := a.applyAll(ctx, resync)
	// After the sysctl writer: the fast path attaches only once conntrack is liberal.
	a.fastPathArmed = true
	a.kickFastPath(resync.has(classRoutes))
	// A failure may be the other policy class's drift, which the failing writer's own re-read
	// cannot see: a table restore fails on a set destroyed behind the ipset writer's back, and a
	// set stays in use by a rule the table writer does not know of. With the two refresh timers
	// apart, such drift could last until the other class's next refresh, so the next cycle
	// re-reads it, once per run of failures: if that did not clear the failure, the drift was not
	// its cause, and re-reading it at every apply of a busy node (on the loop) would only cost.
	a.retryResync = suspect &^ a.suspectTried
	a.suspectTried |= suspect
	policyOK := ok.v4 && ok.v6
	a.lastApply = time.Now()
	elapsed := a.lastApply.Sub(start)

	var errs []error
	followUp := false
	for _, name := range a.writerNames() {
		ws := a.writers[name]
		err := results[name]
		if resync.has(classOf(name)) {
			a.metrics.writerResync(name)
		}
		ws.err = err
		a.health.setWriterErr(name, err)
		if err != nil {
			a.metrics.writerError(name)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if !ws.inSync {
			// The datastore was in sync before this first cycle ran, so this writer now holds
			// the complete desired state: from here on it may delete what nobody wants.
			ws.inSync = true
			a.setInSync(name)
			followUp = true
		}
	}
	a.health.setModelErrs(modelErrStrings(a.pushErrs))
	if a.status != nil {
		a.status.set(a.statusSnapshot(ok))
	}
	if policyOK {
		a.health.setProgrammed()
		if f := a.dp.AfterProgrammed; f != nil {
			a.dp.AfterProgrammed = nil
			f(ctx)
		}
	}
	a.metrics.observeApply(elapsed, resync != 0)
	a.metrics.setDataplane(a.chainRules, a.setMembers, len(a.locals))
	err := errors.Join(errs...)
	if err != nil {
		a.retryDelay = min(max(a.retryDelay*2, a.cfg.RetryMin), a.cfg.RetryMax)
		a.retryAt = a.lastApply.Add(a.retryDelay)
		a.log.Warn("dataplane apply failed; retrying", "retry_in", a.retryDelay.String(), "err", err)
	} else {
		a.retryDelay, a.retryAt = 0, time.Time{}
		a.suspectTried = 0
	}
	a.pollAt = time.Time{}
	conflicts := a.dp.Routes.Conflicts()
	a.noteConflicts(conflicts)
	// A route whose key another protocol's route holds (an operator's, or another tool's at the
	// kernel's default metric) is tried again at the poll, not only at the next resync.
	if len(a.dp.Routes.Pending()) > 0 || len(conflicts) > 0 || (a.dp.Sysctls != nil && len(a.dp.Sysctls.Pending()) > 0) {
		a.pollAt = a.lastApply.Add(a.cfg.PendingPoll)
	}
	if followUp {
		a.dirty = true
	}
	a.log.Debug("dataplane applied", "resync", resync.String(), "took", elapsed.String(), "ok", err == nil)
	return err
}

// noteConflicts logs each prefix once when another protocol's route starts holding its key, and
// once when that ends, so an operator sees why a pod or block is not routed here.
func (a *Agent) noteConflicts(now []netip.Prefix) {
	cur := make(map[netip.Prefix]bool, len(now))
	for _, p := range now {
		cur[p] = true
		if !a.conflicts[p] {
			a.log.Warn("route not programmed: another protocol's route holds its key; retrying", "prefix", p.String())
		}
	}
	for p := range a.conflicts {
		if !cur[p] {
			a.log.Info("route conflict resolved", "prefix", p.String())
		}
	}
	a.conflicts = cur
}

func (a *Agent) setInSync(name string) {
	switch name {
	case "ipsets":
		a.dp.IPSets.SetInSync()
	case "routes":
		a.dp.Routes.SetInSync()
	case "sysctl":
	default:
		for id, t := range a.dp.Tables {
			if tableWriterName(id) == name {
				t.SetInSync()
			}
		}
	}
	a.log.Info("writer in sync; stale objects may now be removed", "writer", name)
}

// applyAll applies every writer in the order they require: set updates before the rules that
// use them, set deletions after no rule references them. Writers that share nothing run at the
// same time: routes and interface settings beside the policy writers, and the tables (each its
// own writer and its own iptables-restore transaction) beside each other, so a start costs the
// slowest chain of dependent steps rather than the sum of all of them. A failing writer does not
// stop the others. Only the writers of the classes in resync re-read the kernel; the order is the
// same whichever they are, and it is what keeps a resync of the tables and one of the sets safe in
// different cycles: a set resync never destroys (the ipset writer defers its deletions), and the
// deletions still wait for every table. The families returned say for which of IPv4 and IPv6 the
// ipsets and every policy table are now as calculated; suspect are the classes whose kernel state
// may have caused a failure of the other's (see cycle).
func (a *Agent) applyAll(ctx context.Context, resync classSet) (_ map[string]error, _ familiesOK, suspect classSet) {
	a.waitPrimed()
	run := func(name string, class writerClass, apply, resyncf func(context.Context) error) error {
		f := apply
		re := resync.has(class)
		if re {
			f = resyncf
			if fin := a.finishes[name]; fin != nil {
				f = fin // repair from a read made off the loop (startResync)
			}
		}
		start := time.Now()
		err := f(ctx)
		// Per-writer cost is what tells a slow apply's cause apart (kernel tool vs calculation).
		a.log.Debug("writer applied", "writer", name, "resync", re, "took", time.Since(start).String())
		return err
	}
	var side sync.WaitGroup
	var routesErr, sysctlErr error
	side.Go(func() { routesErr = run("routes", classRoutes, a.dp.Routes.Apply, a.dp.Routes.Resync) })
	if a.dp.Sysctls != nil {
		side.Go(func() { sysctlErr = run("sysctl", classRoutes, a.dp.Sysctls.Apply, a.dp.Sysctls.Resync) })
	}

	res := map[string]error{}
	setsErr := run("ipsets", classIPSets, a.dp.IPSets.ApplyUpdates, a.dp.IPSets.Resync)
	ids := a.sortedTables()
	tableErrs := make([]error, len(ids))
	var tables sync.WaitGroup
	for i, id := range ids {
		t := a.dp.Tables[id]
		tables.Go(func() { tableErrs[i] = run(tableWriterName(id), classIptables, t.Apply, t.Resync) })
	}
	tables.Wait()
	tablesOK := true
	policyTablesOK := familiesOK{v4: true, v6: true}
	for i, id := range ids {
		if tableErrs[i] != nil {
			res[tableWriterName(id)] = tableErrs[i]
			tablesOK = false
			// A set its rules need may be gone from the kernel (the nat table's masquerade
			// rules use sets too).
			suspect = suspect.with(classIPSets)
			// The nat table holds natOutgoing, no policy: its failure is reported, but must
			// not hold back every endpoint's "policy programmed" status (and so every ADD that
			// waits for it).
			if id.Table != "nat" {
				policyTablesOK.clear(id.IPVersion)
			}
		}
	}
	setsOK := setsErr == nil
	// Unwanted sets go only now that every table has let go of them, in resyncs too (the ipset
	// writer defers its deletions to here, ipsets.Options.DeferDeletions). Its own name, so a
	// resync's read-ahead finish for "ipsets" is not run a second time.
	if tablesOK {
		delErr := run("ipset-deletions", classIPSets, a.dp.IPSets.ApplyDeletions, a.dp.IPSets.ApplyDeletions)
		if delErr != nil {
			suspect = suspect.with(classIptables) // a rule the tables do not know of may use the set
		}
		setsErr = errors.Join(setsErr, delErr)
	} else if a.writers["ipsets"].inSync {
		// A table that failed may still reference a set we would destroy.
		setsErr = errors.Join(setsErr, errors.New("set deletions postponed: an iptables table failed"))
	}
	side.Wait()
	for name, err := range map[string]error{"ipsets": setsErr, "routes": routesErr, "sysctl": sysctlErr} {
		if err != nil {
			res[name] = err
		}
	}
	ok := policyTablesOK.and(a.policyPushOK())
	if !setsOK {
		ok = familiesOK{} // the set writer is shared: which family a failed set serves is not known
	}
	return res, ok, suspect
}

// familiesOK says, per IP family, whether the policy calculated for it is in the kernel.
type familiesOK struct{ v4, v6 bool }

func (f *familiesOK) clear(ipVersion int) {
	if ipVersion == 6 {
		f.v6 = false
	} else {
		f.v4 = false
	}
}

func (f familiesOK) and(g familiesOK) familiesOK {
	return familiesOK{v4: f.v4 && g.v4, v6: f.v6 && g.v6}
}

// policyPushOK says for which families no policy object was refused: a chain or insertion
// belongs to its table's family (nat holds no policy); a refused set counts against both.
func (a *Agent) policyPushOK() familiesOK {
	ok := familiesOK{v4: true, v6: true}
	for o := range a.pushErrs {
		switch o.kind {
		case objRoute, objSysctl:
		case objChain, objInsertions:
			if o.table.Table != "nat" {
				ok.clear(o.table.IPVersion)
			}
		default:
			ok = familiesOK{}
		}
	}
	return ok
}

// modelObj names one calculated object a writer was handed, for remembering its refusal.
type modelObj struct {
	kind  string
	table calc.TableID // chains and insertions
	name  string
}

const (
	objIPSet      = "ipset"
	objChain      = "chain"
	objInsertions = "insertions"
	objRoute      = "route"
	objSysctl     = "sysctl"
)

func (o modelObj) String() string {
	if o.kind == objChain || o.kind == objInsertions {
		return fmt.Sprintf("%s %s %s", o.kind, tableWriterName(o.table), o.name)
	}
	return o.kind + " " + o.name
}

func modelErrStrings(errs map[modelObj]error) map[string]error {
	out := make(map[string]error, len(errs))
	for o, err := range errs {
		out[o.String()] = err
	}
	return out
}

// push hands a calculated delta to the writers. A refusal is a calculation bug, not a kernel
// failure: it is remembered per object (and reported in readiness) until the object changes.
func (a *Agent) push(d *calc.Delta) {
	if d == nil || d.Empty() {
		return
	}
	a.log.Debug("calculated change", "sets_replaced", len(d.IPSetsReplaced), "set_member_changes", len(d.IPSetMembers),
		"sets_removed", len(d.IPSetsRemoved), "chains_updated", len(d.ChainsUpdated), "chains_removed", len(d.ChainsRemoved),
		"insertions_updated", len(d.InsertionsUpdated), "routes_set", len(d.RoutesSet), "routes_removed", len(d.RoutesRemoved),
		"endpoints", len(d.Endpoints), "endpoints_removed", len(d.EndpointsRemoved))
	note := func(obj modelObj, err error) {
		if err != nil {
			a.pushErrs[obj] = err
			a.log.Error("writer refused calculated object", "object", obj, "err", err)
		} else {
			delete(a.pushErrs, obj)
		}
	}
	ips := a.dp.IPSets
	for _, s := range d.IPSetsReplaced {
		note(modelObj{kind: objIPSet, name: s.Meta.Name}, ips.AddOrReplace(s.Meta, s.Members))
		a.setMembers[s.Meta.Name] = len(s.Members)
	}
	for _, m := range d.IPSetMembers {
		var errs []error
		if len(m.Added) > 0 {
			errs = append(errs, ips.AddMembers(m.Name, m.Added))
		}
		if len(m.Removed) > 0 {
			errs = append(errs, ips.RemoveMembers(m.Name, m.Removed))
		}
		note(modelObj{kind: objIPSet, name: m.Name}, errors.Join(errs...))
		a.setMembers[m.Name] += len(m.Added) - len(m.Removed)
	}
	for _, name := range d.IPSetsRemoved {
		ips.Remove(name)
		delete(a.setMembers, name)
		note(modelObj{kind: objIPSet, name: name}, nil)
	}
	for _, cu := range d.ChainsUpdated {
		obj := modelObj{kind: objChain, table: cu.Table, name: cu.Chain.Name}
		t, err := a.table(cu.Table)
		if err == nil {
			err = t.UpdateChain(cu.Chain)
		}
		note(obj, err)
		a.chainRules[calc.ChainRef{Table: cu.Table, Name: cu.Chain.Name}] = len(cu.Chain.Rules)
	}
	for _, ref := range d.ChainsRemoved {
		if t, err := a.table(ref.Table); err == nil {
			t.RemoveChain(ref.Name)
		}
		delete(a.chainRules, ref)
		note(modelObj{kind: objChain, table: ref.Table, name: ref.Name}, nil)
	}
	if d.AppendInsertions != nil {
		for _, t := range a.dp.Tables {
			t.SetAppend(*d.AppendInsertions)
		}
	}
	for _, iu := range d.InsertionsUpdated {
		obj := modelObj{kind: objInsertions, table: iu.Table, name: iu.Chain.Name}
		t, err := a.table(iu.Table)
		if err == nil {
			err = t.SetInsertions(iu.Chain.Name, iu.Chain.Rules)
		}
		note(obj, err)
		// Insertions are counted under the kernel chain's name; they are rules too.
		ref := calc.ChainRef{Table: iu.Table, Name: iu.Chain.Name}
		if len(iu.Chain.Rules) == 0 {
			delete(a.chainRules, ref)
		} else {
			a.chainRules[ref] = len(iu.Chain.Rules)
		}
	}
	for _, p := range slices.SortedFunc(maps.Keys(d.RoutesSet), comparePrefix) {
		note(modelObj{kind: objRoute, name: p.String()}, a.dp.Routes.Set(p, d.RoutesSet[p]))
		a.fastPathRoute(p, d.RoutesSet[p])
	}
	for _, p := range d.RoutesRemoved {
		a.dp.Routes.Delete(p)
		note(modelObj{kind: objRoute, name: p.String()}, nil)
		if a.dp.FastPath != nil && p.IsSingleIP() {
			a.dp.FastPath.DeleteWorkload(p.Addr())
		}
	}
}

// fastPathRoute gives the fast path the workload addresses: a route to one address through a
// Terrace interface is a local workload's (the calculator routes nothing else there).
func (a *Agent) fastPathRoute(p netip.Prefix, t routes.Target) {
	if a.dp.FastPath == nil || !p.IsSingleIP() {
		return
	}
	if t.Blackhole || !strings.HasPrefix(t.Dev, calc.WorkloadIfacePrefix) {
		a.dp.FastPath.DeleteWorkload(p.Addr())
		return
	}
	a.dp.FastPath.SetWorkload(p.Addr(), t.Dev)
}

func (a *Agent) table(id calc.TableID) (Table, error) {
	t, ok := a.dp.Tables[id]
	if !ok {
		return nil, fmt.Errorf("find table writer: no writer for %s", tableWriterName(id))
	}
	return t, nil
}

// isKernelChain tells insertions (rules in kernel chains) from Terrace's own chains in metrics.
func isKernelChain(name string) bool { return !strings.HasPrefix(name, iptables.ChainPrefix) }

package felix

import (
	"context"
	"sync"
	"time"
)

// aheadReader is a writer whose resync can read the kernel away from the loop
// (*iptables.Table, *ipsets.Registry).
type aheadReader interface {
	ReadAhead() (read func(context.Context), finish func(context.Context) error)
}

// aheadReads is a periodic resync whose reads are done: the classes it resyncs and, by writer
// name, the finish of each writer that read ahead.
type aheadReads struct {
	classes  classSet
	finishes map[string]func(context.Context) error
}

// refreshDue is class c's refresh timer firing. One resync is in flight at a time: a class that
// falls due meanwhile waits for it (the ipsets' refresh must not be lost for a whole interval
// because the tables' reads were under way), and a tick of a class whose own resync is still in
// flight is skipped, as that resync repairs its drift already.
func (a *Agent) refreshDue(ctx context.Context, c writerClass) {
	if !a.everInSync {
		// The first apply reads the kernel anyway.
		return
	}
	if a.inFlight.has(c) {
		a.log.Debug("refresh skipped: the previous one is still reading", "class", c.String())
		return
	}
	a.due = a.due.with(c)
	a.startResync(ctx)
}

// startResync begins the periodic resync of the classes due. Reading the kernel back is its slow
// part (iptables-save of tens of thousands of rules takes about a second on two cores, and
// iptables-nft-save of the small nat table costs nearly as much because it lists the whole
// ruleset), so the writers that can read ahead do it on another goroutine while the loop goes on
// applying changes; the repair runs in the loop once the reads are back (finishResync). A writer
// that wrote in between reads again then. Only the due classes' writers re-read: the others apply
// as in any cycle, which keeps applyAll's order (sets before the rules that use them, set
// deletions after every table let go) whichever classes a cycle resyncs.
func (a *Agent) startResync(ctx context.Context) {
	if a.inFlight != 0 || a.due == 0 {
		return
	}
	classes := a.due
	a.due = 0
	var reads []func(context.Context)
	finishes := map[string]func(context.Context) error{}
	add := func(name string, w any) {
		if r, ok := w.(aheadReader); ok {
			read, finish := r.ReadAhead()
			reads = append(reads, read)
			finishes[name] = finish
		}
	}
	if classes.has(classIPSets) {
		add("ipsets", a.dp.IPSets)
	}
	if classes.has(classIptables) {
		for _, id := range a.sortedTables() {
			add(tableWriterName(id), a.dp.Tables[id])
		}
	}
	if len(reads) == 0 || a.bg == nil {
		// Routes and interface settings read over netlink and /proc, quick enough for the loop.
		a.cycle(ctx, classes)
		return
	}
	a.inFlight = classes // not empty: due was not
	a.bg.Go(func() {
		start := time.Now()
		var all sync.WaitGroup
		for _, read := range reads {
			all.Go(func() { read(ctx) })
		}
		all.Wait()
		a.log.Debug("resync reads done off the loop", "classes", classes.String(), "took", time.Since(start).String())
		a.aheadC <- aheadReads{classes: classes, finishes: finishes} // buffered for the one resync in flight: never blocks
	})
}

// finishResync runs the resync cycle with the reads startResync made, then starts the classes
// that fell due meanwhile.
func (a *Agent) finishResync(ctx context.Context, r aheadReads) {
	a.inFlight = 0
	a.finishes = r.finishes
	a.cycle(ctx, r.classes)
	a.finishes = nil
	a.startResync(ctx)
}

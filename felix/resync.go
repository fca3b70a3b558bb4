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

// startResync begins a periodic resync. Reading the kernel back is its slow part (iptables-save of
// tens of thousands of rules takes about a second on two cores, and iptables-nft-save of the small
// nat table costs nearly as much because it lists the whole ruleset), so the writers that can read
// ahead do it on another goroutine while the loop goes on applying changes; the repair runs in
// the loop once the reads are back (finishResync). A writer that wrote in between reads again
// then. One resync is in flight at a time: a tick during one is skipped.
func (a *Agent) startResync(ctx context.Context) {
	if a.resyncing {
		return
	}
	var reads []func(context.Context)
	finishes := map[string]func(context.Context) error{}
	add := func(name string, w any) {
		if r, ok := w.(aheadReader); ok {
			read, finish := r.ReadAhead()
			reads = append(reads, read)
			finishes[name] = finish
		}
	}
	add("ipsets", a.dp.IPSets)
	for _, id := range a.sortedTables() {
		add(tableWriterName(id), a.dp.Tables[id])
	}
	if len(reads) == 0 || a.bg == nil {
		a.cycle(ctx, true)
		return
	}
	a.resyncing = true
	a.bg.Go(func() {
		start := time.Now()
		var all sync.WaitGroup
		for _, read := range reads {
			all.Go(func() { read(ctx) })
		}
		all.Wait()
		a.log.Debug("resync reads done off the loop", "took", time.Since(start).String())
		a.aheadC <- finishes // buffered for the one resync in flight: never blocks
	})
}

// finishResync runs the resync cycle with the reads startResync made.
func (a *Agent) finishResync(ctx context.Context, finishes map[string]func(context.Context) error) {
	a.resyncing = false
	a.finishes = finishes
	defer func() { a.finishes = nil }()
	a.cycle(ctx, true)
}

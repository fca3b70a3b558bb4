package felix

import (
	"context"
	"sync"
	"time"
)

// primer is a writer that can read the kernel ahead of its first apply (*iptables.Table,
// *ipsets.Registry).
type primer interface {
	Prime(ctx context.Context) error
}

// startPriming has the policy writers read the kernel while the agent still waits for the
// datastore: after a restart, iptables-save of tens of thousands of rules would otherwise sit
// between "in sync" and "programmed". The first apply waits for it (waitPrimed). A failed read
// costs nothing: that writer reads again when it first applies.
func (a *Agent) startPriming(ctx context.Context, wg *sync.WaitGroup) {
	type job struct {
		name string
		p    primer
	}
	var jobs []job
	if p, ok := a.dp.IPSets.(primer); ok {
		jobs = append(jobs, job{"ipsets", p})
	}
	for _, id := range a.sortedTables() {
		if p, ok := a.dp.Tables[id].(primer); ok {
			jobs = append(jobs, job{tableWriterName(id), p})
		}
	}
	if len(jobs) == 0 {
		return
	}
	done := make(chan struct{})
	a.primed = done
	wg.Go(func() {
		defer close(done)
		var all sync.WaitGroup
		for _, j := range jobs {
			all.Go(func() {
				start := time.Now()
				if err := j.p.Prime(ctx); err != nil {
					a.log.Debug("reading the kernel ahead failed; the first apply reads again", "writer", j.name, "err", err)
					return
				}
				a.log.Debug("writer primed", "writer", j.name, "took", time.Since(start).String())
			})
		}
		all.Wait()
	})
}

// waitPrimed returns once startPriming's reads are done; only the loop goroutine calls it.
func (a *Agent) waitPrimed() {
	if a.primed != nil {
		<-a.primed
		a.primed = nil
	}
}

package felix

import (
	"context"
	"time"
)

// Back-off of a failing fast path apply; a pending interface (the endpoint arrived before its
// veth) is looked for again at the pending poll, and at once on its link event.
const (
	fastPathRetryMin = time.Second
	fastPathRetryMax = 30 * time.Second
)

// kickFastPath asks runFastPath for an apply (a resync with the routes class's refresh); a
// kick while one is queued is folded into it.
func (a *Agent) kickFastPath(resync bool) {
	if a.dp.FastPath == nil {
		return
	}
	if resync {
		a.fastPathResync.Store(true)
	}
	select {
	case a.fastPathKick <- struct{}{}:
	default:
	}
}

// runFastPath applies the fast path writer whenever the loop kicks it. Its failures are logged
// and counted (terrace_felix_errors_total{writer="fastpath"}) but do not make felix unready:
// without the fast path every packet still goes through the kernel and iptables.
func (a *Agent) runFastPath(ctx context.Context) {
	fp := a.dp.FastPath
	var retry <-chan time.Time
	var delay time.Duration
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.fastPathKick:
		case <-retry:
		}
		retry = nil
		start := time.Now()
		var err error
		if a.fastPathResync.Swap(false) {
			a.metrics.writerResync("fastpath")
			err = fp.Resync(ctx)
		} else {
			err = fp.Apply(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Debug("writer applied", "writer", "fastpath", "took", time.Since(start).String())
		if err != nil {
			a.metrics.writerError("fastpath")
			delay = min(max(2*delay, fastPathRetryMin), fastPathRetryMax)
			retry = time.After(delay)
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				a.log.Warn("fast path apply failed; those flows go through the kernel meanwhile", "retry_in", delay.String(), "err", err)
			}
			continue
		}
		if lastErr != "" {
			a.log.Info("fast path applied again")
			lastErr = ""
		}
		delay = 0
		if len(fp.Pending()) > 0 {
			retry = time.After(a.cfg.PendingPoll)
		}
	}
}

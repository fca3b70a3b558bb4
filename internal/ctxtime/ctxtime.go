// Package ctxtime holds time helpers that honour a context. It owns no state and must never
// import anything of Terrace's: the writers, IPAM and tests all use it.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends (then it returns ctx's error). d <= 0 returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

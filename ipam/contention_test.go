package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestConflictPause(t *testing.T) {
	upper := func(n time.Duration) time.Duration { return n - 1 } // the longest pause allowed
	for _, c := range []struct {
		attempt int
		want    time.Duration
	}{
		{0, 0},
		{1, time.Millisecond},
		{2, 2 * time.Millisecond},
		{4, 8 * time.Millisecond},
		{6, 32 * time.Millisecond},
		{7, maxConflictPause},
		{99, maxConflictPause},
		{1 << 20, maxConflictPause}, // no shift overflow
	} {
		if got := conflictPause(c.attempt, upper); got != c.want {
			t.Errorf("attempt %d: longest pause %v, want %v", c.attempt, got, c.want)
		}
		if got := conflictPause(c.attempt, func(time.Duration) time.Duration { return 0 }); got != 0 {
			t.Errorf("attempt %d: shortest pause %v, want 0", c.attempt, got)
		}
	}
}

func TestLostRaceEndsWithContext(t *testing.T) {
	a := &Allocator{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.lostRace(ctx, 50); !errors.Is(err, context.Canceled) {
		t.Errorf("lostRace with a cancelled context: %v, want context.Canceled", err)
	}
	if err := a.lostRace(ctx, 0); err != nil {
		t.Errorf("first conflict retries at once, got %v", err)
	}
	if a.Retries() != 2 {
		t.Errorf("Retries() = %d, want 2", a.Retries())
	}
}

// churn runs workers goroutines, each assigning and releasing one address rounds times (by
// handle and by address in turn), on allocators[i % len(allocators)]; it returns the conflicts
// the allocators retried. Every error fails the test.
func churn(t *testing.T, allocators []*Allocator, workers, rounds int) int64 {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := make(chan struct{})
	for w := range workers {
		a := allocators[w%len(allocators)]
		wg.Go(func() {
			<-start
			ctx := ctxT(t)
			for r := range rounds {
				h := fmt.Sprintf("w%d-r%d", w, r)
				got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: h, Num4: 1})
				if err != nil {
					errs[w] = fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
				if r%2 == 0 {
					_, err = a.ReleaseByHandle(ctx, h)
				} else {
					_, err = a.ReleaseIPs(ctx, got.IPv4...)
				}
				if err != nil {
					errs[w] = fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var retries int64
	for _, a := range allocators {
		retries += a.Retries()
	}
	return retries
}

// oneBlockEnv is a pool of one block, already claimed by h1 (so workers contend for the block's
// key, not for claims) with one address held by "seed".
func oneBlockEnv(t *testing.T) *testEnv {
	e := newTestEnv(t)
	e.addPool("p4", "198.18.2.0/26", 26)
	e.addNode("h1")
	if _, err := e.allocator().AutoAssign(ctxT(t), AutoAssignArgs{Node: "h1", Handle: "seed", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	return e
}

func checkOnlySeedLeft(t *testing.T, e *testEnv) {
	t.Helper()
	if left := snapshot(t, e.store()); len(left) != 1 {
		t.Errorf("%d addresses held after every worker released its own, want only the seed's: %v", len(left), left)
	}
	r, err := e.allocator().Check(ctxT(t), CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Errorf("check not clean: %+v", r)
	}
}

// TestOneBlockOneProcess: callers of one Allocator (the node agent serving concurrent ADDs and
// DELs) never race each other in etcd: assignments are batched and every other write to the block
// waits its turn, so not one compare-and-swap conflicts. CI once saw a release give up after a
// hundred straight conflicts with its own process's other callers.
func TestOneBlockOneProcess(t *testing.T) {
	e := oneBlockEnv(t)
	a := e.allocator()
	if retries := churn(t, []*Allocator{a}, 32, 10); retries != 0 {
		t.Errorf("%d compare-and-swap conflicts between callers of one Allocator, want 0", retries)
	}
	checkOnlySeedLeft(t, e)
}

// TestOneBlockManyProcesses: separate processes (an Allocator and a connection each, as
// terrace-cni-etcd without an agent) do race; with several callers each, none may give up.
func TestOneBlockManyProcesses(t *testing.T) {
	e := oneBlockEnv(t)
	var allocators []*Allocator
	for range 6 {
		allocators = append(allocators, e.allocator())
	}
	retries := churn(t, allocators, 30, 10)
	t.Logf("6 processes x 5 callers x 10 rounds on one block: %d conflicts retried", retries)
	checkOnlySeedLeft(t, e)
}

// TestCancelledLeaderDoesNotFailOthers: the caller that writes a block's batches gives up (its
// plugin killed, its request timed out); the others queued behind it, whose contexts are fine,
// still get their addresses.
func TestCancelledLeaderDoesNotFailOthers(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p", "198.18.0.0/24", 26)
	e.res.addNode("h1", nil)
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "warm", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	blk := netip.MustParsePrefix("198.18.0.0/26")
	// Hold the block's turn, so the leader has taken its batch and waits for the turn.
	unlock, err := a.lockBlock(ctx, blk)
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	leader, follower := make(chan error, 1), make(chan error, 1)
	go func() {
		_, _, err := a.assignFromBlock(lctx, blk, 1, "h1", &handleState{id: "leader"}, map[string]string{AttrNode: "h1"}, false)
		leader <- err
	}()
	time.Sleep(100 * time.Millisecond)
	go func() {
		_, _, err := a.assignFromBlock(ctx, blk, 1, "h1", &handleState{id: "follower"}, map[string]string{AttrNode: "h1"}, false)
		follower <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	unlock()
	if err := <-follower; err != nil {
		t.Errorf("a caller with a live context failed with the leader's: %v", err)
	}
	<-leader
	if ips, err := a.IPsByHandle(ctx, "follower"); err != nil || len(ips) != 1 {
		t.Errorf("the follower's handle holds %v (%v), want one address", ips, err)
	}
}

package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// worker is one simulated CNI caller: it allocates and releases at random and remembers exactly
// what it holds. Handles whose last call failed (etcd away) are "uncertain": the test releases
// them by handle once etcd is back, as a CNI DEL would.
type worker struct {
	a         *Allocator
	node      string
	id        string
	rng       *rand.Rand
	held      map[string][]netip.Addr
	uncertain map[string]bool
	seq       int
	lastErr   error
	allocs    int
	releases  int
	failures  int
}

func (w *worker) step(ctx context.Context) {
	if len(w.held) > 0 && w.rng.IntN(100) < 45 {
		w.release(ctx)
		return
	}
	w.seq++
	h := fmt.Sprintf("net.%s-%d", w.id, w.seq)
	n6 := w.rng.IntN(2)
	got, err := w.a.AutoAssign(ctx, AutoAssignArgs{Node: w.node, Handle: h, Num4: 1, Num6: n6,
		Attrs: map[string]string{AttrNamespace: "stress", AttrPod: h}})
	if err != nil {
		w.failures++
		w.lastErr = err
		w.uncertain[h] = true
		return
	}
	w.allocs++
	w.held[h] = append(got.IPv4, got.IPv6...)
}

func (w *worker) release(ctx context.Context) {
	for h, ips := range w.held {
		var err error
		if w.rng.IntN(4) == 0 {
			var not []netip.Addr
			not, err = w.a.ReleaseIPs(ctx, ips...)
			if err == nil && len(not) > 0 {
				panic(fmt.Sprintf("released addresses %v of %s were not assigned", not, h))
			}
		} else {
			var got []netip.Addr
			got, err = w.a.ReleaseByHandle(ctx, h)
			if err == nil && len(got) != len(ips) {
				panic(fmt.Sprintf("handle %s released %v, held %v", h, got, ips))
			}
		}
		delete(w.held, h)
		if err != nil {
			w.failures++
			w.lastErr = err
			w.uncertain[h] = true
		} else {
			w.releases++
		}
		return
	}
}

type stressResult struct {
	workers []*worker
	allocs  int
}

// runStress runs hosts × perHost workers for d, calling during (if set) in the middle.
func runStress(t *testing.T, e *testEnv, hosts, perHost int, d, opTimeout time.Duration, during func()) stressResult {
	t.Helper()
	e.addPool("p4", "198.18.0.0/20", 28)
	e.addPool("p6", "2001:db8:1000::/48", 122)
	var workers []*worker
	for h := range hosts {
		node := fmt.Sprintf("host-%d", h+1)
		e.addNode(node)
		// Two allocators per host: in-process callers queue, separate processes race by CAS.
		allocs := []*Allocator{e.allocator(), e.allocator()}
		for i := range perHost {
			workers = append(workers, &worker{a: allocs[i%2], node: node, id: fmt.Sprintf("%s-w%d", node, i),
				rng: rand.New(rand.NewPCG(uint64(h), uint64(i))), held: map[string][]netip.Addr{}, uncertain: map[string]bool{}})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	var running atomic.Bool
	running.Store(true)
	for _, w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				opCtx, c := context.WithTimeout(context.Background(), opTimeout)
				w.step(opCtx)
				c()
			}
		})
	}
	if during != nil {
		time.Sleep(d / 3)
		during()
	}
	wg.Wait()
	var res stressResult
	res.workers = workers
	for _, w := range workers {
		res.allocs += w.allocs
	}
	return res
}

// verify settles uncertain handles and checks every address is held by exactly the handle the
// workers think holds it, nothing else is held, and the leak check is clean.
func verify(t *testing.T, e *testEnv, res stressResult) {
	t.Helper()
	ctx := ctxT(t)
	a := e.allocator()
	want := map[netip.Addr]string{}
	for _, w := range res.workers {
		for h := range w.uncertain {
			if _, err := a.ReleaseByHandle(ctx, h); err != nil && !errors.Is(err, ErrHandleNotFound) {
				t.Fatalf("settle %s: %v", h, err)
			}
		}
		for h, ips := range w.held {
			for _, ip := range ips {
				if prev, dup := want[ip]; dup {
					t.Fatalf("%v handed to %s and %s", ip, prev, h)
				}
				want[ip] = h
			}
		}
	}
	got := snapshot(t, e.store())
	if len(got) != len(want) {
		t.Errorf("%d addresses held in etcd, workers hold %d", len(got), len(want))
	}
	for ip, h := range want {
		if got[ip] != h {
			t.Errorf("%v: etcd says %q, worker %q", ip, got[ip], h)
		}
	}
	for ip, h := range got {
		if _, ok := want[ip]; !ok {
			t.Errorf("%v held by %s in etcd but by no worker (lost address)", ip, h)
		}
	}
	r, err := a.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Errorf("check not clean: %+v", r)
	}
}

func TestConcurrentHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test; skipped with -short")
	}
	e := newTestEnv(t)
	// A check while allocations run reads one revision: it must see no inconsistency.
	res := runStress(t, e, 4, 16, 5*time.Second, 30*time.Second, func() {
		r, err := e.allocator().Check(ctxT(t), CheckOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		if !r.Clean() {
			t.Errorf("check during allocations: %+v", r)
		}
	})
	var fails int
	for _, w := range res.workers {
		fails += w.failures
		if w.lastErr != nil {
			t.Errorf("%s: %v", w.id, w.lastErr)
		}
	}
	t.Logf("4 hosts x 16: %d allocations, %d failures", res.allocs, fails)
	if res.allocs < 100 || fails > 0 {
		t.Errorf("%d allocations (want >= 100; this machine is loaded?), %d failures (want 0)", res.allocs, fails)
	}
	verify(t, e, res)
}

func TestEtcdRestartDuringAllocation(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test; skipped with -short")
	}
	e := newTestEnv(t)
	// Each call gets less time than the outage lasts, so calls do fail.
	const opTimeout = 1500 * time.Millisecond
	res := runStress(t, e, 4, 8, 8*time.Second, opTimeout, func() {
		e.srv.Stop()
		time.Sleep(2 * opTimeout)
		e.srv.RestartForTest(t)
	})
	var fails int
	for _, w := range res.workers {
		fails += w.failures
	}
	t.Logf("with restart: %d allocations, %d failed calls", res.allocs, fails)
	if fails == 0 {
		t.Errorf("no call failed while etcd was down: the outage did not happen")
	}
	verify(t, e, res)
}

// TestClaimRace has eight hosts, each in its own process, claim their first block at once: all
// race for the same lowest free block. Every host must end with its own confirmed block.
func TestClaimRace(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p", "198.18.0.0/24", 28)
	const hosts = 8
	allocs := make([]*Allocator, hosts)
	for i := range allocs {
		allocs[i] = e.allocator()
	}
	var wg sync.WaitGroup
	errs := make([]error, hosts)
	for i, a := range allocs {
		wg.Go(func() {
			_, errs[i] = a.AutoAssign(ctxT(t), AutoAssignArgs{Node: fmt.Sprintf("host-%d", i), Handle: fmt.Sprintf("h%d", i), Num4: 1})
		})
	}
	wg.Wait()
	owner := map[netip.Prefix]string{}
	for i, a := range allocs {
		if errs[i] != nil {
			t.Fatalf("host-%d: %v", i, errs[i])
		}
		node := fmt.Sprintf("host-%d", i)
		blocks, err := a.BlocksForNode(ctxT(t), node)
		if err != nil || len(blocks) != 1 {
			t.Fatalf("%s owns %v (%v), want one block", node, blocks, err)
		}
		if prev, ok := owner[blocks[0]]; ok {
			t.Fatalf("block %v owned by %s and %s", blocks[0], prev, node)
		}
		owner[blocks[0]] = node
	}
	kvs, _, err := e.store().List(ctxT(t), AffinityPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if aff, err := DecodeAffinity(kv.Value); err != nil || aff.State != affinityConfirmd {
			t.Errorf("%s: %+v %v", kv.Key, aff, err)
		}
	}
	if held := snapshot(t, e.store()); len(held) != hosts {
		t.Fatalf("%d addresses held, want %d", len(held), hosts)
	}
}

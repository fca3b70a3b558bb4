package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// TestConcurrentHostsRealClient runs the stress workload with pools, nodes and the IPAM
// configuration read from etcd through the real typed client (no stand-in), while a pool
// delete is attempted: refused for the pool in use, done for an empty one.
func TestConcurrentHostsRealClient(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test; skipped with -short")
	}
	e := newTestEnv(t)
	e.real = true
	e.addPool("spare", "198.18.64.0/24", 28)
	var refusal error
	var spare PoolDeletion
	var spareErr error
	res := runStress(t, e, 4, 8, 3*time.Second, 30*time.Second, func() {
		a := e.allocator()
		_, refusal = a.DeletePool(ctxT(t), "p4", "", true)
		spare, spareErr = a.DeletePool(ctxT(t), "spare", "", false)
		r, err := a.Check(ctxT(t), CheckOptions{})
		if err != nil {
			t.Error(err)
		} else if !r.Clean() {
			t.Errorf("check during allocations: %+v", r)
		}
	})
	var inUse *PoolInUseError
	if !errors.As(refusal, &inUse) || inUse.Pool != "p4" || inUse.Allocated == 0 || inUse.Disabled {
		t.Errorf("forced delete of the enabled pool in use: %v, want a refusal naming p4 and a count", refusal)
	}
	if spareErr != nil || spare.Allocated != 0 || spare.CIDR != netip.MustParsePrefix("198.18.64.0/24") {
		t.Errorf("delete of the empty pool: %+v, %v", spare, spareErr)
	}
	var fails int
	for _, w := range res.workers {
		fails += w.failures
		if w.lastErr != nil {
			t.Errorf("%s: %v", w.id, w.lastErr)
		}
	}
	t.Logf("4 hosts x 8 through the typed client: %d allocations, %d failures", res.allocs, fails)
	if res.allocs < 50 || fails > 0 {
		t.Errorf("%d allocations (want >= 50), %d failures (want 0)", res.allocs, fails)
	}
	verify(t, e, res)
	if _, err := e.client().Get(ctxT(t), "IPPool", "", "p4"); err != nil {
		t.Errorf("the pool in use was deleted: %v", err)
	}
}

func setDisabled(t *testing.T, c *datastore.Client, name string, disabled bool) {
	t.Helper()
	r, err := c.Get(ctxT(t), "IPPool", "", name)
	if err != nil {
		t.Fatal(err)
	}
	p := r.(*api.IPPool)
	p.Spec.Disabled = disabled
	if _, err := c.Update(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
}

func ipamKeys(t *testing.T, s *kv.Store) []string {
	t.Helper()
	kvs, _, err := s.List(ctxT(t), Prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range kvs {
		out = append(out, e.Key)
	}
	return out
}

func TestDeletePool(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	e.addPool("p", "198.18.0.0/24", 28)
	e.addPool("q", "198.18.1.0/24", 28)
	e.addNode("h1")
	c := e.client()
	a := e.allocator()
	ctx := ctxT(t)
	got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 3, IPv4Pools: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	// An affine block left empty in q.
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "b", Num4: 1, IPv4Pools: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReleaseByHandle(ctx, "b"); err != nil {
		t.Fatal(err)
	}

	refusals := []struct {
		name     string
		force    bool
		disabled bool
	}{
		{"enabled", false, false},
		{"enabled forced", true, false},
		{"disabled not forced", false, true},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			setDisabled(t, c, "p", tc.disabled)
			_, err := a.DeletePool(ctx, "p", "", tc.force)
			var inUse *PoolInUseError
			if !errors.As(err, &inUse) || !errors.Is(err, ErrPoolInUse) {
				t.Fatalf("got %v, want a *PoolInUseError", err)
			}
			if diff := cmp.Diff(PoolInUseError{Pool: "p", Allocated: 3, Disabled: tc.disabled}, *inUse); diff != "" {
				t.Errorf("refusal (-want +got):\n%s", diff)
			}
			if _, err := c.Get(ctx, "IPPool", "", "p"); err != nil {
				t.Errorf("pool gone after a refusal: %v", err)
			}
		})
	}

	if _, err := a.DeletePool(ctx, "nope", "", false); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("missing pool: %v, want ErrNotFound", err)
	}
	if _, err := a.DeletePool(ctx, "q", "1", false); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("stale resourceVersion: %v, want ErrConflict", err)
	}
	res, err := a.DeletePool(ctx, "q", "", false)
	want := PoolDeletion{Pool: "q", CIDR: netip.MustParsePrefix("198.18.1.0/24"), FreedBlocks: prefixes("198.18.1.0/28")}
	if diff := cmp.Diff(want, res, prefixCmp); err != nil || diff != "" {
		t.Fatalf("delete empty pool: %v (-want +got):\n%s", err, diff)
	}

	// Disabled and forced: the pool goes, its block leaves h1 but keeps its addresses.
	setDisabled(t, c, "p", true)
	res, err = a.DeletePool(ctx, "p", "", true)
	if err != nil || res.Allocated != 3 || res.Retained != 3 || len(res.FreedBlocks) != 0 {
		t.Fatalf("forced delete: %+v, %v", res, err)
	}
	if bl, err := a.BlocksForNode(ctx, "h1"); err != nil || len(bl) != 0 {
		t.Errorf("h1 still owns %v (%v)", bl, err)
	}
	r, err := a.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]OrphanBlock{{Block: netip.MustParsePrefix("198.18.0.0/28"), InUse: 3}}, r.BlocksWithoutPool, prefixCmp); diff != "" || r.Clean() {
		t.Errorf("blocks without pool (-want +got):\n%s", diff)
	}
	if _, err := a.ReleaseIPs(ctx, got.IPv4...); err != nil {
		t.Fatal(err)
	}
	if keys := ipamKeys(t, e.store()); len(keys) != 0 {
		t.Errorf("IPAM keys left after the last release: %v", keys)
	}
}

// TestDeletePoolInterrupted deletes the pool resource without IPAM, as a crash right after the
// delete would leave it: check reports the blocks and the repair frees what it can.
func TestDeletePoolInterrupted(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	e.addPool("p", "198.18.0.0/24", 28)
	e.addNode("h1")
	e.addNode("h2")
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "keep", Num4: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h2", Handle: "gone", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReleaseByHandle(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client().Delete(ctx, "IPPool", "", "p", ""); err != nil {
		t.Fatal(err)
	}
	r, err := a.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []OrphanBlock{
		{Block: netip.MustParsePrefix("198.18.0.0/28"), Node: "h1", InUse: 2},
		{Block: netip.MustParsePrefix("198.18.0.16/28"), Node: "h2", InUse: 0},
	}
	if diff := cmp.Diff(want, r.BlocksWithoutPool, prefixCmp); diff != "" {
		t.Fatalf("blocks without pool (-want +got):\n%s", diff)
	}
	rep, err := a.ReleaseFromReport(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(prefixes("198.18.0.16/28"), rep.FreedBlocks, prefixCmp); diff != "" || len(rep.Skipped) != 1 || rep.Skipped[0].Item != "198.18.0.0/28" {
		t.Fatalf("repair: %+v (-want +got freed):\n%s", rep, diff)
	}
	// The block in use no longer belongs to h1 and goes with its last address.
	if bl, err := a.BlocksForNode(ctx, "h1"); err != nil || len(bl) != 0 {
		t.Errorf("h1 still owns %v (%v)", bl, err)
	}
	if _, err := a.ReleaseByHandle(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if keys := ipamKeys(t, e.store()); len(keys) != 0 {
		t.Errorf("IPAM keys left: %v", keys)
	}
	if r, err := a.Check(ctx, CheckOptions{}); err != nil || !r.Clean() {
		t.Errorf("check after repair: %+v %v", r, err)
	}
}

// TestPoolRecreatedWithAnotherBlockSize: a pool force-deleted with addresses still held and
// created again with a smaller blockSize. The old, larger block keeps its addresses: asking for
// one of them is refused as in use (not handed out a second time through a new block inside the
// old one), show and release find it, a block overlapping the old one is never created, and
// automatic assignment uses the free blocks after it.
func TestPoolRecreatedWithAnotherBlockSize(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	e.addNode("h1")
	e.addPool("p", "198.18.0.0/22", 24)
	c := e.client()
	a := e.allocator()
	ctx := ctxT(t)
	got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "old", Num4: 1})
	if err != nil {
		t.Fatal(err)
	}
	held := got.IPv4[0] // 198.18.0.0, in block 198.18.0.0/24
	setDisabled(t, c, "p", true)
	if _, err := a.DeletePool(ctx, "p", "", true); err != nil {
		t.Fatal(err)
	}
	e.addPool("p2", "198.18.0.0/22", 26)

	if info, err := a.ShowIP(ctx, held); err != nil || !info.Allocated || info.Handle != "old" || info.Block != netip.MustParsePrefix("198.18.0.0/24") {
		t.Errorf("ShowIP(%v) = %+v, %v; want allocated to old in 198.18.0.0/24", held, info, err)
	}
	if err := a.AssignIP(ctx, AssignIPArgs{IP: held, Handle: "new", Node: "h1"}); !errors.Is(err, ErrAddressInUse) {
		t.Errorf("AssignIP of %v held by old: %v, want ErrAddressInUse", held, err)
	}
	// A free address of the old block is given from the old block, not from a new /26 inside it.
	if err := a.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("198.18.0.77"), Handle: "inside", Node: "h1"}); err != nil {
		t.Errorf("AssignIP of a free address of the old block: %v", err)
	}
	for ip, owner := range snapshot(t, e.store()) {
		if ip == held && owner != "old" {
			t.Errorf("%v now held by %s", ip, owner)
		}
	}
	// Automatic assignment: the /24 covers four /26 candidates; the next free /26 is after it.
	auto, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "auto", Num4: 1})
	if err != nil || len(auto.IPv4) != 1 || !netip.MustParsePrefix("198.18.1.0/26").Contains(auto.IPv4[0]) {
		t.Errorf("AutoAssign after the re-creation = %v, %v; want an address of 198.18.1.0/26", auto.IPv4, err)
	}
	// Release by address finds the old block.
	if not, err := a.ReleaseIPs(ctx, held); err != nil || len(not) != 0 {
		t.Errorf("ReleaseIPs(%v) = not found %v, %v", held, not, err)
	}
	r, err := a.Check(ctx, CheckOptions{GracePeriod: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range r.Inconsistencies {
		if strings.Contains(in.Detail, "overlaps") {
			t.Errorf("overlapping blocks were created: %+v", in)
		}
	}
}

func TestFirstFreeSkipsLargerBlocks(t *testing.T) {
	p := &pool{name: "p2", cidr: netip.MustParsePrefix("198.18.0.0/22"), blockBits: 26}
	taken := map[netip.Prefix]bool{netip.MustParsePrefix("198.18.0.0/24"): true}
	if b, ok := firstFree([]*pool{p}, taken); !ok || b != netip.MustParsePrefix("198.18.1.0/26") {
		t.Errorf("firstFree = %v, %v; want 198.18.1.0/26, the first /26 after the /24", b, ok)
	}
}

// TestPoolRecreatedWithLargerBlockSize: with a larger blockSize the new block for a requested
// address would contain the old, smaller one; it is refused rather than created beside it.
func TestPoolRecreatedWithLargerBlockSize(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	e.addNode("h1")
	e.addPool("p", "198.18.0.0/22", 26)
	c := e.client()
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "old", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	setDisabled(t, c, "p", true)
	if _, err := a.DeletePool(ctx, "p", "", true); err != nil {
		t.Fatal(err)
	}
	e.addPool("p2", "198.18.0.0/22", 24)
	err := a.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("198.18.0.100"), Handle: "new", Node: "h1"})
	if err == nil || !strings.Contains(err.Error(), "would overlap block 198.18.0.0/26") {
		t.Errorf("AssignIP into a /24 over the old /26: %v, want a refusal naming the old block", err)
	}
	if _, b, err := a.readBlock(ctx, netip.MustParsePrefix("198.18.0.0/24"), true); err != nil || b != nil {
		t.Errorf("the overlapping /24 was created: %v %v", b, err)
	}
}

// TestDeletePoolUndecodable: a pool whose stored value cannot be read has addresses nobody can
// count: refused (PoolInUseError, exit 2 in terracectl) unless forced, which deletes the key.
func TestDeletePoolUndecodable(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	ctx := ctxT(t)
	if _, err := e.store().Put(ctx, "/terrace/v1/ippools/zbad", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	a := e.allocator()
	var inUse *PoolInUseError
	if _, err := a.DeletePool(ctx, "zbad", "", false); !errors.As(err, &inUse) || !inUse.Undecodable {
		t.Fatalf("delete without force: %v, want a PoolInUseError for an undecodable pool", err)
	}
	if _, err := a.DeletePool(ctx, "zbad", "", true); err != nil {
		t.Fatalf("delete with force: %v", err)
	}
	if _, err := e.client().Get(ctx, "IPPool", "", "zbad"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("after forced delete: %v, want not found", err)
	}
}

// TestReportsWithUndecodablePool: one stored pool that cannot be read does not hide the others
// from show and check, and no block is called pool-less while it may be that pool's (release
// --from-report deletes pool-less blocks).
func TestReportsWithUndecodablePool(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	ctx := ctxT(t)
	e.addPool("p", "198.18.0.0/24", 26)
	e.addNode("h1")
	a := e.allocator()
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 2}); err != nil {
		t.Fatal(err)
	}
	// A block of a pool that is about to become unreadable: pool-less as far as anyone can tell.
	e.addPool("q", "198.18.4.0/24", 26)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "b", Num4: 1, IPv4Pools: []string{"q"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store().Put(ctx, "/terrace/v1/ippools/q", []byte("not json")); err != nil {
		t.Fatal(err)
	}

	pools, err := a.ShowPools(ctx)
	if !errors.Is(err, datastore.ErrUndecodable) || !strings.Contains(err.Error(), "/terrace/v1/ippools/q") {
		t.Errorf("ShowPools error: %v, want one naming the undecodable pool", err)
	}
	if len(pools) != 1 || pools[0].Name != "p" || pools[0].Used != 2 {
		t.Errorf("ShowPools: %+v, want pool p with 2 used", pools)
	}
	blocks, err := a.ShowBlocks(ctx)
	if !errors.Is(err, datastore.ErrUndecodable) || len(blocks) != 2 {
		t.Errorf("ShowBlocks: %+v, %v; want both blocks and the undecodable error", blocks, err)
	}

	r, err := a.Check(ctx, CheckOptions{GracePeriod: -1})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(r.BlocksWithoutPool) != 0 {
		t.Errorf("blocks reported without pool while a pool is unreadable: %+v", r.BlocksWithoutPool)
	}
	if len(r.Inconsistencies) != 1 || !strings.Contains(r.Inconsistencies[0].Detail, "/terrace/v1/ippools/q") || r.Clean() {
		t.Errorf("inconsistencies %+v, clean %v; want the unreadable pool named", r.Inconsistencies, r.Clean())
	}
	if r.Summary.Blocks != 2 {
		t.Errorf("summary %+v: the rest of the check did not run", r.Summary)
	}

	// Allocation stays strict: the unreadable pool's range is unknown.
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "c", Num4: 1}); !errors.Is(err, datastore.ErrUndecodable) {
		t.Errorf("AutoAssign with an unreadable pool: %v, want ErrUndecodable", err)
	}
}

package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

var prefixCmp = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestAutoAssignUsesOwnBlockFirst(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p4", "198.18.0.0/24", 28)
	a := e.allocator()
	ctx := ctxT(t)
	steps := []struct {
		node, handle string
		n            int
		want         []netip.Addr
	}{
		{"h1", "c1", 3, addrs("198.18.0.0", "198.18.0.1", "198.18.0.2")},
		{"h2", "c2", 1, addrs("198.18.0.16")},
		{"h1", "c3", 1, addrs("198.18.0.3")},
		// 12 more fill h1's block, the 13th spills into a new block.
		{"h1", "c4", 13, nil},
		{"h1", "c5", 1, addrs("198.18.0.33")},
	}
	for _, s := range steps {
		got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: s.node, Handle: s.handle, Num4: s.n})
		if err != nil {
			t.Fatalf("%s/%s: %v", s.node, s.handle, err)
		}
		if len(got.IPv4) != s.n {
			t.Fatalf("%s/%s: got %v, want %d addresses", s.node, s.handle, got.IPv4, s.n)
		}
		if s.want != nil {
			if diff := cmp.Diff(s.want, got.IPv4, addrCmp); diff != "" {
				t.Fatalf("%s/%s (-want +got):\n%s", s.node, s.handle, diff)
			}
		}
	}
	blocks, err := a.BlocksForNode(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(prefixes("198.18.0.0/28", "198.18.0.32/28"), blocks, prefixCmp); diff != "" {
		t.Fatalf("h1 blocks (-want +got):\n%s", diff)
	}
	// A second process for the same node finds the node's blocks without claiming a new one.
	b := e.allocator()
	got, err := b.AutoAssign(ctx, AutoAssignArgs{Node: "h2", Handle: "c6", Num4: 1})
	if err != nil || len(got.IPv4) != 1 || got.IPv4[0] != netip.MustParseAddr("198.18.0.17") {
		t.Fatalf("second allocator: %v %v", got, err)
	}
	held := snapshot(t, e.store())
	if len(held) != 20 {
		t.Fatalf("%d addresses held, want 20", len(held))
	}
}

func TestDualStackAndHalfWayFailure(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p4", "198.18.0.0/24", 0)
	a := e.allocator()
	ctx := ctxT(t)
	// No IPv6 pool yet: the IPv4 address taken first must be given back.
	_, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "c1", Num4: 2, Num6: 1})
	if !errors.Is(err, ErrNoPools) {
		t.Fatalf("err = %v, want ErrNoPools", err)
	}
	if held := snapshot(t, e.store()); len(held) != 0 {
		t.Fatalf("half-way failure left %v", held)
	}
	e.res.addPool("p6", "2001:db8:1000::/48", 0)
	got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "c1", Num4: 1, Num6: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := Assigned{IPv4: addrs("198.18.0.2"), IPv6: addrs("2001:db8:1000::", "2001:db8:1000::1")}
	// The two addresses released by the failed attempt go to the back of the free list.
	if diff := cmp.Diff(want, got, addrCmp); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	ips, err := a.IPsByHandle(ctx, "c1")
	if err != nil || len(ips) != 3 {
		t.Fatalf("IPsByHandle = %v, %v", ips, err)
	}
	released, err := a.ReleaseByHandle(ctx, "c1")
	if err != nil || len(released) != 3 {
		t.Fatalf("ReleaseByHandle = %v, %v", released, err)
	}
	if _, err := a.ReleaseByHandle(ctx, "c1"); !errors.Is(err, ErrHandleNotFound) {
		t.Fatalf("second release: %v, want ErrHandleNotFound", err)
	}
	if held := snapshot(t, e.store()); len(held) != 0 {
		t.Fatalf("after release: %v", held)
	}
}

func TestErrors(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("on", "198.18.0.0/24", 0)
	e.res.addPool("off", "198.18.1.0/24", 0, func(s *api.IPPoolSpec) { s.Disabled = true })
	e.res.addPool("off6", "2001:db8:1000::/48", 0, func(s *api.IPPoolSpec) { s.Disabled = true })
	a := e.allocator()
	ctx := ctxT(t)
	if err := a.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("198.18.0.9"), Handle: "x", Node: "h1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  func() error
		want []error
	}{
		{"named pool disabled", func() error {
			_, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 1, IPv4Pools: []string{"off"}})
			return err
		}, []error{ErrPoolDisabled}},
		{"named pool missing", func() error {
			_, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 1, IPv4Pools: []string{"nope"}})
			return err
		}, []error{ErrNoPools}},
		{"every v6 pool disabled", func() error {
			_, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num6: 1})
			return err
		}, []error{ErrNoPools, ErrPoolDisabled}},
		{"address in no pool", func() error {
			return a.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("198.18.9.1"), Handle: "a"})
		}, []error{ErrAddressNotInPool}},
		{"address in disabled pool", func() error {
			return a.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("198.18.1.1"), Handle: "a"})
		}, []error{ErrPoolDisabled}},
		{"address in use", func() error {
			return a.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("198.18.0.9"), Handle: "a", Node: "h2"})
		}, []error{ErrAddressInUse}},
		{"unknown handle", func() error {
			_, err := a.ReleaseByHandle(ctx, "nope")
			return err
		}, []error{ErrHandleNotFound}},
		{"addresses of unknown handle", func() error {
			_, err := a.IPsByHandle(ctx, "nope")
			return err
		}, []error{ErrHandleNotFound}},
		{"release unknown address", func() error {
			return a.ReleaseIPChecked(ctx, netip.MustParseAddr("203.0.113.1"))
		}, []error{ErrAddressNotInPool}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("err %q is not %q", err, w)
				}
			}
		})
	}
	held := snapshot(t, e.store())
	if len(held) != 1 || held[netip.MustParseAddr("198.18.0.9")] != "x" {
		t.Fatalf("failed calls changed allocations: %v", held)
	}
}

func TestExhaustionAndBorrowing(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(map[bool]string{false: "borrow", true: "strict"}[strict], func(t *testing.T) {
			e := newTestEnv(t)
			// Two blocks of four addresses.
			e.res.addPool("p", "198.18.0.0/29", 30)
			e.res.setConfig(strict, 0)
			a := e.allocator()
			ctx := ctxT(t)
			if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 4}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h2", Handle: "b", Num4: 2}); err != nil {
				t.Fatal(err)
			}
			got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "c", Num4: 1})
			if strict {
				if !errors.Is(err, ErrPoolsExhausted) {
					t.Fatalf("strict: err = %v, want ErrPoolsExhausted", err)
				}
				if held := snapshot(t, e.store()); len(held) != 6 {
					t.Fatalf("strict: %d held, want 6", len(held))
				}
				return
			}
			if err != nil || len(got.IPv4) != 1 || got.IPv4[0] != netip.MustParseAddr("198.18.0.6") {
				t.Fatalf("borrow: %v, %v", got, err)
			}
			borrowed, err := a.BorrowedIPs(ctx, "h1")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(addrs("198.18.0.6"), borrowed, addrCmp); diff != "" {
				t.Fatalf("borrowed (-want +got):\n%s", diff)
			}
			// The lender keeps its block.
			if bl, _ := a.BlocksForNode(ctx, "h2"); len(bl) != 1 {
				t.Fatalf("h2 blocks %v", bl)
			}
			// One address left in the pool: two requested is all or nothing.
			if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h3", Handle: "d", Num4: 2}); !errors.Is(err, ErrPoolsExhausted) {
				t.Fatalf("err = %v, want ErrPoolsExhausted", err)
			}
			if held := snapshot(t, e.store()); len(held) != 7 {
				t.Fatalf("%d held, want 7", len(held))
			}
		})
	}
}

func TestMaxBlocksPerHost(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p", "198.18.0.0/24", 30)
	e.res.setConfig(true, 1)
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 5}); !errors.Is(err, ErrPoolsExhausted) {
		t.Fatalf("err = %v, want ErrPoolsExhausted", err)
	}
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 4}); err != nil {
		t.Fatal(err)
	}
	if bl, _ := a.BlocksForNode(ctx, "h1"); len(bl) != 1 {
		t.Fatalf("h1 owns %v, limit is 1", bl)
	}
	// The limit is per family: the IPv4 block does not keep the host from an IPv6 one.
	e.res.addPool("p6", "2001:db8:1000::/120", 126)
	if got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "b", Num6: 2}); err != nil || len(got.IPv6) != 2 {
		t.Fatalf("IPv6 with one IPv4 block owned: %v, %v", got, err)
	}
	if bl, _ := a.BlocksForNode(ctx, "h1"); len(bl) != 2 {
		t.Fatalf("h1 owns %v, want one block per family", bl)
	}
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "c", Num6: 3}); !errors.Is(err, ErrPoolsExhausted) {
		t.Fatalf("a second IPv6 block beyond the limit: %v, want ErrPoolsExhausted", err)
	}
}

func TestNodeSelector(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("rack1", "198.18.0.0/24", 0, func(s *api.IPPoolSpec) { s.NodeSelector = "rack == 'r1'" })
	e.res.addPool("rack2", "198.18.1.0/24", 0, func(s *api.IPPoolSpec) { s.NodeSelector = "rack == 'r2'" })
	e.res.addNode("h1", map[string]string{"rack": "r2"})
	a := e.allocator()
	got, err := a.AutoAssign(ctxT(t), AutoAssignArgs{Node: "h1", Handle: "a", Num4: 1})
	if err != nil || len(got.IPv4) != 1 || got.IPv4[0] != netip.MustParseAddr("198.18.1.0") {
		t.Fatalf("got %v, %v; want 198.18.1.0 from rack2", got, err)
	}
	if _, err := a.AutoAssign(ctxT(t), AutoAssignArgs{Node: "unlabelled", Handle: "b", Num4: 1}); !errors.Is(err, ErrNoPools) {
		t.Fatalf("unselected node: %v, want ErrNoPools", err)
	}
}

func TestReleaseNode(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p", "198.18.0.0/24", 30)
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "keep", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "gone", Num4: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReleaseByHandle(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	res, err := a.ReleaseNode(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	want := NodeRelease{Node: "h1", Freed: prefixes("198.18.0.4/30"),
		Retained: []BlockUsage{{CIDR: netip.MustParsePrefix("198.18.0.0/30"), Size: 4, Used: 1, Free: 3}}}
	if diff := cmp.Diff(want, res, prefixCmp); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	st := e.store()
	if affs, _, _ := st.List(ctx, AffinityPrefix); len(affs) != 0 {
		t.Fatalf("affinities left: %v", affs)
	}
	// The retained block is owned by nobody; releasing its last address returns it to the pool.
	if _, err := a.ReleaseByHandle(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if blocks, _, _ := st.List(ctx, BlockPrefix); len(blocks) != 0 {
		t.Fatalf("blocks left: %d", len(blocks))
	}
}

func TestPendingAffinityIsSettled(t *testing.T) {
	e := newTestEnv(t)
	st := e.store()
	ctx := ctxT(t)
	mine := netip.MustParsePrefix("198.18.0.0/26")
	stale := netip.MustParsePrefix("198.18.0.64/26")
	b, _ := NewBlock(mine, "h1")
	val, _ := EncodeBlock(b)
	if _, err := st.Commit(ctx,
		kv.Op{Kind: kv.OpCreate, Key: AffinityKey("h1", mine), Value: mustJSON(Affinity{State: affinityPending, Node: "h1", CIDR: mine.String()})},
		kv.Op{Kind: kv.OpCreate, Key: BlockKey(mine), Value: val},
		kv.Op{Kind: kv.OpCreate, Key: AffinityKey("h1", stale), Value: mustJSON(Affinity{State: affinityPending, Node: "h1", CIDR: stale.String()})},
	); err != nil {
		t.Fatal(err)
	}
	a := e.allocator()
	got, err := a.BlocksForNode(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]netip.Prefix{mine}, got, prefixCmp); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	kvs, _, _ := st.List(ctx, AffinityPrefix)
	if len(kvs) != 1 {
		t.Fatalf("affinities %v", kvs)
	}
	if aff, _ := DecodeAffinity(kvs[0].Value); aff.State != affinityConfirmd {
		t.Fatalf("state %q, want confirmed", aff.State)
	}
}

func TestCheckPoolDeletable(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p", "198.18.0.0/24", 0)
	e.res.addPool("q", "198.18.1.0/24", 0)
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 3, IPv4Pools: []string{"p"}}); err != nil {
		t.Fatal(err)
	}
	pool := func(cidr string) *api.IPPool {
		return &api.IPPool{Metadata: api.ObjectMeta{Name: cidr}, Spec: api.IPPoolSpec{CIDR: cidr}}
	}
	if n, err := a.CheckPoolDeletable(ctx, pool("198.18.0.0/24")); n != 3 || !errors.Is(err, ErrPoolInUse) {
		t.Fatalf("used pool: %d, %v", n, err)
	}
	if n, err := a.CheckPoolDeletable(ctx, pool("198.18.1.0/24")); n != 0 || err != nil {
		t.Fatalf("empty pool: %d, %v", n, err)
	}
	// After the pool is deleted its empty blocks go; one still in use stays.
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h2", Handle: "b", Num4: 1, IPv4Pools: []string{"p"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReleaseByHandle(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	freed, inUse, err := a.ReleasePoolBlocks(ctx, netip.MustParsePrefix("198.18.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(prefixes("198.18.0.0/26"), freed, prefixCmp); diff != "" || inUse != 1 {
		t.Fatalf("freed (-want +got):\n%s\nin use %d, want 1", diff, inUse)
	}
	if bl, _ := a.BlocksForNode(ctx, "h1"); len(bl) != 0 {
		t.Fatalf("h1 still owns %v", bl)
	}
}

func TestCheckAndRepair(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p", "198.18.0.0/24", 28)
	e.res.addNode("h1", nil)
	e.res.addNode("h2", nil)
	a := e.allocator()
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := ctxT(t)
	assign := func(node, handle, pod string) netip.Addr {
		got, err := a.AutoAssign(ctx, AutoAssignArgs{Node: node, Handle: handle, Num4: 1,
			Attrs: map[string]string{AttrNamespace: "ns", AttrPod: pod}})
		if err != nil {
			t.Fatal(err)
		}
		return got.IPv4[0]
	}
	live := assign("h1", "live", "web")
	leaked := assign("h1", "leaked", "dead")
	dup := assign("h1", "dup", "db")
	onGone := assign("h2", "ongone", "x")
	e.res.addWEP("ns", "web-eth0", "web", live)
	e.res.addWEP("ns", "db-eth0", "db", dup)
	e.res.addWEP("ns", "other-eth0", "other", dup) // claims db's address too
	e.res.addWEP("ns", "x-eth0", "x")              // endpoint without addresses yet
	e.res.del("Node", "", "h2")

	// Within the grace period nothing is a leak.
	r, err := a.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Leaks) != 0 {
		t.Fatalf("leaks within grace: %+v", r.Leaks)
	}
	now = now.Add(time.Hour)
	r, err = a.Check(ctx, CheckOptions{GracePeriod: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	type leakView struct {
		IP     netip.Addr
		Handle string
		Reason string
	}
	var leaks []leakView
	for _, l := range r.Leaks {
		leaks = append(leaks, leakView{l.IP, l.Handle, l.Reason})
	}
	wantLeaks := []leakView{{leaked, "leaked", "workload endpoint of ns/dead does not exist"}}
	if diff := cmp.Diff(wantLeaks, leaks, addrCmp); diff != "" {
		t.Fatalf("leaks (-want +got):\n%s", diff)
	}
	if len(r.Duplicates) != 1 || r.Duplicates[0].IP != dup || len(r.Duplicates[0].Owners) != 2 {
		t.Fatalf("duplicates: %+v", r.Duplicates)
	}
	if len(r.OrphanBlocks) != 1 || r.OrphanBlocks[0].Node != "h2" || r.OrphanBlocks[0].InUse != 1 {
		t.Fatalf("orphan blocks: %+v", r.OrphanBlocks)
	}
	if len(r.Inconsistencies) != 0 || r.Clean() {
		t.Fatalf("inconsistencies %+v, clean %v", r.Inconsistencies, r.Clean())
	}

	// Between check and release, the leaked address gets an owner again: it must survive.
	e.res.addWEP("ns", "dead-eth0", "dead", leaked)
	res, err := a.ReleaseFromReport(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	// Skipped: the leak (an owner again), the duplicate (by hand), and the orphan block, whose
	// owner went but which still holds an address.
	if len(res.Released) != 0 || len(res.Skipped) != 3 || !strings.Contains(fmt.Sprint(res.Skipped), "owner h2 removed, but it still holds 1 allocated addresses") {
		t.Fatalf("released %v skipped %+v", res.Released, res.Skipped)
	}
	e.res.del("WorkloadEndpoint", "ns", "dead-eth0")
	res, err = a.ReleaseFromReport(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(addrs(leaked.String()), res.Released, addrCmp); diff != "" {
		t.Fatalf("released (-want +got):\n%s", diff)
	}
	held := snapshot(t, e.store())
	if _, ok := held[leaked]; ok || len(held) != 3 {
		t.Fatalf("held after repair: %v", held)
	}
	// Releasing by address refuses a live one and frees a dead one.
	if err := a.ReleaseIPChecked(ctx, live); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("release live: %v", err)
	}
	if err := a.ReleaseIPChecked(ctx, onGone); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("release of an address whose endpoint exists: %v", err)
	}
	e.res.del("WorkloadEndpoint", "ns", "x-eth0")
	if err := a.ReleaseIPChecked(ctx, onGone); err != nil {
		t.Fatalf("release on missing node: %v", err)
	}
	if err := a.ReleaseIPChecked(ctx, onGone); !errors.Is(err, ErrNotAllocated) {
		t.Fatalf("release twice: %v", err)
	}
}

func TestShow(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("p4", "198.18.0.0/24", 28)
	e.res.addPool("p6", "2001:db8:1000::/48", 0)
	a := e.allocator()
	ctx := ctxT(t)
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "a", Num4: 2, Num6: 1, Attrs: map[string]string{AttrPod: "web"}}); err != nil {
		t.Fatal(err)
	}
	pools, err := a.ShowPools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []PoolUsage{
		{Name: "p4", CIDR: "198.18.0.0/24", BlockSize: 28, Size: "256", Used: 2, Free: "254", Blocks: 1},
		{Name: "p6", CIDR: "2001:db8:1000::/48", BlockSize: 122, Size: "1208925819614629174706176", Used: 1, Free: "1208925819614629174706175", Blocks: 1},
	}
	if diff := cmp.Diff(want, pools); diff != "" {
		t.Fatalf("pools (-want +got):\n%s", diff)
	}
	info, err := a.ShowIP(ctx, netip.MustParseAddr("198.18.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	wantInfo := IPInfo{IP: netip.MustParseAddr("198.18.0.1"), Pool: "p4", Block: netip.MustParsePrefix("198.18.0.0/28"),
		BlockNode: "h1", Allocated: true, Handle: "a", Attrs: map[string]string{AttrPod: "web", AttrNode: "h1"}}
	if diff := cmp.Diff(wantInfo, info, addrCmp, prefixCmp); diff != "" {
		t.Fatalf("ip (-want +got):\n%s", diff)
	}
	blocks, err := a.ShowBlocks(ctx)
	if err != nil || len(blocks) != 2 || blocks[0].Pool != "p4" || blocks[0].Used != 2 || blocks[1].Free != 63 {
		t.Fatalf("blocks %+v %v", blocks, err)
	}
}

func TestAssignIPs(t *testing.T) {
	e := newTestEnv(t)
	e.res.addPool("v4", "198.18.0.0/24", 0)
	e.res.addPool("v6", "2001:db8:1000::/120", 0)
	a := e.allocator()
	ctx := ctxT(t)
	ip := netip.MustParseAddr
	// h2 owns the block of 198.18.0.64/26 first, so a request for an address in it borrows.
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h2", Handle: "h2pod", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	h2addr := snapshot(t, e.store())
	var h2ip netip.Addr
	for k := range h2addr {
		h2ip = k
	}
	borrowed := h2ip.Next()

	want := Assigned{IPv4: []netip.Addr{ip("198.18.0.200"), borrowed}, IPv6: []netip.Addr{ip("2001:db8:1000::10")}}
	args := AssignIPsArgs{IPs: []netip.Addr{ip("198.18.0.200"), ip("2001:db8:1000::10"), borrowed}, Handle: "a", Node: "h1",
		Attrs: map[string]string{AttrPod: "web"}}
	got, err := a.AssignIPs(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Fatalf("AssignIPs (-want +got):\n%s", diff)
	}
	// A repeated request is success and changes nothing.
	before := snapshot(t, e.store())
	if got, err := a.AssignIPs(ctx, args); err != nil || len(got.IPv4) != 2 || len(got.IPv6) != 1 {
		t.Fatalf("repeated AssignIPs = %v, %v", got, err)
	}
	if diff := cmp.Diff(before, snapshot(t, e.store())); diff != "" {
		t.Fatalf("repeated AssignIPs changed allocations (-before +after):\n%s", diff)
	}
	for _, addr := range []netip.Addr{ip("198.18.0.200"), borrowed, ip("2001:db8:1000::10")} {
		if before[addr] != "a" {
			t.Errorf("%v held by %q, want a", addr, before[addr])
		}
	}
	// The borrowed address's block stays h2's.
	_, b, err := a.readBlock(ctx, netip.MustParsePrefix(h2ip.String()+"/26").Masked(), true)
	if err != nil || b == nil || b.Host() != "h2" {
		t.Fatalf("block of %v: %v (err %v), want h2's", borrowed, b, err)
	}

	failing := []struct {
		name   string
		args   AssignIPsArgs
		want   error
		inText string
	}{
		{"one address taken", AssignIPsArgs{IPs: []netip.Addr{ip("198.18.0.201"), ip("198.18.0.200")}, Handle: "b", Node: "h1"},
			ErrAddressInUse, "held by handle a"},
		{"one address in no pool", AssignIPsArgs{IPs: []netip.Addr{ip("198.18.0.202"), ip("203.0.113.1")}, Handle: "c", Node: "h1"},
			ErrAddressNotInPool, "203.0.113.1"},
		{"held before, new, then bad", AssignIPsArgs{IPs: []netip.Addr{ip("198.18.0.200"), ip("198.18.0.203"), ip("203.0.113.1")}, Handle: "a", Node: "h1"},
			ErrAddressNotInPool, "203.0.113.1"},
		{"repeated address", AssignIPsArgs{IPs: []netip.Addr{ip("198.18.0.204"), ip("198.18.0.204")}, Handle: "d", Node: "h1"},
			nil, "repeated"},
	}
	for _, tt := range failing {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.AssignIPs(ctx, tt.args)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err %q is not %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.inText) {
				t.Errorf("err %q does not say %q", err, tt.inText)
			}
			// Nothing this call took stays; what the handle held before stays.
			if diff := cmp.Diff(before, snapshot(t, e.store())); diff != "" {
				t.Fatalf("failed AssignIPs changed allocations (-before +after):\n%s", diff)
			}
		})
	}
	if _, err := a.AssignIPs(ctx, AssignIPsArgs{Handle: "e", Node: "h1"}); err == nil {
		t.Error("AssignIPs without addresses: no error")
	}
	if released, err := a.ReleaseByHandle(ctx, "a"); err != nil || len(released) != 3 {
		t.Fatalf("ReleaseByHandle(a) = %v, %v", released, err)
	}
}

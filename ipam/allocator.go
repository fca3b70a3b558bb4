package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/internal/ctxtime"
)

// DefaultMaxRetries bounds the compare-and-swap attempts on one block before giving up.
const DefaultMaxRetries = 100

// resources is the part of the typed datastore client IPAM reads (pools, config, nodes, endpoints).
type resources interface {
	Get(ctx context.Context, kind, namespace, name string) (api.Resource, error)
	List(ctx context.Context, kind, namespace string) ([]api.Resource, error)
}

// Allocator hands out and releases addresses. One Allocator may serve many nodes; requests for the
// same node from one Allocator are serialised so they do not race each other for the node's block
// (a hot key) — different processes still may, and compare-and-swap settles that.
type Allocator struct {
	store *kv.Store
	ds    resources
	log   *slog.Logger
	// MaxRetries bounds compare-and-swap attempts per block write; set before first use.
	MaxRetries int
	now        func() time.Time

	mu        sync.Mutex
	nodeLocks map[string]*nodeLock
	blocks    map[netip.Prefix]cachedBlock // last value written or read, a guess to CAS against
	batchers  map[netip.Prefix]*batcher
	affine    map[string][]netip.Prefix // node -> blocks it owned when last listed
	lastEnv   *envLoad

	retries atomic.Int64
	commits atomic.Int64 // block transactions of assignments (batched), for the benchmarks
}

func newAllocator(store *kv.Store, r resources, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allocator{
		store: store, ds: r, log: log, MaxRetries: DefaultMaxRetries, now: time.Now,
		nodeLocks: map[string]*nodeLock{},
		blocks:    map[netip.Prefix]cachedBlock{},
		batchers:  map[netip.Prefix]*batcher{},
		affine:    map[string][]netip.Prefix{},
	}
}

// Retries is the number of compare-and-swap conflicts this Allocator has retried.
func (a *Allocator) Retries() int64 { return a.retries.Load() }

// maxConflictPause caps the pause after one lost compare-and-swap.
const maxConflictPause = 32 * time.Millisecond

// conflictPause is how long to wait before the next attempt after losing the compare-and-swap
// race attempt times in a row (attempt counts from 0): nothing the first time, then a random
// pause up to a bound that doubles from 1 ms to maxConflictPause. Retrying at once every time
// let one writer among sixteen on a block lose a hundred races in a row on a loaded machine (CI
// saw a release give up that way); spreading the retries out gives the loser a turn.
func conflictPause(attempt int, rnd func(time.Duration) time.Duration) time.Duration {
	if attempt < 1 {
		return 0
	}
	bound := min(time.Millisecond<<min(attempt-1, 10), maxConflictPause)
	return rnd(bound + 1)
}

// lostRace counts a compare-and-swap conflict and waits as conflictPause says, or until ctx ends.
func (a *Allocator) lostRace(ctx context.Context, attempt int) error {
	a.retries.Add(1)
	if d := conflictPause(attempt, rand.N[time.Duration]); d > 0 {
		return ctxtime.Sleep(ctx, d)
	}
	return nil
}

// AutoAssignArgs asks for Num4 IPv4 and Num6 IPv6 addresses for Handle on Node.
// IPv4Pools/IPv6Pools restrict the pools (by name or CIDR); empty means every enabled pool
// whose nodeSelector selects the node.
type AutoAssignArgs struct {
	Node, Handle         string
	Num4, Num6           int
	Attrs                map[string]string
	IPv4Pools, IPv6Pools []string
}

// Assigned is what AutoAssign handed out.
type Assigned struct {
	IPv4 []netip.Addr `json:"ipv4,omitempty"`
	IPv6 []netip.Addr `json:"ipv6,omitempty"`
}

// nodeLock serialises claiming (and releasing) a node's blocks within this Allocator. claims
// counts the claims made under it, so a caller that waited can tell someone claimed meanwhile.
type nodeLock struct {
	sync.Mutex
	claims atomic.Int64
}

func (a *Allocator) nodeLock(node string) *nodeLock {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.nodeLocks[node]
	if l == nil {
		l = &nodeLock{}
		a.nodeLocks[node] = l
	}
	return l
}

func withNode(attrs map[string]string, node string) map[string]string {
	out := maps.Clone(attrs)
	if out == nil {
		out = map[string]string{}
	}
	if node != "" {
		out[AttrNode] = node
	}
	return out
}

// AutoAssign assigns the requested addresses. It is all or nothing: if any family cannot be
// satisfied, what was taken is released again and the error says why (ErrPoolsExhausted,
// ErrNoPools, ErrPoolDisabled). If even that release fails (etcd gone), the error says so and
// the leftovers stay under the handle for ReleaseByHandle or the leak check.
func (a *Allocator) AutoAssign(ctx context.Context, args AutoAssignArgs) (Assigned, error) {
	var out Assigned
	if args.Handle == "" || args.Node == "" {
		return out, fmt.Errorf("auto-assign: handle and node are required")
	}
	if args.Num4 < 0 || args.Num6 < 0 || args.Num4+args.Num6 == 0 {
		return out, fmt.Errorf("auto-assign %s: nothing requested (%d IPv4, %d IPv6)", args.Handle, args.Num4, args.Num6)
	}
	env, err := a.loadEnv(ctx, args.Node)
	if err != nil {
		return out, fmt.Errorf("auto-assign %s: %w", args.Handle, err)
	}
	attrs := withNode(args.Attrs, args.Node)
	hs := &handleState{id: args.Handle}
	got4, err := a.assignFamily(ctx, env, 4, args.Num4, args.IPv4Pools, args.Node, hs, attrs)
	out.IPv4 = got4
	if err == nil {
		out.IPv6, err = a.assignFamily(ctx, env, 6, args.Num6, args.IPv6Pools, args.Node, hs, attrs)
	}
	if err != nil {
		taken := append(slices.Clone(out.IPv4), out.IPv6...)
		// The caller's ctx may be what failed; the undo gets its own time.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := a.undo(uctx, hs, taken); rerr != nil {
			err = errors.Join(err, fmt.Errorf("undo partial assignment to %s: %w", args.Handle, rerr))
		}
		return Assigned{}, fmt.Errorf("auto-assign %s on %s: %w", args.Handle, args.Node, err)
	}
	return out, nil
}

// undo releases what a failed AutoAssign took. A handle it created holds only this call's
// addresses, including any from a write whose outcome is unknown, so it goes whole; otherwise
// only the addresses known to be taken are released.
func (a *Allocator) undo(ctx context.Context, hs *handleState, taken []netip.Addr) error {
	if !hs.createdAt.IsZero() {
		cur := &handleState{id: hs.id}
		if err := a.loadHandle(ctx, cur); err != nil {
			return err
		}
		if cur.h == nil {
			return nil
		}
		if cur.h.Created.Equal(hs.createdAt) {
			_, err := a.ReleaseByHandle(ctx, hs.id)
			if errors.Is(err, ErrHandleNotFound) {
				return nil
			}
			return err
		}
	}
	if len(taken) == 0 {
		return nil
	}
	_, err := a.ReleaseIPs(ctx, taken...)
	return err
}

// assignFamily assigns n addresses of one family: own blocks, then newly claimed blocks, then
// (unless strict affinity) borrowed from other hosts' blocks. It returns what it committed even
// when it fails, so the caller can undo.
func (a *Allocator) assignFamily(ctx context.Context, env *allocEnv, fam, n int, names []string, node string,
	hs *handleState, attrs map[string]string) ([]netip.Addr, error) {
	if n == 0 {
		return nil, nil
	}
	pools, err := env.selectPools(ctx, fam, names)
	if err != nil {
		return nil, err
	}
	inPools := func(b netip.Prefix) bool {
		return slices.ContainsFunc(pools, func(p *pool) bool { return p.cidr.Overlaps(b) })
	}
	var got []netip.Addr
	tried := map[netip.Prefix]bool{}
	// useOwn assigns from the node's blocks. With trustFull a block the cache shows full is
	// skipped without a read: that keeps a node with many full blocks at one write per
	// allocation. Before claiming a new block the blocks are tried again without that trust.
	useOwn := func(list []netip.Prefix, trustFull bool) error {
		for _, b := range list {
			if len(got) == n {
				return nil
			}
			if tried[b] || !inPools(b) {
				continue
			}
			ips, definitive, err := a.assignFromBlock(ctx, b, n-len(got), node, hs, attrs, trustFull)
			if definitive {
				tried[b] = true
			}
			got = append(got, ips...)
			if err != nil {
				return err
			}
		}
		return nil
	}
	a.mu.Lock()
	cached, ok := a.affine[node]
	a.mu.Unlock()
	if ok {
		if err := useOwn(cached, true); err != nil {
			return got, err
		}
	}
	var own []netip.Prefix
	if len(got) < n {
		// The cache may miss blocks another process claimed for this node, so claimAndUse lists
		// them first. One claimer per node in this process: callers queued behind it use the
		// block it claims instead of claiming one each.
		l := a.nodeLock(node)
		before := l.claims.Load()
		l.Lock()
		var err error
		if l.claims.Load() != before {
			// Another caller claimed a block while this one waited: try the (cached) blocks
			// first rather than every caller in the queue re-reading all of the node's blocks.
			a.mu.Lock()
			cached := a.affine[node]
			a.mu.Unlock()
			err = useOwn(cached, true)
		}
		if err == nil && len(got) < n {
			err = a.claimAndUse(ctx, env, node, pools, n, &got, &own, useOwn)
		}
		l.Unlock()
		if err != nil {
			return got, err
		}
	}
	if len(got) < n && !env.cfg.StrictAffinity {
		ips, err := a.borrow(ctx, pools, n-len(got), node, hs, attrs)
		got = append(got, ips...)
		if err != nil {
			return got, err
		}
	}
	if len(got) < n {
		return got, fmt.Errorf("assign %d IPv%d addresses (got %d, strictAffinity=%v, maxBlocksPerHost=%d): %w",
			n, fam, len(got), env.cfg.StrictAffinity, env.cfg.MaxBlocksPerHost, ErrPoolsExhausted)
	}
	return got, nil
}

// claimAndUse claims blocks for node until n addresses are assigned, the node has its maximum
// of blocks, or no block is left. It first lists the node's blocks again: another caller may have
// claimed one while this one waited for the lock.
func (a *Allocator) claimAndUse(ctx context.Context, env *allocEnv, node string, pools []*pool, n int,
	got *[]netip.Addr, own *[]netip.Prefix, useOwn func([]netip.Prefix, bool) error) error {
	list, err := a.nodeBlocks(ctx, node)
	if err != nil {
		return err
	}
	*own = list
	if err := useOwn(list, false); err != nil {
		return err
	}
	for len(*got) < n {
		if len(pools) > 0 && env.cfg.MaxBlocksPerHost > 0 && blocksOfFamily(*own, pools[0].cidr.Addr().Is4()) >= env.cfg.MaxBlocksPerHost {
			return nil
		}
		b, err := a.claimBlock(ctx, node, pools)
		if errors.Is(err, errNoFreeBlock) {
			return nil
		}
		if err != nil {
			return err
		}
		*own = append(*own, b)
		a.nodeLock(node).claims.Add(1)
		if err := useOwn([]netip.Prefix{b}, false); err != nil {
			return err
		}
	}
	return nil
}

// blocksOfFamily counts the IPv4 (v4) or IPv6 blocks of a list: maxBlocksPerHost applies to
// each family on its own, as in Calico, so a dual-stack host with a limit of 1 gets one of each.
func blocksOfFamily(blocks []netip.Prefix, v4 bool) int {
	n := 0
	for _, b := range blocks {
		if b.Addr().Is4() == v4 {
			n++
		}
	}
	return n
}

// borrow takes addresses from blocks this node does not own (other hosts' or orphaned ones).
func (a *Allocator) borrow(ctx context.Context, pools []*pool, n int, node string, hs *handleState,
	attrs map[string]string) ([]netip.Addr, error) {
	kvs, _, err := a.store.List(ctx, BlockPrefix)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	var got []netip.Addr
	for _, e := range kvs {
		b, err := DecodeBlock(e.Value)
		if err != nil {
			a.log.Warn("skipping undecodable block", "key", e.Key, "err", err)
			continue
		}
		if b.FreeCount() == 0 || b.Host() == node ||
			!slices.ContainsFunc(pools, func(p *pool) bool { return p.cidr.Overlaps(b.CIDR) }) {
			continue
		}
		a.remember(b.CIDR, e)
		ips, _, err := a.assignFromBlock(ctx, b.CIDR, n-len(got), "", hs, attrs, false)
		got = append(got, ips...)
		if err != nil || len(got) == n {
			return got, err
		}
	}
	return got, nil
}

func (a *Allocator) remember(cidr netip.Prefix, e kv.KV) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.Value == nil {
		delete(a.blocks, cidr)
		return
	}
	if old, ok := a.blocks[cidr]; !ok || old.kv.Revision <= e.Revision {
		a.blocks[cidr] = cachedBlock{kv: e, free: -1}
	}
}

// readBlock returns the cached guess of a block unless fresh is set; (KV{}, false, nil) if absent.
func (a *Allocator) readBlock(ctx context.Context, cidr netip.Prefix, fresh bool) (kv.KV, *Block, error) {
	if !fresh {
		a.mu.Lock()
		c, ok := a.blocks[cidr]
		a.mu.Unlock()
		if ok {
			if c.block == nil {
				b, err := DecodeBlock(c.kv.Value)
				if err != nil {
					return kv.KV{}, nil, err
				}
				c.block = b
				a.mu.Lock()
				if cur, ok := a.blocks[cidr]; ok && cur.kv.Revision == c.kv.Revision {
					a.blocks[cidr] = c
				}
				a.mu.Unlock()
			}
			return c.kv, c.block.clone(), nil
		}
	}
	e, err := a.store.Get(ctx, BlockKey(cidr))
	if errors.Is(err, kv.ErrNotFound) {
		a.remember(cidr, kv.KV{})
		return kv.KV{}, nil, nil
	}
	if err != nil {
		return kv.KV{}, nil, fmt.Errorf("read block %v: %w", cidr, err)
	}
	a.remember(cidr, e)
	b, err := DecodeBlock(e.Value)
	return e, b, err
}

// handleState is the caller's view of one handle across the writes of one operation.
type handleState struct {
	id        string
	h         *Handle
	rev       int64 // 0: not stored
	loaded    bool
	createdAt time.Time // Created of a handle this operation wrote (or may have written) as new
}

func (a *Allocator) loadHandle(ctx context.Context, hs *handleState) error {
	e, err := a.store.Get(ctx, HandleKey(hs.id))
	switch {
	case errors.Is(err, kv.ErrNotFound):
		hs.h, hs.rev = nil, 0
	case err != nil:
		return fmt.Errorf("read handle %s: %w", hs.id, err)
	default:
		h, err := DecodeHandle(e.Value)
		if err != nil {
			return err
		}
		hs.h, hs.rev = h, e.Revision
	}
	hs.loaded = true
	return nil
}

// handleOp returns the write that stores h in place of what hs last saw.
func (hs *handleState) op(h *Handle) kv.Op {
	key := HandleKey(hs.id)
	switch {
	case h.Count() == 0:
		return kv.Op{Kind: kv.OpDelete, Key: key, Rev: hs.rev}
	case hs.rev == 0:
		return kv.Op{Kind: kv.OpCreate, Key: key, Value: mustJSON(h)}
	default:
		return kv.Op{Kind: kv.OpUpdate, Key: key, Value: mustJSON(h), Rev: hs.rev}
	}
}

// AssignIPArgs asks for one specific address.
type AssignIPArgs struct {
	IP     netip.Addr
	Handle string
	Node   string // if set, a block created for the address becomes this node's
	Attrs  map[string]string
}

// AssignIP assigns args.IP to args.Handle: ErrAddressNotInPool if no pool holds it,
// ErrPoolDisabled if its pool is disabled, ErrAddressInUse if another handle holds it. An
// address the handle already holds is success, so a repeated request does no harm.
func (a *Allocator) AssignIP(ctx context.Context, args AssignIPArgs) error {
	if args.Handle == "" || !args.IP.IsValid() {
		return fmt.Errorf("assign ip: handle and address are required")
	}
	env, err := a.loadEnv(ctx, args.Node)
	if err != nil {
		return fmt.Errorf("assign %v: %w", args.IP.Unmap(), err)
	}
	_, err = a.assignIP(ctx, env, args)
	return err
}

// AssignIPsArgs asks for specific addresses, all under one handle.
type AssignIPsArgs struct {
	IPs    []netip.Addr
	Handle string
	Node   string // required: the addresses are this node's workload's
	Attrs  map[string]string
}

// AssignIPs assigns every address of args.IPs to args.Handle, all or nothing: when one cannot
// be had (ErrAddressNotInPool, ErrPoolDisabled, ErrAddressInUse), those this call took are
// released again and the error names the address. Addresses the handle already held count as
// assigned and are left alone by that release. A block claimed for an address on the way stays
// the node's, empty, as AutoAssign leaves the blocks it claims.
func (a *Allocator) AssignIPs(ctx context.Context, args AssignIPsArgs) (Assigned, error) {
	var out Assigned
	if args.Handle == "" || args.Node == "" || len(args.IPs) == 0 {
		return out, fmt.Errorf("assign addresses: handle, node and at least one address are required")
	}
	env, err := a.loadEnv(ctx, args.Node)
	if err != nil {
		return out, fmt.Errorf("assign addresses to %s: %w", args.Handle, err)
	}
	var taken []netip.Addr
	for _, ip := range args.IPs {
		ip = ip.Unmap()
		if !ip.IsValid() || slices.Contains(out.IPv4, ip) || slices.Contains(out.IPv6, ip) {
			err = fmt.Errorf("assign %v: invalid or repeated address", ip)
			break
		}
		var added bool
		added, err = a.assignIP(ctx, env, AssignIPArgs{IP: ip, Handle: args.Handle, Node: args.Node, Attrs: args.Attrs})
		if err != nil {
			break
		}
		if added {
			taken = append(taken, ip)
		}
		if ip.Is4() {
			out.IPv4 = append(out.IPv4, ip)
		} else {
			out.IPv6 = append(out.IPv6, ip)
		}
	}
	if err == nil {
		return out, nil
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var errs []error
	for _, ip := range taken {
		if _, rerr := a.releaseIfHandle(uctx, ip, args.Handle); rerr != nil {
			errs = append(errs, fmt.Errorf("release %v: %w", ip, rerr))
		}
	}
	if len(errs) > 0 {
		err = errors.Join(err, fmt.Errorf("undo partial assignment to %s: %w", args.Handle, errors.Join(errs...)))
	}
	return Assigned{}, fmt.Errorf("assign addresses to %s on %s: %w", args.Handle, args.Node, err)
}

// assignIP does AssignIP with the pools already read; added is false when the handle already
// held the address.
func (a *Allocator) assignIP(ctx context.Context, env *allocEnv, args AssignIPArgs) (added bool, err error) {
	ip := args.IP.Unmap()
	p := env.poolFor(ip)
	if p == nil {
		return false, fmt.Errorf("assign %v: %w", ip, ErrAddressNotInPool)
	}
	if p.spec.Disabled {
		return false, fmt.Errorf("assign %v: pool %s: %w", ip, p.name, ErrPoolDisabled)
	}
	cidr, err := a.blockHolding(ctx, ip, p.blockFor(ip))
	if err != nil {
		return false, fmt.Errorf("assign %v: %w", ip, err)
	}
	if args.Node != "" {
		l := a.nodeLock(args.Node)
		l.Lock()
		defer l.Unlock()
	}
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return false, fmt.Errorf("assign %v: %w", ip, err)
	}
	defer unlock()
	hs := &handleState{id: args.Handle}
	attrs := withNode(args.Attrs, args.Node)
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		e, b, err := a.readBlock(ctx, cidr, true)
		if err != nil {
			return false, fmt.Errorf("assign %v: %w", ip, err)
		}
		if b == nil {
			if err := a.createBlockFor(ctx, cidr, args.Node, env); err != nil {
				return false, fmt.Errorf("assign %v: %w", ip, err)
			}
			continue
		}
		if at, ok := b.HandleOf(ip); ok {
			if at.Handle == hs.id {
				return false, nil
			}
			return false, fmt.Errorf("assign %v: %w (held by handle %s)", ip, ErrAddressInUse, at.Handle)
		}
		if err := b.AssignIP(ip, hs.id, attrs); err != nil {
			return false, err
		}
		if !hs.loaded {
			if err := a.loadHandle(ctx, hs); err != nil {
				return false, fmt.Errorf("assign %v: %w", ip, err)
			}
		}
		h := &Handle{ID: hs.id, Created: a.now().UTC()}
		if hs.h != nil {
			h = hs.h.clone()
		}
		h.Add(cidr, 1)
		val, err := EncodeBlock(b)
		if err != nil {
			return false, err
		}
		rev, err := a.store.Commit(ctx, kv.Op{Kind: kv.OpUpdate, Key: e.Key, Value: val, Rev: e.Revision}, hs.op(h))
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				return false, fmt.Errorf("assign %v: %w", ip, err)
			}
			hs.loaded = false
			continue
		}
		if err != nil {
			return false, fmt.Errorf("assign %v: write block %v: %w", ip, cidr, err)
		}
		a.remember(cidr, kv.KV{Key: e.Key, Value: val, Revision: rev})
		return true, nil
	}
	return false, fmt.Errorf("assign %v: %w", ip, ErrTooManyRetries)
}

// blockHolding returns the block that holds ip: the pool's block for it (guess) when that exists,
// else a stored block of another size containing ip (left by a pool deleted and created again
// with another blockSize, whose addresses may still be held), else guess, still to be created.
// Looking only at guess would hand out an address such a block holds a second time. A guess that
// would overlap a stored block of another size is refused: their addresses would be handed out
// twice. (Blocks of two sizes over one range come only from a pool re-created, never from two
// pools at once, so the list read here stays true until the block is created.)
func (a *Allocator) blockHolding(ctx context.Context, ip netip.Addr, guess netip.Prefix) (netip.Prefix, error) {
	if _, b, err := a.readBlock(ctx, guess, false); err != nil {
		return guess, err
	} else if b != nil {
		return guess, nil
	}
	kvs, _, err := a.store.List(ctx, BlockPrefix)
	if err != nil {
		return guess, fmt.Errorf("list blocks: %w", err)
	}
	var overlap netip.Prefix
	for _, e := range kvs {
		c, err := ParseBlockKey(e.Key)
		switch {
		case err != nil:
		case c.Contains(ip):
			return c, nil
		case c != guess && c.Overlaps(guess):
			overlap = c
		}
	}
	if overlap.IsValid() {
		return guess, fmt.Errorf("create block %v: it would overlap block %v, left by a pool whose blockSize changed; "+
			"release that block's addresses first (terracectl ipam check shows it)", guess, overlap)
	}
	return guess, nil
}

// createBlockFor creates the block holding a specifically requested address: claimed for node
// when it may own one more block, unowned otherwise. Losing the race to create it is fine.
// blockHolding has checked it overlaps no stored block.
func (a *Allocator) createBlockFor(ctx context.Context, cidr netip.Prefix, node string, env *allocEnv) error {
	if node != "" {
		own, err := a.nodeBlocks(ctx, node)
		if err != nil {
			return err
		}
		if env.cfg.MaxBlocksPerHost == 0 || blocksOfFamily(own, cidr.Addr().Is4()) < env.cfg.MaxBlocksPerHost {
			err := a.claim(ctx, node, cidr)
			if errors.Is(err, kv.ErrConflict) {
				return nil
			}
			return err
		}
	}
	b, err := NewBlock(cidr, "")
	if err != nil {
		return err
	}
	val, err := EncodeBlock(b)
	if err != nil {
		return err
	}
	if _, err := a.store.Create(ctx, BlockKey(cidr), val); err != nil && !errors.Is(err, kv.ErrExists) {
		return fmt.Errorf("create block %v: %w", cidr, err)
	}
	return nil
}

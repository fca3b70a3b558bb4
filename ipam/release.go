package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/terracenet/terrace/datastore/kv"
)

// ReleaseIPs frees the given addresses, whoever holds them, and returns those that were not
// assigned (nothing to do for them). Each block is one transaction with the handles it touches.
func (a *Allocator) ReleaseIPs(ctx context.Context, ips ...netip.Addr) ([]netip.Addr, error) {
	byBlock, notFound, err := a.groupByBlock(ctx, ips)
	if err != nil {
		return nil, fmt.Errorf("release %v: %w", ips, err)
	}
	var errs []error
	for _, cidr := range sortedPrefixes(keysOf(byBlock)) {
		not, err := a.releaseInBlock(ctx, cidr, byBlock[cidr], func(b *Block) (map[string]int, []netip.Addr) {
			return b.Release(byBlock[cidr])
		})
		notFound = append(notFound, not...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return notFound, fmt.Errorf("release addresses: %w", err)
	}
	return notFound, nil
}

// ReleaseIPsOfNode is ReleaseIPs for a caller that speaks for one node (its agent): an address
// whose allocation carries another node's name is left alone and reported in an error wrapping
// ErrOtherNode, decided in the same transaction that frees the others. Allocations without a
// node attribute are released.
func (a *Allocator) ReleaseIPsOfNode(ctx context.Context, node string, ips ...netip.Addr) ([]netip.Addr, error) {
	if node == "" {
		return nil, errors.New("release addresses: the node name is empty")
	}
	byBlock, notFound, err := a.groupByBlock(ctx, ips)
	if err != nil {
		return nil, fmt.Errorf("release %v: %w", ips, err)
	}
	var errs []error
	var others []netip.Addr
	for _, cidr := range sortedPrefixes(keysOf(byBlock)) {
		var refused []netip.Addr
		not, err := a.releaseInBlock(ctx, cidr, byBlock[cidr], func(b *Block) (map[string]int, []netip.Addr) {
			refused = refused[:0] // a retry decides again on a fresh read
			var mine []netip.Addr
			for _, ip := range byBlock[cidr] {
				if at, ok := b.HandleOf(ip); ok {
					if n := at.Attrs[AttrNode]; n != "" && n != node {
						refused = append(refused, ip)
						continue
					}
				}
				mine = append(mine, ip)
			}
			return b.Release(mine)
		})
		others = append(others, refused...)
		notFound = append(notFound, not...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(others) > 0 {
		errs = append(errs, fmt.Errorf("%v: %w, not %s", others, ErrOtherNode, node))
	}
	if err := errors.Join(errs...); err != nil {
		return notFound, fmt.Errorf("release addresses: %w", err)
	}
	return notFound, nil
}

// ReleaseByHandleOfNode is ReleaseByHandle for a caller that speaks for one node: a handle
// holding an address whose allocation carries another node's name is refused as a whole (an
// error wrapping ErrOtherNode) and nothing is freed. A handle names one attachment of one pod,
// so its node does not change between the check and the release.
func (a *Allocator) ReleaseByHandleOfNode(ctx context.Context, handle, node string) ([]netip.Addr, error) {
	if node == "" {
		return nil, fmt.Errorf("release handle %s: the node name is empty", handle)
	}
	hs := &handleState{id: handle}
	if err := a.loadHandle(ctx, hs); err != nil {
		return nil, fmt.Errorf("release handle %s: %w", handle, err)
	}
	if hs.h == nil {
		return nil, fmt.Errorf("release handle %s: %w", handle, ErrHandleNotFound)
	}
	for _, k := range sortedKeys(hs.h.Blocks) {
		_, b, err := a.readBlock(ctx, netip.MustParsePrefix(k), true)
		if err != nil {
			return nil, fmt.Errorf("release handle %s: %w", handle, err)
		}
		if b == nil {
			continue
		}
		for _, al := range b.Allocated() {
			if n := al.Attrs[AttrNode]; al.Handle == handle && n != "" && n != node {
				return nil, fmt.Errorf("release handle %s: %v is %w %s, not %s", handle, al.IP, ErrOtherNode, n, node)
			}
		}
	}
	return a.ReleaseByHandle(ctx, handle)
}

func keysOf(m map[netip.Prefix][]netip.Addr) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// groupByBlock finds each address's block: from the pools when one holds it, else by listing
// blocks (the pool may be gone while its blocks remain).
func (a *Allocator) groupByBlock(ctx context.Context, ips []netip.Addr) (map[netip.Prefix][]netip.Addr, []netip.Addr, error) {
	var pools []*pool
	if a.ds != nil {
		var err error
		if pools, err = a.loadPools(ctx); err != nil {
			return nil, nil, err
		}
	}
	env := &allocEnv{pools: pools}
	out := map[netip.Prefix][]netip.Addr{}
	var rest []netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		if p := env.poolFor(ip); p != nil {
			b := p.blockFor(ip)
			// The pool's block size may not be the one the address's block was made with
			// (a pool created again with another blockSize): then look among the blocks.
			if _, blk, err := a.readBlock(ctx, b, false); err == nil && blk != nil {
				out[b] = append(out[b], ip)
				continue
			}
		}
		rest = append(rest, ip)
	}
	if len(rest) == 0 {
		return out, nil, nil
	}
	kvs, _, err := a.store.List(ctx, BlockPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list blocks: %w", err)
	}
	var notFound []netip.Addr
	for _, ip := range rest {
		i := slices.IndexFunc(kvs, func(e kv.KV) bool {
			c, err := ParseBlockKey(e.Key)
			return err == nil && c.Contains(ip)
		})
		if i < 0 {
			notFound = append(notFound, ip)
			continue
		}
		c, _ := ParseBlockKey(kvs[i].Key)
		out[c] = append(out[c], ip)
	}
	return out, notFound, nil
}

// releaseInBlock applies release to the stored block and writes the block together with every
// handle it freed addresses of, retrying from a fresh read on conflict. A block left empty with no
// owner is deleted, returning it to the pool.
func (a *Allocator) releaseInBlock(ctx context.Context, cidr netip.Prefix, ips []netip.Addr,
	release func(*Block) (map[string]int, []netip.Addr)) ([]netip.Addr, error) {
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		e, b, err := a.readBlock(ctx, cidr, true)
		if err != nil {
			return nil, err
		}
		if b == nil {
			return ips, nil
		}
		freed, not := release(b)
		if len(freed) == 0 {
			return not, nil
		}
		ops := make([]kv.Op, 0, len(freed)+1)
		var val []byte
		if b.Empty() && b.Affinity == "" {
			ops = append(ops, kv.Op{Kind: kv.OpDelete, Key: e.Key, Rev: e.Revision})
		} else {
			if val, err = EncodeBlock(b); err != nil {
				return nil, err
			}
			ops = append(ops, kv.Op{Kind: kv.OpUpdate, Key: e.Key, Value: val, Rev: e.Revision})
		}
		for _, id := range sortedKeys(freed) {
			hs := &handleState{id: id}
			if err := a.loadHandle(ctx, hs); err != nil {
				return nil, err
			}
			if hs.h == nil {
				a.log.Warn("released addresses of a handle with no record", "handle", id, "block", cidr)
				continue
			}
			h := hs.h.clone()
			h.Remove(cidr, freed[id])
			ops = append(ops, hs.op(h))
		}
		rev, err := a.store.Commit(ctx, ops...)
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				return nil, fmt.Errorf("write block %v: %w", cidr, err)
			}
			continue
		}
		if err != nil {
			a.remember(cidr, kv.KV{})
			return nil, fmt.Errorf("write block %v: %w", cidr, err)
		}
		if val == nil {
			a.remember(cidr, kv.KV{})
		} else {
			a.remember(cidr, kv.KV{Key: e.Key, Value: val, Revision: rev})
		}
		return not, nil
	}
	return nil, fmt.Errorf("release in block %v: %w", cidr, ErrTooManyRetries)
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ReleaseByHandle frees every address held by handle and deletes the handle. It reads only the
// blocks the handle names. A handle that does not exist (never did, or already released) gives
// ErrHandleNotFound: callers wanting an idempotent release treat that as done.
func (a *Allocator) ReleaseByHandle(ctx context.Context, handle string) ([]netip.Addr, error) {
	hs := &handleState{id: handle}
	if err := a.loadHandle(ctx, hs); err != nil {
		return nil, fmt.Errorf("release handle %s: %w", handle, err)
	}
	if hs.h == nil {
		return nil, fmt.Errorf("release handle %s: %w", handle, ErrHandleNotFound)
	}
	var released []netip.Addr
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		if hs.h == nil || len(hs.h.Blocks) == 0 {
			if hs.h != nil {
				// An empty record left behind: remove it.
				if _, err := a.store.Delete(ctx, HandleKey(handle), hs.rev); err != nil && !errors.Is(err, kv.ErrNotFound) && !errors.Is(err, kv.ErrConflict) {
					return released, fmt.Errorf("release handle %s: %w", handle, err)
				}
			}
			return released, nil
		}
		cidr := netip.MustParsePrefix(sortedKeys(hs.h.Blocks)[0])
		ips, err := a.releaseHandleInBlock(ctx, cidr, hs)
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				return released, fmt.Errorf("release handle %s: %w", handle, err)
			}
			if err := a.loadHandle(ctx, hs); err != nil {
				return released, fmt.Errorf("release handle %s: %w", handle, err)
			}
			continue
		}
		if err != nil {
			return released, fmt.Errorf("release handle %s: %w", handle, err)
		}
		released = append(released, ips...)
		attempt = 0
	}
	return released, fmt.Errorf("release handle %s: %w", handle, ErrTooManyRetries)
}

// releaseHandleInBlock frees the handle's addresses in one block and drops the block from the
// handle in the same transaction. hs is updated on success.
func (a *Allocator) releaseHandleInBlock(ctx context.Context, cidr netip.Prefix, hs *handleState) ([]netip.Addr, error) {
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return nil, err
	}
	defer unlock()
	e, b, err := a.readBlock(ctx, cidr, true)
	if err != nil {
		return nil, err
	}
	h := hs.h.clone()
	delete(h.Blocks, cidr.String())
	var ops []kv.Op
	var ips []netip.Addr
	var val []byte
	if b != nil {
		ips = b.ReleaseHandle(hs.id)
		if len(ips) > 0 {
			if b.Empty() && b.Affinity == "" {
				ops = append(ops, kv.Op{Kind: kv.OpDelete, Key: e.Key, Rev: e.Revision})
			} else {
				if val, err = EncodeBlock(b); err != nil {
					return nil, err
				}
				ops = append(ops, kv.Op{Kind: kv.OpUpdate, Key: e.Key, Value: val, Rev: e.Revision})
			}
		} else {
			// Nothing of ours there now, but the block must not change under this decision.
			ops = append(ops, kv.Op{Kind: kv.OpCheck, Key: e.Key, Rev: e.Revision})
		}
	} else {
		ops = append(ops, kv.Op{Kind: kv.OpCheck, Key: BlockKey(cidr), Rev: 0})
	}
	ops = append(ops, hs.op(h))
	rev, err := a.store.Commit(ctx, ops...)
	if err != nil {
		if !errors.Is(err, kv.ErrConflict) {
			a.remember(cidr, kv.KV{})
		}
		return nil, fmt.Errorf("write block %v: %w", cidr, err)
	}
	if val != nil {
		a.remember(cidr, kv.KV{Key: e.Key, Value: val, Revision: rev})
	} else {
		a.remember(cidr, kv.KV{})
	}
	hs.h = h
	if h.Count() == 0 {
		hs.h, hs.rev = nil, 0
	} else {
		hs.rev = rev
	}
	return ips, nil
}

// releaseIfHandle frees ip only if handle still holds it.
func (a *Allocator) releaseIfHandle(ctx context.Context, ip netip.Addr, handle string) (bool, error) {
	byBlock, _, err := a.groupByBlock(ctx, []netip.Addr{ip})
	if err != nil {
		return false, err
	}
	for cidr := range byBlock {
		not, err := a.releaseInBlock(ctx, cidr, []netip.Addr{ip}, func(b *Block) (map[string]int, []netip.Addr) {
			if b.ReleaseIfHandle(ip, handle) {
				return map[string]int{handle: 1}, nil
			}
			return nil, []netip.Addr{ip}
		})
		return err == nil && len(not) == 0, err
	}
	return false, nil
}

package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/terracenet/terrace/datastore/kv"
)

var errNoFreeBlock = errors.New("no unclaimed block left")

// nodeBlocks lists the blocks node owns, finishing claims left pending (confirm when the block
// names the node, drop the affinity when it does not) and refreshes the cache.
func (a *Allocator) nodeBlocks(ctx context.Context, node string) ([]netip.Prefix, error) {
	kvs, _, err := a.store.List(ctx, AffinityPrefix+node+"/")
	if err != nil {
		return nil, fmt.Errorf("list affinities of %s: %w", node, err)
	}
	var out []netip.Prefix
	for _, e := range kvs {
		n, cidr, err := ParseAffinityKey(e.Key)
		if err != nil || n != node {
			continue
		}
		aff, err := DecodeAffinity(e.Value)
		if err != nil {
			a.log.Warn("skipping undecodable affinity", "key", e.Key, "err", err)
			continue
		}
		if aff.State == affinityPending {
			ok, err := a.finishPending(ctx, node, cidr, e)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		out = append(out, cidr)
	}
	a.mu.Lock()
	a.affine[node] = out
	a.mu.Unlock()
	return out, nil
}

// finishPending settles a pending affinity: confirmed if its block is the node's, deleted if not.
func (a *Allocator) finishPending(ctx context.Context, node string, cidr netip.Prefix, e kv.KV) (bool, error) {
	_, b, err := a.readBlock(ctx, cidr, true)
	if err != nil {
		return false, err
	}
	if b != nil && b.Host() == node {
		_, err := a.store.Update(ctx, e.Key, mustJSON(Affinity{State: affinityConfirmd, Node: node, CIDR: cidr.String()}), e.Revision)
		if err != nil && !errors.Is(err, kv.ErrConflict) {
			return false, fmt.Errorf("confirm affinity %s: %w", e.Key, err)
		}
		return true, nil
	}
	if _, err := a.store.Delete(ctx, e.Key, e.Revision); err != nil && !errors.Is(err, kv.ErrConflict) && !errors.Is(err, kv.ErrNotFound) {
		return false, fmt.Errorf("drop stale affinity %s: %w", e.Key, err)
	}
	return false, nil
}

// claimBlock claims the first block of pools (in pool order) that does not exist yet.
func (a *Allocator) claimBlock(ctx context.Context, node string, pools []*pool) (netip.Prefix, error) {
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		kvs, _, err := a.store.List(ctx, BlockPrefix)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("list blocks: %w", err)
		}
		taken := make(map[netip.Prefix]bool, len(kvs))
		for _, e := range kvs {
			if p, err := ParseBlockKey(e.Key); err == nil {
				taken[p] = true
			}
		}
		cidr, ok := firstFree(pools, taken)
		if !ok {
			return netip.Prefix{}, errNoFreeBlock
		}
		err = a.claim(ctx, node, cidr)
		if errors.Is(err, kv.ErrConflict) {
			// Another host won this block; look again.
			if err := a.lostRace(ctx, attempt); err != nil {
				return netip.Prefix{}, fmt.Errorf("claim block for %s: %w", node, err)
			}
			continue
		}
		if err != nil {
			return netip.Prefix{}, err
		}
		return cidr, nil
	}
	return netip.Prefix{}, fmt.Errorf("claim block for %s: %w", node, ErrTooManyRetries)
}

// firstFree returns the lowest block of the first pool with one not in taken. It looks at most
// len(taken)+1 candidates per pool, so huge IPv6 pools cost no more than small ones.
func firstFree(pools []*pool, taken map[netip.Prefix]bool) (netip.Prefix, bool) {
	for _, p := range pools {
		b, _ := p.cidr.Addr().Prefix(p.blockBits)
		for range len(taken) + 1 {
			if !p.cidr.Contains(b.Addr()) {
				break
			}
			if !taken[b] && !overlapsAny(b, taken) {
				return b, true
			}
			// Past a larger block left by an earlier blockSize in one step: each candidate it
			// covers would otherwise use up the look-ahead, hiding the free blocks after it.
			if big, ok := largerOverlap(b, taken); ok {
				b = big
			}
			next, ok := nextPrefix(b)
			if ok && next.Bits() != p.blockBits {
				next = netip.PrefixFrom(next.Addr(), p.blockBits)
			}
			if !ok {
				break
			}
			b = next
		}
	}
	return netip.Prefix{}, false
}

// largerOverlap returns a taken block of a shorter prefix (larger) that covers b.
func largerOverlap(b netip.Prefix, taken map[netip.Prefix]bool) (netip.Prefix, bool) {
	for t := range taken {
		if t.Bits() < b.Bits() && t.Contains(b.Addr()) {
			return t, true
		}
	}
	return netip.Prefix{}, false
}

// overlapsAny guards against blocks of another size left by a pool whose blockSize changed.
func overlapsAny(b netip.Prefix, taken map[netip.Prefix]bool) bool {
	for t := range taken {
		if t.Bits() != b.Bits() && t.Overlaps(b) {
			return true
		}
	}
	return false
}

// nextPrefix is the prefix of the same length right after p.
func nextPrefix(p netip.Prefix) (netip.Prefix, bool) {
	a := p.Addr().As16()
	hostBits := p.Addr().BitLen() - p.Bits()
	// Add 1<<hostBits to the 128-bit address, byte by byte from the right.
	carry := 1 << (hostBits % 8)
	for i := 15 - hostBits/8; i >= 0 && carry > 0; i-- {
		v := int(a[i]) + carry
		a[i] = byte(v)
		carry = v >> 8
	}
	if carry > 0 {
		return netip.Prefix{}, false
	}
	ip := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		if !ip.Is4In6() {
			return netip.Prefix{}, false
		}
		ip = ip.Unmap()
	}
	return netip.PrefixFrom(ip, p.Bits()), true
}

// claim creates the block affine to node together with a pending affinity, then confirms the
// affinity. kv.ErrConflict means the block (or the affinity key) already exists.
func (a *Allocator) claim(ctx context.Context, node string, cidr netip.Prefix) error {
	b, err := NewBlock(cidr, node)
	if err != nil {
		return err
	}
	val, err := EncodeBlock(b)
	if err != nil {
		return err
	}
	affKey := AffinityKey(node, cidr)
	rev, err := a.store.Commit(ctx,
		kv.Op{Kind: kv.OpCreate, Key: affKey, Value: mustJSON(Affinity{State: affinityPending, Node: node, CIDR: cidr.String()})},
		kv.Op{Kind: kv.OpCreate, Key: BlockKey(cidr), Value: val})
	if err != nil {
		return fmt.Errorf("claim block %v for %s: %w", cidr, node, err)
	}
	a.remember(cidr, kv.KV{Key: BlockKey(cidr), Value: val, Revision: rev})
	a.mu.Lock()
	if l := a.affine[node]; !slices.Contains(l, cidr) {
		a.affine[node] = append(slices.Clone(l), cidr)
	}
	a.mu.Unlock()
	_, err = a.store.Update(ctx, affKey, mustJSON(Affinity{State: affinityConfirmd, Node: node, CIDR: cidr.String()}), rev)
	if err != nil && !errors.Is(err, kv.ErrConflict) {
		// The block is ours already; the next listing of the node's blocks confirms the affinity.
		a.log.Warn("could not confirm block affinity; it stays pending until the next listing", "block", cidr, "node", node, "err", err)
	}
	a.log.Debug("claimed block", "block", cidr, "node", node)
	return nil
}

// NodeRelease says what ReleaseNode did.
type NodeRelease struct {
	Node     string         `json:"node"`
	Freed    []netip.Prefix `json:"freed"`    // empty blocks returned to their pool
	Retained []BlockUsage   `json:"retained"` // blocks still holding addresses, now owned by no host
}

// ReleaseNode removes node's block affinities. Empty blocks are deleted (back to the pool); blocks
// still holding addresses stay, owned by nobody, until those are released (the last release
// deletes such a block). It does not release any address.
func (a *Allocator) ReleaseNode(ctx context.Context, node string) (NodeRelease, error) {
	out := NodeRelease{Node: node, Freed: []netip.Prefix{}, Retained: []BlockUsage{}}
	if node == "" {
		// Blocks owned by no host have an empty host: "" would take them all.
		return out, errors.New("release node: the node name is empty")
	}
	l := a.nodeLock(node)
	l.Lock()
	defer l.Unlock()
	affs, _, err := a.store.List(ctx, AffinityPrefix+node+"/")
	if err != nil {
		return out, fmt.Errorf("release node %s: list affinities: %w", node, err)
	}
	cidrs := map[netip.Prefix]bool{}
	for _, e := range affs {
		if n, c, err := ParseAffinityKey(e.Key); err == nil && n == node {
			cidrs[c] = true
		}
	}
	// Blocks naming the node without an affinity key (left by a crash or an older writer) too.
	blocks, _, err := a.store.List(ctx, BlockPrefix)
	if err != nil {
		return out, fmt.Errorf("release node %s: list blocks: %w", node, err)
	}
	for _, e := range blocks {
		if b, err := DecodeBlock(e.Value); err == nil && b.Host() == node {
			cidrs[b.CIDR] = true
		}
	}
	var errs []error
	for _, cidr := range sortedPrefixes(cidrs) {
		freed, usage, err := a.releaseAffinity(ctx, node, cidr)
		switch {
		case err != nil:
			errs = append(errs, err)
		case freed:
			out.Freed = append(out.Freed, cidr)
		case usage != nil:
			out.Retained = append(out.Retained, *usage)
		}
	}
	a.mu.Lock()
	delete(a.affine, node)
	a.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("release node %s: %w", node, err)
	}
	return out, nil
}

func sortedPrefixes(set map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

// releaseAffinity drops node's claim on one block in one transaction with the block write.
func (a *Allocator) releaseAffinity(ctx context.Context, node string, cidr netip.Prefix) (bool, *BlockUsage, error) {
	affKey := AffinityKey(node, cidr)
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return false, nil, err
	}
	defer unlock()
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		var ops []kv.Op
		ae, err := a.store.Get(ctx, affKey)
		switch {
		case errors.Is(err, kv.ErrNotFound):
		case err != nil:
			return false, nil, fmt.Errorf("read affinity %s: %w", affKey, err)
		default:
			ops = append(ops, kv.Op{Kind: kv.OpDelete, Key: affKey, Rev: ae.Revision})
		}
		e, b, err := a.readBlock(ctx, cidr, true)
		if err != nil {
			return false, nil, err
		}
		var usage *BlockUsage
		freed := false
		switch {
		case b == nil || b.Host() != node:
			// The block is gone or someone else's: only the stale affinity goes.
		case b.Empty():
			ops = append(ops, kv.Op{Kind: kv.OpDelete, Key: e.Key, Rev: e.Revision})
			freed = true
		default:
			b.Affinity = ""
			b.SequenceNumber++
			val, err := EncodeBlock(b)
			if err != nil {
				return false, nil, err
			}
			ops = append(ops, kv.Op{Kind: kv.OpUpdate, Key: e.Key, Value: val, Rev: e.Revision})
			u := usageOf(b)
			usage = &u
		}
		if len(ops) == 0 {
			return false, nil, nil
		}
		_, err = a.store.Commit(ctx, ops...)
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				return false, nil, fmt.Errorf("release block %v of %s: %w", cidr, node, err)
			}
			continue
		}
		if err != nil {
			return false, nil, fmt.Errorf("release block %v of %s: %w", cidr, node, err)
		}
		a.remember(cidr, kv.KV{})
		return freed, usage, nil
	}
	return false, nil, fmt.Errorf("release block %v of %s: %w", cidr, node, ErrTooManyRetries)
}

// ReleasePoolBlocks deletes the empty blocks inside cidr (and their affinities), for use after
// the pool covering cidr is deleted so its blocks stop being advertised. Blocks still holding
// addresses stay; inUse counts their addresses.
func (a *Allocator) ReleasePoolBlocks(ctx context.Context, cidr netip.Prefix) (freed []netip.Prefix, inUse int, err error) {
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("release blocks of %v: %w", cidr, err)
	}
	var errs []error
	for _, b := range blocks {
		if !cidr.Masked().Overlaps(b.CIDR) {
			continue
		}
		if !b.Empty() {
			inUse += b.UsedCount()
			continue
		}
		ok, err := a.deleteEmptyBlock(ctx, b.CIDR)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			freed = append(freed, b.CIDR)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return freed, inUse, fmt.Errorf("release blocks of %v: %w", cidr, err)
	}
	return freed, inUse, nil
}

// deleteEmptyBlock deletes a block and its owner's affinity if the block is still empty.
func (a *Allocator) deleteEmptyBlock(ctx context.Context, cidr netip.Prefix) (bool, error) {
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return false, err
	}
	defer unlock()
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		e, b, err := a.readBlock(ctx, cidr, true)
		if err != nil {
			return false, err
		}
		if b == nil || !b.Empty() {
			return false, nil
		}
		ops := []kv.Op{{Kind: kv.OpDelete, Key: e.Key, Rev: e.Revision}}
		if host := b.Host(); host != "" {
			ae, err := a.store.Get(ctx, AffinityKey(host, cidr))
			switch {
			case errors.Is(err, kv.ErrNotFound):
			case err != nil:
				return false, fmt.Errorf("read affinity of %v: %w", cidr, err)
			default:
				ops = append(ops, kv.Op{Kind: kv.OpDelete, Key: ae.Key, Rev: ae.Revision})
			}
		}
		_, err = a.store.Commit(ctx, ops...)
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				return false, fmt.Errorf("delete block %v: %w", cidr, err)
			}
			continue
		}
		if err != nil {
			return false, fmt.Errorf("delete block %v: %w", cidr, err)
		}
		a.remember(cidr, kv.KV{})
		if host := b.Host(); host != "" {
			a.mu.Lock()
			a.affine[host] = slices.DeleteFunc(slices.Clone(a.affine[host]), func(p netip.Prefix) bool { return p == cidr })
			a.mu.Unlock()
		}
		return true, nil
	}
	return false, fmt.Errorf("delete block %v: %w", cidr, ErrTooManyRetries)
}

package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// PoolDeletion says what DeletePool did.
type PoolDeletion struct {
	Pool string       `json:"pool"`
	CIDR netip.Prefix `json:"cidr"`
	// Allocated is how many addresses the pool held when it was deleted (non-zero only with force).
	Allocated int `json:"allocated"`
	// FreedBlocks are the empty blocks deleted with the pool, so they are no longer advertised.
	FreedBlocks []netip.Prefix `json:"freedBlocks"`
	// Retained counts the addresses still allocated in blocks that stay until they are released;
	// `ipam check` reports those blocks as outside every pool.
	Retained int `json:"retained"`
}

// PoolInUseError is the refusal to delete a pool that still holds addresses.
type PoolInUseError struct {
	Pool      string
	Allocated int
	Disabled  bool
	// Undecodable: the stored pool cannot be read, so what it holds cannot be counted.
	Undecodable bool
}

func (e *PoolInUseError) Error() string {
	if e.Undecodable {
		return fmt.Sprintf("IP pool %s: its stored value cannot be decoded, so the addresses in it cannot be counted; --force deletes the key alone (its blocks stay until released)", e.Pool)
	}
	how := "disable it (spec.disabled: true) and delete it with --force to delete it anyway"
	if e.Disabled {
		how = "delete it with --force to delete it anyway"
	}
	n := fmt.Sprintf("%d allocated addresses", e.Allocated)
	if e.Allocated == 1 {
		n = "1 allocated address"
	}
	return fmt.Sprintf("IP pool %s still has %s; release them first, or %s", e.Pool, n, how)
}

// Unwrap makes errors.Is(err, ErrPoolInUse) hold.
func (e *PoolInUseError) Unwrap() error { return ErrPoolInUse }

// DeletePool deletes the IPPool name, refusing with a *PoolInUseError (wrapping ErrPoolInUse)
// while any address inside it is allocated, unless the pool is disabled and force is set.
//
// Deleting a resource is the one resource write IPAM makes, and it is here because the count and
// the delete must be one decision: the delete is a transaction conditional on the pool's revision
// and on no block having been written since the blocks were counted, so an allocation landing
// in between makes the delete start over rather than strand that address. resourceVersion, when
// not empty, must be the pool's current one (else an error wrapping datastore.ErrConflict).
// Afterwards the pool's empty blocks are deleted with their affinities; a crash before that leaves
// them for `ipam check` to report as blocks outside every pool and for ReleaseFromReport to free.
func (a *Allocator) DeletePool(ctx context.Context, name, resourceVersion string, force bool) (PoolDeletion, error) {
	out := PoolDeletion{Pool: name, FreedBlocks: []netip.Prefix{}}
	if a.ds == nil {
		return out, fmt.Errorf("delete IP pool %s: no datastore client", name)
	}
	info, err := api.LookupKind("IPPool")
	if err != nil {
		return out, fmt.Errorf("delete IP pool %s: %w", name, err)
	}
	wantRev, err := datastore.ParseVersion(info, "", name, resourceVersion)
	if err != nil {
		return out, err
	}
	for attempt := 0; ; attempt++ {
		if attempt == a.MaxRetries {
			return out, fmt.Errorf("delete IP pool %s: %w", name, ErrTooManyRetries)
		}
		r, err := a.ds.Get(ctx, "IPPool", "", name)
		if errors.Is(err, datastore.ErrUndecodable) {
			// Its CIDR is unknown, so its blocks cannot be checked or freed: only with force,
			// and the key alone.
			if !force {
				return out, &PoolInUseError{Pool: name, Undecodable: true}
			}
			if _, err := a.store.Delete(ctx, datastore.Key(info, "", name), wantRev); err != nil {
				return out, fmt.Errorf("delete IP pool %s: %w", name, err)
			}
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("delete IP pool %s: %w", name, err)
		}
		p, ok := r.(*api.IPPool)
		if !ok {
			return out, fmt.Errorf("delete IP pool %s: read a %T", name, r)
		}
		rv := p.Metadata.ResourceVersion
		if resourceVersion != "" && resourceVersion != rv {
			return out, fmt.Errorf("delete IP pool %s: resourceVersion %s is not the current %s: %w", name, resourceVersion, rv, datastore.ErrConflict)
		}
		poolRev, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			return out, fmt.Errorf("delete IP pool %s: parse resourceVersion %q: %w", name, rv, err)
		}
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			return out, fmt.Errorf("delete IP pool %s: %w", name, err)
		}
		out.CIDR = cidr.Masked()
		n, listRev, err := countAllocated(ctx, a.store, out.CIDR)
		if err != nil {
			return out, fmt.Errorf("delete IP pool %s: %w", name, err)
		}
		if n > 0 && !(force && p.Spec.Disabled) {
			return out, &PoolInUseError{Pool: name, Allocated: n, Disabled: p.Spec.Disabled}
		}
		ops := []kv.Op{{Kind: kv.OpDelete, Key: datastore.Key(info, "", name), Rev: poolRev}}
		if n == 0 {
			// Forced deletes go ahead whatever is allocated; only the "nothing allocated" verdict
			// needs the blocks to be as counted.
			ops = append(ops, kv.Op{Kind: kv.OpCheckPrefix, Key: BlockPrefix, Rev: listRev})
		}
		_, err = a.store.Commit(ctx, ops...)
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				return out, fmt.Errorf("delete IP pool %s: %w", name, err)
			}
			continue
		}
		if err != nil {
			return out, fmt.Errorf("delete IP pool %s: %w", name, err)
		}
		out.Allocated = n
		break
	}
	a.log.Info("deleted IP pool", "pool", name, "cidr", out.CIDR, "allocated", out.Allocated)
	freed, retained, err := a.releasePoolBlocks(ctx, out.CIDR)
	out.FreedBlocks = append(out.FreedBlocks, freed...)
	out.Retained = retained
	if err != nil {
		return out, fmt.Errorf("delete IP pool %s: deleted, but %w", name, err)
	}
	return out, nil
}

// releasePoolBlocks frees the empty blocks inside cidr (ReleasePoolBlocks) and takes the
// remaining ones from their hosts: a host must not keep advertising a whole block of a pool that
// is gone, and a block owned by nobody is deleted by the release of its last address. The
// addresses still there are in no pool any more, and BGP advertises nothing outside every pool:
// their workloads lose their routes on other hosts (why a pool in use must be disabled and the
// delete forced).
func (a *Allocator) releasePoolBlocks(ctx context.Context, cidr netip.Prefix) ([]netip.Prefix, int, error) {
	freed, inUse, err := a.ReleasePoolBlocks(ctx, cidr)
	if err != nil || inUse == 0 {
		return freed, inUse, err
	}
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return freed, inUse, err
	}
	var errs []error
	for _, b := range blocks {
		host := b.Host()
		if host == "" || !cidr.Overlaps(b.CIDR) {
			continue
		}
		ok, _, err := a.releaseAffinity(ctx, host, b.CIDR)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			freed = append(freed, b.CIDR)
		}
	}
	return freed, inUse, errors.Join(errs...)
}

// countAllocated counts the addresses allocated inside cidr and returns the store revision the
// count was read at.
func countAllocated(ctx context.Context, store *kv.Store, cidr netip.Prefix) (int, int64, error) {
	kvs, rev, err := store.List(ctx, BlockPrefix)
	if err != nil {
		return 0, 0, fmt.Errorf("list blocks: %w", err)
	}
	n := 0
	for _, e := range kvs {
		c, err := ParseBlockKey(e.Key)
		if err != nil || !cidr.Overlaps(c) {
			continue
		}
		b, err := DecodeBlock(e.Value)
		if err != nil {
			return 0, 0, fmt.Errorf("decode block %s: %w", e.Key, err)
		}
		for _, al := range b.Allocated() {
			if cidr.Contains(al.IP) {
				n++
			}
		}
	}
	return n, rev, nil
}

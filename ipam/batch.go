package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/terracenet/terrace/datastore/kv"
)

// Concurrent requests for one block are written as one transaction: the block once plus each
// request's handle. A host's block is a hot key; batching turns N compare-and-swaps that would
// queue (or conflict) on it into one write and one fsync.

// cachedBlock is the Allocator's last known value of a block, decoded once (never mutated: users
// get a clone); free is -1 until computed.
type cachedBlock struct {
	kv    kv.KV
	block *Block
	free  int
}

type assignReq struct {
	n     int
	owner string
	hs    *handleState
	attrs map[string]string

	ips  []netip.Addr
	err  error
	done chan struct{}
}

// batcher is this Allocator's state for one block: the queue of assignments waiting for the next
// batch, and the turn writers take (see lockBlock).
type batcher struct {
	mu      sync.Mutex
	queue   []*assignReq
	running bool
	turn    chan struct{} // holds a token while one of this Allocator's writers owns the block
}

func (a *Allocator) batcherOf(cidr netip.Prefix) *batcher {
	a.mu.Lock()
	defer a.mu.Unlock()
	bt := a.batchers[cidr]
	if bt == nil {
		bt = &batcher{turn: make(chan struct{}, 1)}
		a.batchers[cidr] = bt
	}
	return bt
}

// lockBlock makes this Allocator's writers of one block (assignment batches, releases, specific
// addresses, affinity changes) take turns. Two of them would only conflict in etcd and retry, and
// with many at once (concurrent DELs at the node agent) one could lose the race often enough to
// give up; taking turns leaves compare-and-swap to settle races between processes only.
func (a *Allocator) lockBlock(ctx context.Context, cidr netip.Prefix) (unlock func(), err error) {
	bt := a.batcherOf(cidr)
	select {
	case bt.turn <- struct{}{}:
		return func() { <-bt.turn }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for block %v: %w", cidr, ctx.Err())
	}
}

// cachedFree returns the free count of the cached block, if cached.
func (a *Allocator) cachedFree(cidr netip.Prefix) (int, bool) {
	a.mu.Lock()
	c, ok := a.blocks[cidr]
	a.mu.Unlock()
	if !ok {
		return 0, false
	}
	if c.free < 0 {
		if c.block == nil {
			b, err := DecodeBlock(c.kv.Value)
			if err != nil {
				return 0, false
			}
			c.block = b
		}
		c.free = c.block.FreeCount()
		a.mu.Lock()
		if cur, ok := a.blocks[cidr]; ok && cur.kv.Revision == c.kv.Revision {
			a.blocks[cidr] = c
		}
		a.mu.Unlock()
	}
	return c.free, true
}

// assignFromBlock takes up to n addresses from one block, written in one transaction with the
// handle (and with other callers' requests for the same block). With owner set it only uses the
// block while the block is affine to owner. With trustFull a block the cache shows full is
// skipped without reading it, and definitive is false.
func (a *Allocator) assignFromBlock(ctx context.Context, cidr netip.Prefix, n int, owner string, hs *handleState,
	attrs map[string]string, trustFull bool) (ips []netip.Addr, definitive bool, err error) {
	if trustFull {
		if free, ok := a.cachedFree(cidr); ok && free == 0 {
			return nil, false, nil
		}
	}
	req := &assignReq{n: n, owner: owner, hs: hs, attrs: attrs, done: make(chan struct{})}
	bt := a.batcherOf(cidr)
	bt.mu.Lock()
	bt.queue = append(bt.queue, req)
	lead := !bt.running
	bt.running = true
	bt.mu.Unlock()
	if lead {
		// The first caller writes batches until the queue is empty; callers arriving meanwhile
		// wait for the next batch. The batches are everyone's, so they do not end with the
		// leader's context (a plugin killed by its runtime, a request timing out at the agent):
		// that would fail the other pods' assignments too. Each etcd request is still bounded
		// by the store's request timeout.
		ctx := context.WithoutCancel(ctx)
		for {
			bt.mu.Lock()
			batch := bt.queue
			bt.queue = nil
			if len(batch) == 0 {
				bt.running = false
				bt.mu.Unlock()
				break
			}
			bt.mu.Unlock()
			unlock, err := a.lockBlock(ctx, cidr)
			if err != nil {
				for _, r := range batch {
					r.err = err
					close(r.done)
				}
				continue
			}
			a.writeBatch(ctx, cidr, batch)
			unlock()
		}
	}
	<-req.done
	return req.ips, true, req.err
}

// writeBatch assigns every request from the block in one transaction, re-reading block and
// handles on conflict. Requests for a handle already in the batch wait for a later round.
func (a *Allocator) writeBatch(ctx context.Context, cidr netip.Prefix, batch []*assignReq) {
	seen := map[string]bool{}
	var now, later []*assignReq
	for _, r := range batch {
		if seen[r.hs.id] {
			later = append(later, r)
			continue
		}
		seen[r.hs.id] = true
		now = append(now, r)
	}
	defer func() {
		for _, r := range now {
			close(r.done)
		}
		if len(later) > 0 {
			a.writeBatch(ctx, cidr, later)
		}
	}()
	fresh := false
	for attempt := 0; attempt < a.MaxRetries; attempt++ {
		e, b, err := a.readBlock(ctx, cidr, fresh)
		if err != nil {
			setErr(now, err)
			return
		}
		short := false
		ops := []kv.Op{{}}
		handles := make([]*Handle, len(now))
		for i, r := range now {
			r.ips = nil
			if b == nil || (r.owner != "" && b.Host() != r.owner) {
				short = true
				continue
			}
			r.ips = b.Assign(r.n, r.hs.id, r.attrs)
			if len(r.ips) < r.n {
				short = true
			}
			if len(r.ips) == 0 {
				continue
			}
			h := &Handle{ID: r.hs.id, Created: a.now().UTC()}
			if r.hs.h != nil {
				h = r.hs.h.clone()
			}
			h.Add(cidr, len(r.ips))
			handles[i] = h
			ops = append(ops, r.hs.op(h))
		}
		if short && !fresh {
			// The cached guess may be out of date; only the stored block can say no.
			fresh = true
			continue
		}
		if len(ops) == 1 {
			return
		}
		val, err := EncodeBlock(b)
		if err != nil {
			setErr(now, err)
			return
		}
		ops[0] = kv.Op{Kind: kv.OpUpdate, Key: e.Key, Value: val, Rev: e.Revision}
		rev, err := a.store.Commit(ctx, ops...)
		a.commits.Add(1)
		if !errors.Is(err, kv.ErrConflict) {
			// Applied, or perhaps applied (etcd went away mid-call): remember the creation time
			// written, so an undo can tell a handle this call created from an older one.
			for i, r := range now {
				if handles[i] != nil && r.hs.rev == 0 {
					r.hs.createdAt = handles[i].Created
				}
			}
		}
		if errors.Is(err, kv.ErrConflict) {
			if err := a.lostRace(ctx, attempt); err != nil {
				setErr(now, fmt.Errorf("write block %v: %w", cidr, err))
				return
			}
			fresh = true
			for _, r := range now {
				if err := a.loadHandle(ctx, r.hs); err != nil {
					setErr(now, err)
					return
				}
			}
			continue
		}
		if err != nil {
			a.remember(cidr, kv.KV{}) // the write may or may not have happened
			setErr(now, fmt.Errorf("write block %v: %w", cidr, err))
			return
		}
		a.remember(cidr, kv.KV{Key: e.Key, Value: val, Revision: rev})
		for i, r := range now {
			if handles[i] != nil {
				r.hs.h, r.hs.rev, r.hs.loaded = handles[i], rev, true
			}
		}
		return
	}
	setErr(now, fmt.Errorf("write block %v: %w", cidr, ErrTooManyRetries))
}

func setErr(reqs []*assignReq, err error) {
	for _, r := range reqs {
		r.ips, r.err = nil, err
	}
}

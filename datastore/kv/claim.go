package kv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// HeldError says a key a Claim wanted is held by someone else; Value is what the holder wrote,
// for the caller to name it.
type HeldError struct {
	Key   string
	Value []byte
}

func (e *HeldError) Error() string { return fmt.Sprintf("%s is held by another holder", e.Key) }

// Claim is a key this process holds through an etcd lease it keeps alive. etcd deletes the key
// when renewals stop for the lease's TTL (the process died, or lost etcd that long), and Release
// deletes it at once, so a claim outlives neither its holder nor a long partition.
type Claim struct {
	s     *Store
	key   string
	lease clientv3.LeaseID
	lost  chan struct{}
	stop  context.CancelFunc
	once  sync.Once
	done  chan struct{}
}

// Claim writes value at key bound to a new lease of ttl (whole seconds, at least 2), if the key is
// absent or mine says its present value is this holder's own (an earlier life of the same holder,
// whose lease has not run out yet). Otherwise nothing is written and the error is a *HeldError.
func (s *Store) Claim(ctx context.Context, key string, value []byte, ttl time.Duration, mine func(held []byte) bool) (*Claim, error) {
	secs := int64(ttl / time.Second)
	if secs < 2 {
		return nil, fmt.Errorf("claim %s: lease time %v is under 2 s", key, ttl)
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	g, err := s.cli.Grant(rctx, secs)
	if err != nil {
		return nil, fmt.Errorf("claim %s: grant lease: %w", key, err)
	}
	revoke := func() {
		// Best effort: an unused lease expires by itself after ttl.
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = s.cli.Revoke(c, g.ID)
	}
	won := false
	// A few rounds: the holder's key can vanish or change between the read and the write.
	for attempt := 0; attempt < 3 && !won; attempt++ {
		resp, err := s.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(value), clientv3.WithLease(g.ID))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			revoke()
			return nil, fmt.Errorf("claim %s: %w", key, err)
		}
		if resp.Succeeded {
			won = true
			break
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			continue // deleted since the comparison
		}
		held := kvs[0]
		if mine == nil || !mine(held.Value) {
			revoke()
			return nil, &HeldError{Key: key, Value: held.Value}
		}
		resp, err = s.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", held.ModRevision)).
			Then(clientv3.OpPut(key, string(value), clientv3.WithLease(g.ID))).Commit()
		if err != nil {
			revoke()
			return nil, fmt.Errorf("claim %s: %w", key, err)
		}
		won = resp.Succeeded
	}
	if !won {
		revoke()
		return nil, fmt.Errorf("claim %s: the key kept changing: %w", key, ErrConflict)
	}
	// Renewals must not end with the caller's context (often a start-up deadline): only Release
	// or the lease running out ends them.
	kctx, stop := context.WithCancel(context.Background())
	ch, err := s.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		stop()
		revoke()
		return nil, fmt.Errorf("claim %s: keep lease alive: %w", key, err)
	}
	c := &Claim{s: s, key: key, lease: g.ID, lost: make(chan struct{}), stop: stop, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for range ch {
		}
		// The channel closes when the lease expired or could not be renewed before its TTL ran
		// out, or after Release; only the first is a loss.
		if kctx.Err() == nil {
			close(c.lost)
		}
	}()
	return c, nil
}

// Lost is closed when the claim ended without Release: etcd was out of reach for the lease's TTL
// and the key may be gone or held by someone else now.
func (c *Claim) Lost() <-chan struct{} { return c.lost }

// Key is the claimed key.
func (c *Claim) Key() string { return c.key }

// Release stops the renewals and deletes the key (by revoking the lease) so the next holder need
// not wait for the TTL. Calling it again does nothing.
func (c *Claim) Release(ctx context.Context) error {
	var err error
	c.once.Do(func() {
		c.stop()
		<-c.done
		ctx, cancel := c.s.reqCtx(ctx)
		defer cancel()
		// A lease that already ran out left nothing to delete.
		if _, rerr := c.s.cli.Revoke(ctx, c.lease); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			err = fmt.Errorf("release %s: %w", c.key, rerr)
		}
	})
	return err
}

package kv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore/embedded"
)

func TestClaim(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	ctx := context.Background()
	const key = "/terrace/status/v1/host-a/instance"
	isA := func(v []byte) bool { return string(v) == "a" || string(v) == "a2" }

	a, err := s.Claim(ctx, key, []byte("a"), 5*time.Second, isA)
	if err != nil {
		t.Fatalf("first claim: %v", err)
	}
	got, err := s.Get(ctx, key)
	if err != nil || string(got.Value) != "a" {
		t.Fatalf("after claim: %v %q, want value a", err, got.Value)
	}

	// Another holder is refused and told who holds it; nothing is written.
	_, err = s.Claim(ctx, key, []byte("b"), 5*time.Second, func(v []byte) bool { return string(v) == "b" })
	var held *HeldError
	if !errors.As(err, &held) || string(held.Value) != "a" || held.Key != key {
		t.Fatalf("claim by another holder: got %v, want HeldError with value a", err)
	}
	if got, _ := s.Get(ctx, key); string(got.Value) != "a" {
		t.Fatalf("refused claim changed the value to %q", got.Value)
	}

	// The same holder again (a restart before the old lease ran out) takes the key over; releasing
	// the old claim afterwards must not delete the new one.
	a2, err := s.Claim(ctx, key, []byte("a2"), 5*time.Second, isA)
	if err != nil {
		t.Fatalf("claim by the same holder: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("release old claim: %v", err)
	}
	if got, err := s.Get(ctx, key); err != nil || string(got.Value) != "a2" {
		t.Fatalf("after releasing the old claim: %v %q, want a2 kept", err, got.Value)
	}
	select {
	case <-a2.Lost():
		t.Fatal("new claim lost after the old one was released")
	default:
	}

	// Release deletes the key at once, and a second Release does nothing.
	if err := a2.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := a2.Release(ctx); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after release: got %v, want not found", err)
	}
	select {
	case <-a2.Lost():
		t.Fatal("Release reported as a loss")
	default:
	}

	if _, err := s.Claim(ctx, key, []byte("x"), time.Second, nil); err == nil {
		t.Fatal("claim with a 1 s lease accepted")
	}
}

// TestClaimRenewedAndLost: a claim outlives its TTL while its holder runs, and is reported lost
// when etcd stays out of reach longer than the TTL.
func TestClaimRenewedAndLost(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	ctx := context.Background()
	const key = "/terrace/status/v1/host-b/instance"
	c, err := s.Claim(ctx, key, []byte("b"), 2*time.Second, nil)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	defer func() {
		// etcd is stopped by then: do not wait the request timeout for a revoke that cannot happen.
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		c.Release(rctx)
	}()
	time.Sleep(3 * time.Second)
	if _, err := s.Get(ctx, key); err != nil {
		t.Fatalf("claim gone after its TTL although renewed: %v", err)
	}
	srv.Stop()
	select {
	case <-c.Lost():
	case <-time.After(20 * time.Second):
		t.Fatal("claim not reported lost 20 s after etcd stopped (TTL 2 s)")
	}
}

package ipam

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAllocationWhileEtcdIsDown: with etcd gone every call fails within its deadline with an
// error (not a hang, not a half result), and once etcd is back nothing is held under the failed
// handles and the same calls succeed.
func TestAllocationWhileEtcdIsDown(t *testing.T) {
	e := newTestEnv(t)
	e.real = true
	e.addPool("p4", "198.18.0.0/24", 28)
	e.addPool("p6", "2001:db8:1000::/48", 122)
	e.addNode("h1")
	a := e.allocator()
	// A block claimed and cached before the outage: the outage must not be hidden by the cache.
	if _, err := a.AutoAssign(ctxT(t), AutoAssignArgs{Node: "h1", Handle: "before", Num4: 1, Num6: 1}); err != nil {
		t.Fatal(err)
	}
	e.srv.Stop()
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"auto-assign", func(ctx context.Context) error {
			_, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "during", Num4: 1, Num6: 1})
			return err
		}},
		{"release by handle", func(ctx context.Context) error {
			_, err := a.ReleaseByHandle(ctx, "before")
			return err
		}},
		{"check", func(ctx context.Context) error {
			_, err := a.Check(ctx, CheckOptions{})
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			err := c.call(ctx)
			if err == nil {
				t.Fatal("succeeded with etcd down")
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s to fail", took)
			}
			if errors.Is(err, ErrPoolsExhausted) || errors.Is(err, ErrNoPools) || errors.Is(err, ErrHandleNotFound) {
				t.Errorf("outage reported as an IPAM answer: %v", err)
			}
			t.Logf("%s: %v", c.name, err)
		})
	}
	e.srv.RestartForTest(t)
	ctx := ctxT(t)
	held := snapshot(t, e.store())
	for ip, h := range held {
		if h != "before" {
			t.Errorf("%v held by %s after failed calls", ip, h)
		}
	}
	if len(held) != 2 {
		t.Errorf("%d addresses held, want the 2 from before the outage: %v", len(held), held)
	}
	if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "h1", Handle: "during", Num4: 1, Num6: 1}); err != nil {
		t.Fatalf("after etcd is back: %v", err)
	}
	if got, err := a.ReleaseByHandle(ctx, "before"); err != nil || len(got) != 2 {
		t.Fatalf("release after etcd is back: %v %v", got, err)
	}
	if r, err := a.Check(ctx, CheckOptions{}); err != nil || !r.Clean() {
		t.Errorf("check: %+v %v", r, err)
	}
}

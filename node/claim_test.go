package node

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func openTestStore(t *testing.T, srv *embedded.Server) *kv.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitUntil polls cond every 50 ms for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type runningNode struct {
	cfg    Config
	cancel context.CancelFunc
	done   chan error
}

func startNode(t *testing.T, srv *embedded.Server, dir, ip string) *runningNode {
	t.Helper()
	cfg := Config{
		NodeName: "host-a", IPv4: ip, Etcd: kv.Config{Endpoints: srv.Endpoints()},
		Socket: filepath.Join(dir, "node.sock"), StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"),
		Lister: fakeLister{ifs: hostIfs},
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &runningNode{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- Run(ctx, cfg, embedded.TestLogger()) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *runningNode) stop(t *testing.T) {
	t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("node with state %s stopped with %v", n.cfg.StateDir, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node with state %s did not stop", n.cfg.StateDir)
	}
}

func (n *runningNode) status(t *testing.T) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := QueryStatus(ctx, n.cfg.Socket)
	if err != nil {
		return Status{}
	}
	return st
}

func nodeIPv4(t *testing.T, c *datastore.Client) string {
	t.Helper()
	r, err := c.Get(context.Background(), api.KindNode, "", "host-a")
	if err != nil {
		return ""
	}
	return r.(*api.Node).Spec.BGP.IPv4Address
}

// TestSecondHostWaitsForNodeName: a daemon started under a name another host runs does not
// register (the Node keeps the first host's address), says why on its status, and takes over as
// soon as the first one stops.
func TestSecondHostWaitsForNodeName(t *testing.T) {
	srv := embedded.StartForTest(t)
	c := datastore.New(openTestStore(t, srv), embedded.TestLogger())
	first := startNode(t, srv, t.TempDir(), "192.0.2.10/24")
	waitUntil(t, 20*time.Second, "the first host's registration", func() bool { return nodeIPv4(t, c) == "192.0.2.10/24" })

	second := startNode(t, srv, t.TempDir(), "192.0.2.11/24")
	waitUntil(t, 20*time.Second, "the second host to say it waits", func() bool {
		st := second.status(t)
		return st.Datastore.State == "waiting" && strings.Contains(st.Datastore.Detail, "192.0.2.10") &&
			strings.Contains(st.Datastore.Detail, "node name held by another host")
	})
	time.Sleep(2 * claimPoll) // a few more looks: still nothing rewritten
	if got := nodeIPv4(t, c); got != "192.0.2.10/24" {
		t.Fatalf("Node rewritten to %s while the first host runs", got)
	}

	first.stop(t)
	// The first host released the name: the second needs no lease to run out (20 s).
	waitUntil(t, 3*claimPoll+2*time.Second, "the second host's registration", func() bool { return nodeIPv4(t, c) == "192.0.2.11/24" })
	waitUntil(t, 5*time.Second, "the second host's board", func() bool { return second.status(t).Datastore.State == "connected" })
	held, err := c.Store().Get(context.Background(), datastore.NodeInstanceKey("host-a"))
	if err != nil {
		t.Fatalf("instance key of the running host: %v", err)
	}
	in, err := datastore.ParseNodeInstance(held.Value)
	if err != nil || in.IPv4 != "192.0.2.11" || in.PID != os.Getpid() || in.ID == "" {
		t.Fatalf("instance record %+v %v", in, err)
	}
	second.stop(t)
	if _, err := c.Store().Get(context.Background(), datastore.NodeInstanceKey("host-a")); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("instance key after a clean stop: %v, want deleted", err)
	}
}

// TestRestartTakesNameBackAtOnce: a daemon that died without releasing its name (its lease still
// running) is recognised by the instance id in its state directory when it starts again.
func TestRestartTakesNameBackAtOnce(t *testing.T) {
	srv := embedded.StartForTest(t)
	store := openTestStore(t, srv)
	c := datastore.New(store, embedded.TestLogger())
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := instanceID(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := instanceID(filepath.Join(dir, "state")); err != nil || again != id {
		t.Fatalf("instance id not kept: %q then %q (%v)", id, again, err)
	}
	// The earlier life's claim, never released.
	old := newNameClaim(store, Registration{Name: "host-a", IPv4: Choice{Addr: netip.MustParsePrefix("192.0.2.10/24")}}, id, embedded.TestLogger())
	if _, err := old.try(context.Background()); err != nil {
		t.Fatalf("earlier claim: %v", err)
	}
	start := time.Now()
	startNode(t, srv, dir, "192.0.2.10/24")
	waitUntil(t, 10*time.Second, "the registration", func() bool { return nodeIPv4(t, c) == "192.0.2.10/24" })
	if d := time.Since(start); d > claimTTL/2 {
		t.Errorf("registration took %v: the restart waited for its own old lease", d)
	}
}

// TestClaimKeptWhenLapsed: when the lease ran out (etcd out of reach longer than its TTL: here
// the lease is revoked behind the holder's back) the daemon claims its name again; if another
// host took the name meanwhile, keep reports an error that ends the daemon.
func TestClaimKeptWhenLapsed(t *testing.T) {
	srv := embedded.StartForTest(t)
	store := openTestStore(t, srv)
	cli := store.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := Registration{Name: "host-a", IPv4: Choice{Addr: netip.MustParsePrefix("192.0.2.10/24")}}
	mine := newNameClaim(store, reg, "id-mine", embedded.TestLogger())
	cl, err := mine.try(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	kept := make(chan struct{})
	go func() { defer close(kept); mine.keep(ctx, cl, errc) }()
	key := datastore.NodeInstanceKey("host-a")
	leaseOf := func() clientv3.LeaseID {
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}

	first := leaseOf()
	if first == 0 {
		t.Fatal("claimed key has no lease")
	}
	if _, err := cli.Revoke(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the name claimed again", func() bool { l := leaseOf(); return l != 0 && l != first })
	if mine.held.Load() == cl {
		t.Fatal("the claim held is still the lapsed one")
	}

	// Another host writes the name while our lease is still there, then our lease runs out.
	g, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	second := leaseOf()
	otherRec := `{"id":"id-other","hostname":"elsewhere","pid":7,"ipv4":"192.0.2.11","since":"2026-12-05T00:00:00Z"}`
	if _, err := cli.Put(ctx, key, otherRec, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), "192.0.2.11") || !strings.Contains(err.Error(), "elsewhere") {
			t.Fatalf("keep ended with %v, want ErrNameTaken naming the other host", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("keep did not report the name taken")
	}
	<-kept
	if r, err := cli.Get(ctx, key); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != otherRec {
		t.Fatalf("the other host's record was touched: %v %v", r, err)
	}
}

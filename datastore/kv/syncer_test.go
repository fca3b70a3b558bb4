package kv

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/terracenet/terrace/datastore/embedded"
)

// recorder is a consumer that rebuilds the store's state from a syncer's output and checks the
// syncer's promises as it goes.
type recorder struct {
	mu       sync.Mutex
	state    map[string]string
	statuses []Status
	deletes  []string
	lastRev  int64 // highest revision seen from watch updates, to check ordering
	problems []string
	inflight atomic.Int32
	block    chan struct{} // when set, OnUpdates waits on it: a stalled consumer
}

func newRecorder() *recorder { return &recorder{state: map[string]string{}} }

func (r *recorder) enter() {
	if r.inflight.Add(1) != 1 {
		r.mu.Lock()
		r.problems = append(r.problems, "callbacks called concurrently")
		r.mu.Unlock()
	}
}

func (r *recorder) OnStatus(s Status) {
	r.enter()
	defer r.inflight.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.statuses); n > 0 && r.statuses[n-1] == s {
		r.problems = append(r.problems, "status repeated: "+s.String())
	}
	r.statuses = append(r.statuses, s)
}

func (r *recorder) OnUpdates(ups []Update) {
	r.enter()
	defer r.inflight.Add(-1)
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		<-block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	inSync := len(r.statuses) > 0 && r.statuses[len(r.statuses)-1] == StatusInSync
	for _, u := range ups {
		if inSync {
			// While in sync, updates come from the watch and must be in revision order.
			if u.KV.Revision < r.lastRev {
				r.problems = append(r.problems, fmt.Sprintf("update %s at %d after %d", u.KV.Key, u.KV.Revision, r.lastRev))
			}
			r.lastRev = u.KV.Revision
		}
		switch u.Type {
		case UpdatePut:
			r.state[u.KV.Key] = string(u.KV.Value)
		case UpdateDelete:
			if u.KV.Value != nil {
				r.problems = append(r.problems, "delete carries a value: "+u.KV.Key)
			}
			if _, ok := r.state[u.KV.Key]; !ok {
				r.problems = append(r.problems, "delete of a key never delivered: "+u.KV.Key)
			}
			delete(r.state, u.KV.Key)
			r.deletes = append(r.deletes, u.KV.Key)
		}
	}
}

func (r *recorder) snapshot() (map[string]string, []Status, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := make(map[string]string, len(r.state))
	for k, v := range r.state {
		st[k] = v
	}
	return st, append([]Status(nil), r.statuses...), append([]string(nil), r.problems...)
}

func (r *recorder) status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.statuses) == 0 {
		return -1
	}
	return r.statuses[len(r.statuses)-1]
}

func (r *recorder) deleted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.deletes...)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storeState is what the consumer must end with: every key under the prefixes.
func storeState(t *testing.T, s *Store, prefixes ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range prefixes {
		for k, v := range dump(t, s, p) {
			m[k] = v
		}
	}
	return m
}

// waitConverged waits until the consumer is in sync with exactly the store's state.
func waitConverged(t *testing.T, r *recorder, s *Store, timeout time.Duration, prefixes ...string) {
	t.Helper()
	var diff string
	deadline := time.Now().Add(timeout)
	for {
		want := storeState(t, s, prefixes...)
		got, _, problems := r.snapshot()
		if len(problems) > 0 {
			t.Fatalf("consumer saw problems: %v", problems)
		}
		diff = cmp.Diff(want, got)
		if diff == "" && r.status() == StatusInSync {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer did not converge within %s (status %v) (-store +consumer):\n%.3000s", timeout, r.status(), diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// quickLoss makes a syncer notice a silent or lost etcd within half a second.
func quickLoss(y *Syncer) { y.lostAfter = 500 * time.Millisecond }

func startSyncer(t *testing.T, s *Store, r *recorder, prefixes []string, tweak func(*Syncer)) {
	t.Helper()
	// lostAfter stays at its default (3 s): with a short one, a read stalled by a loaded machine
	// counts as a lost connection and adds statuses the tests compare exactly. Tests about loss
	// pass quickLoss.
	y := NewSyncer(s, prefixes, r, embedded.TestLogger())
	y.maxBackoff = 500 * time.Millisecond
	if tweak != nil {
		tweak(y)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- y.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func mustPut(t *testing.T, s *Store, k, v string) {
	t.Helper()
	if _, err := s.Put(context.Background(), k, []byte(v)); err != nil {
		t.Fatal(err)
	}
}

func mustDelete(t *testing.T, s *Store, k string) {
	t.Helper()
	if _, err := s.Delete(context.Background(), k, 0); err != nil {
		t.Fatal(err)
	}
}

func TestSyncerListThenWatch(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	mustPut(t, s, "/terrace/v1/ippools/a", "pool-a")
	mustPut(t, s, "/terrace/v1/nodes/n1", "node-1")
	mustPut(t, s, "/terrace/v1/other/x", "not watched")
	mustPut(t, s, "/terrace/v1/nodesX", "not under /terrace/v1/nodes/")

	r := newRecorder()
	prefixes := []string{"/terrace/v1/nodes/", "/terrace/v1/ippools/", "/terrace/v1/ippools/sub/"}
	startSyncer(t, s, r, prefixes, nil)
	waitConverged(t, r, s, 10*time.Second, prefixes...)

	mustPut(t, s, "/terrace/v1/nodes/n2", "node-2")
	mustPut(t, s, "/terrace/v1/ippools/a", "pool-a2")
	mustDelete(t, s, "/terrace/v1/nodes/n1")
	mustPut(t, s, "/terrace/v1/other/y", "not watched")
	mustPut(t, s, "/terrace/v1/ippools/sub/b", "nested")
	waitConverged(t, r, s, 10*time.Second, prefixes...)

	_, statuses, _ := r.snapshot()
	want := []Status{StatusWaitForDatastore, StatusResyncInProgress, StatusInSync}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("status sequence (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/terrace/v1/nodes/n1"}, r.deleted()); diff != "" {
		t.Errorf("deletes (-want +got):\n%s", diff)
	}
}

func TestSyncerRelistsAfterCompaction(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	const p = "/terrace/v1/c/"
	for i := range 20 {
		mustPut(t, s, fmt.Sprintf("%sk%02d", p, i), "v0")
	}
	r := newRecorder()
	var once sync.Once
	hookDone := make(chan struct{})
	// Between the list and the watch the syncer is behind: everything it would need to catch up
	// is compacted away, so only a relist can bring it back.
	behind := func(rev int64) {
		once.Do(func() {
			defer close(hookDone)
			for i := range 10 {
				mustDelete(t, s, fmt.Sprintf("%sk%02d", p, i))
			}
			for i := 10; i < 15; i++ {
				mustPut(t, s, fmt.Sprintf("%sk%02d", p, i), "v1")
			}
			mustPut(t, s, p+"new", "fresh")
			cur, err := s.Put(context.Background(), "/unrelated", nil)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Client().Compact(context.Background(), cur); err != nil {
				t.Errorf("compact: %v", err)
			}
		})
	}
	startSyncer(t, s, r, []string{p}, func(y *Syncer) { y.afterList = behind })
	// The consumer is briefly in sync with the pre-hook state; only after the hook is the
	// store's final state fixed.
	select {
	case <-hookDone:
	case <-time.After(15 * time.Second):
		t.Fatal("syncer never finished its first list")
	}
	waitConverged(t, r, s, 15*time.Second, p)

	_, statuses, _ := r.snapshot()
	want := []Status{StatusWaitForDatastore, StatusResyncInProgress, StatusInSync, StatusResyncInProgress, StatusInSync}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("status sequence (-want +got):\n%s", diff)
	}
	if n := len(r.deleted()); n != 10 {
		t.Errorf("relist delivered %d deletes, want 10", n)
	}
}

// TestSyncerStalledConsumer stalls the consumer inside OnUpdates while the store changes and is
// compacted; once it resumes it must still end with exactly the store's state, in order.
func TestSyncerStalledConsumer(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	const p = "/terrace/v1/st/"
	for i := range 50 {
		mustPut(t, s, fmt.Sprintf("%sk%02d", p, i), "v0")
	}
	r := newRecorder()
	startSyncer(t, s, r, []string{p}, nil)
	waitConverged(t, r, s, 10*time.Second, p)

	block := make(chan struct{})
	r.mu.Lock()
	r.block = block
	r.mu.Unlock()
	mustPut(t, s, p+"first", "stalls the consumer")
	for i := range 25 {
		mustDelete(t, s, fmt.Sprintf("%sk%02d", p, i))
		mustPut(t, s, fmt.Sprintf("%sk%02d", p, i+25), "v1")
	}
	rev, err := s.Put(context.Background(), "/unrelated", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.block = nil
	r.mu.Unlock()
	close(block)
	waitConverged(t, r, s, 15*time.Second, p)
}

func TestSyncerSurvivesEtcdRestart(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStoreCfg(t, Config{Endpoints: srv.Endpoints(), RequestTimeout: 2 * time.Second})
	const p = "/terrace/v1/r/"
	mustPut(t, s, p+"before", "1")
	mustPut(t, s, p+"doomed", "1")
	r := newRecorder()
	startSyncer(t, s, r, []string{p}, quickLoss)
	waitConverged(t, r, s, 10*time.Second, p)

	srv.Stop()
	waitFor(t, 15*time.Second, "WaitForDatastore after etcd stopped", func() bool { return r.status() == StatusWaitForDatastore })
	srv.RestartForTest(t)

	mustPut(t, s, p+"after", "2")
	mustPut(t, s, p+"before", "changed")
	mustDelete(t, s, p+"doomed")
	waitConverged(t, r, s, 20*time.Second, p)
	_, _, problems := r.snapshot()
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
}

// proxy forwards TCP to target until cut; restore listens on the same address again.
type proxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn // client side, server side, client side, ...
	frozen       bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target}
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() {
				io.Copy(c, up)
				p.mu.Lock()
				defer p.mu.Unlock()
				if !p.frozen {
					c.Close()
				}
			}()
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// freeze makes the server side vanish without a word: the client's connections stay open and
// are never answered, as when a host dies without closing its sockets.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for i, c := range p.conns {
		if i%2 == 1 {
			c.Close()
		}
	}
}

func (p *proxy) restore(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restore proxy on %s: %v", p.addr, err)
}

// TestSyncerSilentServer: when etcd stops answering over a connection that stays open, the
// syncer must say it is no longer in sync within about lostAfter, not after TCP keepalive.
func TestSyncerSilentServer(t *testing.T) {
	srv := embedded.StartForTest(t)
	px := newProxy(t, srv.Endpoints()[0][len("http://"):])
	s := openStoreCfg(t, Config{Endpoints: []string{"http://" + px.addr}, RequestTimeout: 2 * time.Second})
	const p = "/terrace/v1/silent/"
	mustPut(t, s, p+"k", "v")
	r := newRecorder()
	startSyncer(t, s, r, []string{p}, quickLoss)
	waitConverged(t, r, s, 10*time.Second, p)
	px.freeze()
	// lostAfter is 500ms here; keepalive would take 15s.
	waitFor(t, 5*time.Second, "WaitForDatastore after etcd went silent", func() bool { return r.status() == StatusWaitForDatastore })
}

// TestSyncerLostConnection cuts the syncer off while another client deletes, changes and
// compacts, then reconnects it: the consumer must end with exactly the store's state.
func TestSyncerLostConnection(t *testing.T) {
	srv := embedded.StartForTest(t)
	direct := openStore(t, srv)
	target := srv.Endpoints()[0][len("http://"):]
	px := newProxy(t, target)
	viaProxy := openStoreCfg(t, Config{Endpoints: []string{"http://" + px.addr}, RequestTimeout: 2 * time.Second})

	const p = "/terrace/v1/lc/"
	for i := range 10 {
		mustPut(t, direct, fmt.Sprintf("%sk%d", p, i), "v0")
	}
	r := newRecorder()
	startSyncer(t, viaProxy, r, []string{p}, quickLoss)
	waitConverged(t, r, direct, 10*time.Second, p)

	px.cut()
	waitFor(t, 15*time.Second, "WaitForDatastore after the connection was cut", func() bool { return r.status() == StatusWaitForDatastore })
	for i := range 5 {
		mustDelete(t, direct, fmt.Sprintf("%sk%d", p, i))
	}
	mustPut(t, direct, p+"k7", "v1")
	mustPut(t, direct, p+"during", "outage")
	rev, err := direct.Put(context.Background(), "/unrelated", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Client().Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	px.restore(t)
	waitConverged(t, r, direct, 20*time.Second, p)
	if n := len(r.deleted()); n != 5 {
		t.Errorf("delivered %d deletes, want 5", n)
	}
}

func TestSyncer10kKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("10k keys take a few seconds; skipped with -short")
	}
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	const p = "/terrace/v1/many/"
	putMany := func(from, to int, val string) {
		ops := make([]Op, 0, 100)
		flush := func() {
			if len(ops) == 0 {
				return
			}
			if _, err := s.Commit(context.Background(), ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
		for i := from; i < to; i++ {
			ops = append(ops, Op{Kind: OpCreate, Key: fmt.Sprintf("%sk%05d", p, i), Value: []byte(val)})
			if len(ops) >= 100 {
				flush()
			}
		}
		flush()
	}
	putMany(0, 10000, "listed")
	r := newRecorder()
	start := time.Now()
	startSyncer(t, s, r, []string{p}, nil)
	waitConverged(t, r, s, 60*time.Second, p)
	t.Logf("10k keys listed and delivered in %s", time.Since(start))

	start = time.Now()
	putMany(10000, 20000, "watched")
	waitConverged(t, r, s, 60*time.Second, p)
	t.Logf("10k more keys written and watched in %s", time.Since(start))
	got, _, _ := r.snapshot()
	if len(got) != 20000 {
		t.Fatalf("consumer holds %d keys, want 20000", len(got))
	}
}

package felix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/ipam"
)

const testNode = "node-a"

// noRefresh switches every periodic resync off, so a test sees only the applies it causes.
var noRefresh = RefreshIntervals{Iptables: -1, IPSets: -1, Routes: -1}

type harness struct {
	t     *testing.T
	dp    *fakeDP
	calc  *fakeCalc
	store *fakeStore
	a     *Agent
	rev   int64
	done  chan error
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessWith(t, newFakeDP(), mod)
}

func newHarnessWith(t *testing.T, dp *fakeDP, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, dp: dp, calc: &fakeCalc{node: testNode}, store: newFakeStore(), done: make(chan error, 1)}
	cfg := Config{NodeName: testNode, Status: h.store, ApplyInterval: 5 * time.Millisecond, Refresh: noRefresh,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	h.a = New(cfg, h.dp.dataplane(), h.calc)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.done <- h.a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

func (h *harness) status(s kv.Status) { h.a.ResourceCallbacks().OnStatus(s) }

func (h *harness) put(r api.Resource, kind, ns, name string) int64 {
	h.rev++
	h.a.ResourceCallbacks().OnUpdates([]datastore.ResourceUpdate{{Type: kv.UpdatePut, Kind: kind, Namespace: ns, Name: name, Resource: r, Revision: h.rev}})
	return h.rev
}

func (h *harness) del(kind, ns, name string) {
	h.rev++
	h.a.ResourceCallbacks().OnUpdates([]datastore.ResourceUpdate{{Type: kv.UpdateDelete, Kind: kind, Namespace: ns, Name: name, Revision: h.rev}})
}

func gnp(name string) (api.Resource, string, string, string) {
	return &api.GlobalNetworkPolicy{Metadata: api.ObjectMeta{Name: name}}, api.KindGlobalNetworkPolicy, "", name
}

func gns(name string, nets ...string) (api.Resource, string, string, string) {
	return &api.GlobalNetworkSet{Metadata: api.ObjectMeta{Name: name}, Spec: api.GlobalNetworkSetSpec{Nets: nets}}, api.KindGlobalNetworkSet, "", name
}

func wep(node, ns, name, iface string, nets ...string) (api.Resource, string, string, string) {
	return &api.WorkloadEndpoint{Metadata: api.ObjectMeta{Name: name, Namespace: ns},
		Spec: api.WorkloadEndpointSpec{Node: node, InterfaceName: iface, IPNetworks: nets}}, api.KindWorkloadEndpoint, ns, name
}

func (h *harness) putR(r api.Resource, kind, ns, name string) int64 { return h.put(r, kind, ns, name) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func index(calls []string, call string) int { return slices.Index(calls, call) }

// TestNothingBeforeInSync: updates before the datastore is in sync are computed but not
// programmed; stale objects of a previous run survive the first apply and go only after each
// writer was told it is in sync.
func TestNothingBeforeInSync(t *testing.T) {
	h := newHarness(t, nil)
	h.dp.filter4.kernel["trc-pi-stale"] = nil
	h.dp.ipsets.kernel["trcstale"] = nil
	h.dp.routes.kernel["198.18.9.0/32"] = routesTarget("trcdead0000000")

	h.status(kv.StatusResyncInProgress)
	h.putR(gnp("allow"))
	h.putR(gns("set1", "198.18.0.0/24"))
	time.Sleep(50 * time.Millisecond)
	if calls := h.dp.r.calls(); len(calls) != 0 {
		t.Fatalf("writers called before in sync: %v", calls)
	}

	h.status(kv.StatusInSync)
	waitFor(t, "stale chain removed", func() bool {
		_, ok := h.dp.filter4.inKernel("trc-pi-stale")
		return !ok
	})
	waitFor(t, "stale set and route removed", func() bool {
		_, s := h.dp.ipsets.inKernel("trcstale")
		_, r := h.dp.routes.inKernel("198.18.9.0/32")
		return !s && !r
	})
	calls := h.dp.r.calls()
	for _, w := range []struct{ apply, inSync string }{
		{"ipsets.ApplyUpdates", "ipsets.SetInSync"},
		{"iptables-filter-v4.Apply", "iptables-filter-v4.SetInSync"},
		{"iptables-nat-v4.Apply", "iptables-nat-v4.SetInSync"},
		{"routes.Apply", "routes.SetInSync"},
	} {
		ia, is := index(calls, w.apply), index(calls, w.inSync)
		if ia < 0 || is < 0 || is < ia {
			t.Errorf("%s at %d, %s at %d; want apply first:\n%v", w.apply, ia, w.inSync, is, calls)
		}
	}
	if _, ok := h.dp.filter4.inKernel("trc-pi-allow"); !ok {
		t.Errorf("policy chain not programmed: %v", h.dp.filter4.kernelKeys())
	}
	if got, _ := h.dp.ipsets.inKernel("trcset1"); !slices.Equal(got, []string{"198.18.0.0/24"}) {
		t.Errorf("set members %v", got)
	}
	if ok, why := h.a.Ready(); !ok {
		t.Errorf("not ready after programming: %s", why)
	}
}

func routesTarget(dev string) routesTargetT { return routesTargetT{Dev: dev} }

// TestApplyOrder: per cycle, set updates come before every table and set deletions after them;
// the tables, routes and interface settings are independent of each other, so their order is free.
func TestApplyOrder(t *testing.T) {
	h := newHarness(t, nil)
	h.status(kv.StatusInSync)
	h.putR(gns("a", "198.18.0.0/24"))
	waitFor(t, "set programmed", func() bool { _, ok := h.dp.ipsets.inKernel("trca"); return ok })
	h.del(api.KindGlobalNetworkSet, "", "a")
	waitFor(t, "set deleted", func() bool { _, ok := h.dp.ipsets.inKernel("trca"); return !ok })
	calls := h.dp.r.calls()
	var cycle []string
	checked := 0
	for _, c := range calls {
		if !strings.HasPrefix(c, "ipsets.Apply") && !strings.HasPrefix(c, "iptables-") {
			continue
		}
		if c == "ipsets.ApplyUpdates" {
			cycle = nil
		}
		cycle = append(cycle, c)
		if c != "ipsets.ApplyDeletions" {
			continue
		}
		if len(cycle) == 4 {
			// The two tables run at the same time: either order is right.
			slices.Sort(cycle[1:3])
		}
		want := []string{"ipsets.ApplyUpdates", "iptables-filter-v4.Apply", "iptables-nat-v4.Apply", "ipsets.ApplyDeletions"}
		if d := cmp.Diff(want, cycle); d != "" {
			t.Errorf("cycle order (-want +got):\n%s", d)
		}
		checked++
	}
	if checked < 2 {
		t.Errorf("only %d complete cycles seen: %v", checked, calls)
	}
}

// TestWritersOverlap: independent writers run at the same time. The filter table's apply is held
// until the nat table's and the routes' applies have started; run one after the other, it would
// wait in vain.
func TestWritersOverlap(t *testing.T) {
	h := newHarness(t, nil)
	natStarted, routesStarted := make(chan struct{}), make(chan struct{})
	var natOnce, routesOnce sync.Once
	h.dp.r.hooks.Store("iptables-nat-v4.Apply", func() { natOnce.Do(func() { close(natStarted) }) })
	h.dp.r.hooks.Store("routes.Apply", func() { routesOnce.Do(func() { close(routesStarted) }) })
	var waited atomic.Bool
	h.dp.r.hooks.Store("iptables-filter-v4.Apply", func() {
		if waited.Swap(true) {
			return
		}
		for _, c := range []chan struct{}{natStarted, routesStarted} {
			select {
			case <-c:
			case <-time.After(2 * time.Second):
				h.dp.r.setFail("iptables-filter-v4", errors.New("applied alone: nat or routes did not start beside it"))
				return
			}
		}
	})
	h.status(kv.StatusInSync)
	h.putR(gnp("allow"))
	waitFor(t, "first cycle", func() bool { return waited.Load() && h.dp.r.count("iptables-filter-v4.Apply") > 0 })
	waitFor(t, "policy programmed", func() bool { _, ok := h.dp.filter4.inKernel("trc-pi-allow"); return ok })
	h.dp.r.mu.Lock()
	failed := h.dp.r.fail["iptables-filter-v4"]
	h.dp.r.mu.Unlock()
	if failed != nil {
		t.Fatal(failed)
	}
}

// TestCoalescing: a burst of single updates costs a handful of applies, not one per update.
func TestCoalescing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ApplyInterval = 150 * time.Millisecond })
	h.status(kv.StatusInSync)
	waitFor(t, "first applies", func() bool { return h.dp.r.count("routes.SetInSync") == 1 })
	time.Sleep(200 * time.Millisecond)
	before := h.calc.flushCount()
	const n = 60
	start := time.Now()
	for i := range n {
		h.putR(gnp(fmt.Sprintf("p%d", i)))
		time.Sleep(2 * time.Millisecond)
	}
	// At most one apply per interval the burst lasted, plus the one in flight and the last: a
	// loaded machine stretches the burst (nominally 120 ms), which must not fail the test.
	most := int(time.Since(start)/(150*time.Millisecond)) + 2
	waitFor(t, "every chain", func() bool { return len(h.dp.filter4.kernelKeys()) == n })
	if got := h.calc.flushCount() - before; got > most || got < 1 {
		t.Errorf("%d updates took %d applies, want 1..%d", n, got, most)
	}
}

// TestFailingWriterDoesNotStopOthers: a failing table is retried with backoff and reported in
// readiness; the sets and routes are programmed meanwhile; recovery clears readiness.
func TestFailingWriterDoesNotStopOthers(t *testing.T) {
	h := newHarness(t, nil)
	h.dp.r.setFail("iptables-filter-v4", errors.New("iptables-restore: line 3 failed"))
	h.status(kv.StatusInSync)
	h.putR(gnp("p"))
	h.putR(gns("s", "198.18.1.0/24"))
	h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32"))
	waitFor(t, "route and set", func() bool {
		_, r := h.dp.routes.inKernel("198.18.2.1/32")
		_, s := h.dp.ipsets.inKernel("trcs")
		return r && s
	})
	waitFor(t, "retries", func() bool { return h.dp.r.count("iptables-filter-v4.Apply") >= 3 })
	ok, why := h.a.Ready()
	if ok || !strings.Contains(why, "iptables-filter-v4") || !strings.Contains(why, "line 3 failed") {
		t.Errorf("readiness = %v %q, want the failing table named", ok, why)
	}
	rec := httptest.NewRecorder()
	h.a.healthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readiness", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "line 3 failed") {
		t.Errorf("/readiness = %d %q", rec.Code, rec.Body)
	}
	if _, ok := h.store.get(datastore.EndpointStatusKey(testNode, "ns1", "w1")); ok {
		t.Error("endpoint status written while its policy failed to program")
	}
	if n := h.dp.r.count("ipsets.ApplyDeletions"); n != 0 {
		t.Errorf("set deletions ran %d times while a table failed", n)
	}
	if n := h.dp.r.count("dataplane.AfterProgrammed"); n != 0 {
		t.Errorf("the after-programmed clean-up ran %d times before policy was programmed", n)
	}
	h.dp.r.setFail("iptables-filter-v4", nil)
	waitFor(t, "ready", func() bool { ok, _ := h.a.Ready(); return ok })
	if _, ok := h.dp.filter4.inKernel("trc-pi-p"); !ok {
		t.Error("chain not programmed after recovery")
	}
	waitFor(t, "endpoint status", func() bool {
		_, ok := h.store.get(datastore.EndpointStatusKey(testNode, "ns1", "w1"))
		return ok
	})
	h.putR(gnp("q"))
	waitFor(t, "a later apply", func() bool { _, ok := h.dp.filter4.inKernel("trc-pi-q"); return ok })
	if n := h.dp.r.count("dataplane.AfterProgrammed"); n != 1 {
		t.Errorf("the after-programmed clean-up ran %d times, want once", n)
	}
}

// TestRouteConflictRetried: while another protocol's route holds one of felix's keys, the routes
// writer is applied again at the pending poll, without any other event; once the conflict is
// gone the polling stops.
func TestRouteConflictRetried(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PendingPoll = 100 * time.Millisecond })
	h.dp.r.mu.Lock()
	h.dp.routes.conflicts = []netip.Prefix{netip.MustParsePrefix("198.18.2.1/32")}
	h.dp.r.mu.Unlock()
	h.status(kv.StatusInSync)
	h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32"))
	waitFor(t, "routes applied again at the poll", func() bool { return h.dp.r.count("routes.Apply") >= 6 })
	h.dp.r.mu.Lock()
	h.dp.routes.conflicts = nil
	h.dp.r.mu.Unlock()
	time.Sleep(300 * time.Millisecond) // let a poll already due run
	n := h.dp.r.count("routes.Apply")
	time.Sleep(500 * time.Millisecond)
	if m := h.dp.r.count("routes.Apply"); m != n {
		t.Errorf("routes applied %d more times after the conflict went", m-n)
	}
}

// TestFastPathFollowsRoutes: the fast path learns a local workload's IPv4 addresses from the
// routes felix programs, nothing routed elsewhere (another interface, a blackhole), and forgets
// them with the endpoint; it is applied off the loop, and its failure is counted and retried.
func TestFastPathFollowsRoutes(t *testing.T) {
	dp := newFakeDP()
	dp.fastPath = &fakeFastPath{r: dp.r, workloads: map[netip.Addr]string{}}
	h := newHarnessWith(t, dp, nil)
	h.status(kv.StatusInSync)
	h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32", "2001:db8:1000::1/128", "198.18.3.0/24"))
	h.putR(wep(testNode, "ns1", "w2", "eth0", "198.18.2.2/32"))
	want := map[netip.Addr]string{
		netip.MustParseAddr("198.18.2.1"):       "trc0123456789a",
		netip.MustParseAddr("2001:db8:1000::1"): "trc0123456789a", // the writer itself keeps IPv4 only
	}
	waitFor(t, "the fast path given the workload's addresses", func() bool { return cmp.Equal(want, dp.fastPath.snapshot()) })
	if dp.r.count("fastpath.Apply") == 0 {
		t.Error("the fast path was never applied")
	}
	var buf strings.Builder
	h.a.metrics.write(&buf)
	if !strings.Contains(buf.String(), `terrace_felix_fastpath_packets_total{result="forwarded"} 7`) {
		t.Errorf("metrics lack the fast path's counters:\n%s", buf.String())
	}
	h.del(api.KindWorkloadEndpoint, "ns1", "w1")
	waitFor(t, "the workload's addresses gone from the fast path", func() bool { return len(dp.fastPath.snapshot()) == 0 })

	// A failing fast path is retried and counted, but felix stays ready: the kernel forwards.
	h.dp.r.setFail("fastpath", errors.New("attach: device busy"))
	h.putR(wep(testNode, "ns1", "w3", "trc0123456789b", "198.18.2.3/32"))
	waitFor(t, "the fast path's failure counted and retried", func() bool {
		var buf strings.Builder
		h.a.metrics.write(&buf)
		return strings.Contains(buf.String(), `terrace_felix_errors_total{writer="fastpath"} 2`)
	})
	if ok, why := h.a.Ready(); !ok {
		t.Errorf("a failing fast path made felix unready: %s", why)
	}
}

// TestFailingNATDoesNotHoldStatus: a failing nat table is reported, but an endpoint's policy
// (filter) is in the kernel, so its status is written: a CNI ADD waiting for it must not fail for
// natOutgoing's sake.
func TestFailingNATDoesNotHoldStatus(t *testing.T) {
	h := newHarness(t, nil)
	h.dp.r.setFail("iptables-nat-v4", errors.New("iptables-restore: nat broken"))
	h.status(kv.StatusInSync)
	h.putR(gnp("p"))
	h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32"))
	waitFor(t, "endpoint status", func() bool {
		_, ok := h.store.get(datastore.EndpointStatusKey(testNode, "ns1", "w1"))
		return ok
	})
	if ok, why := h.a.Ready(); ok || !strings.Contains(why, "iptables-nat-v4") {
		t.Errorf("readiness = %v %q, want the failing nat table named", ok, why)
	}
}

// TestStatusPerFamily: a failing ip6tables filter table holds back the status of endpoints with
// an IPv6 address only: an IPv4-only pod is reported programmed, a dual-stack one keeps the
// revision it was reported at (none, or an older one) until ip6tables works again.
func TestStatusPerFamily(t *testing.T) {
	dp := newFakeDP()
	dp.filter6 = &fakeTable{newFakeObjects[[]iptables.Rule]("iptables-filter-v6", dp.r), map[string][]iptables.Rule{}, new(bool)}
	h := newHarnessWith(t, dp, nil)
	h.status(kv.StatusInSync)
	rDual := h.putR(wep(testNode, "ns1", "dual", "trc0123456789a", "198.18.2.1/32", "2001:db8:1000::1/128"))
	kDual := datastore.EndpointStatusKey(testNode, "ns1", "dual")
	statusIs := func(k string, rev int64) func() bool {
		return func() bool { v, _ := h.store.get(k); return v == fmt.Sprintf(`{"programmed":true,"revision":%d}`, rev) }
	}
	waitFor(t, "status of the dual-stack endpoint", statusIs(kDual, rDual))

	h.dp.r.setFail("iptables-filter-v6", errors.New("ip6tables-restore: broken"))
	rDual2 := h.putR(wep(testNode, "ns1", "dual", "trc0123456789a", "198.18.2.1/32", "2001:db8:1000::2/128"))
	r4 := h.putR(wep(testNode, "ns1", "v4only", "trc0123456789b", "198.18.2.2/32"))
	rV6 := h.putR(wep(testNode, "ns1", "v6only", "trc0123456789c", "2001:db8:1000::3/128"))
	k4, kV6 := datastore.EndpointStatusKey(testNode, "ns1", "v4only"), datastore.EndpointStatusKey(testNode, "ns1", "v6only")
	waitFor(t, "status of the IPv4-only endpoint despite ip6tables failing", statusIs(k4, r4))
	waitFor(t, "ip6tables failure seen", func() bool { _, why := h.a.Ready(); return strings.Contains(why, "iptables-filter-v6") })
	if !statusIs(kDual, rDual)() {
		v, _ := h.store.get(kDual)
		t.Errorf("dual-stack endpoint status %s while ip6tables fails; want its old revision %d kept", v, rDual)
	}
	if v, ok := h.store.get(kV6); ok {
		t.Errorf("IPv6-only endpoint reported %s while ip6tables fails", v)
	}

	h.dp.r.setFail("iptables-filter-v6", nil)
	waitFor(t, "dual-stack endpoint's new revision once ip6tables works", statusIs(kDual, rDual2))
	waitFor(t, "IPv6-only endpoint's status once ip6tables works", statusIs(kV6, rV6))
}

// TestEndpointStatus: local endpoints get a status with their revision once programmed, others
// none; a status of a previous run that no endpoint backs is removed, and so is a deleted one's.
func TestEndpointStatus(t *testing.T) {
	h := newHarness(t, nil)
	staleKey := datastore.EndpointStatusKey(testNode, "old", "gone")
	h.store.data[staleKey] = []byte(`{"programmed":true,"revision":1}`)
	otherKey := datastore.EndpointStatusKey("node-b", "old", "kept")
	h.store.data[otherKey] = []byte(`{"programmed":true,"revision":1}`)

	h.status(kv.StatusInSync)
	r1 := h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32", "2001:db8:1000::1/128"))
	h.putR(wep("node-b", "ns1", "remote", "trc00000000000", "198.18.3.1/32"))
	k1 := datastore.EndpointStatusKey(testNode, "ns1", "w1")
	waitFor(t, "status of w1", func() bool { v, _ := h.store.get(k1); return v == fmt.Sprintf(`{"programmed":true,"revision":%d}`, r1) })
	waitFor(t, "stale status removed", func() bool { _, ok := h.store.get(staleKey); return !ok })
	if _, ok := h.store.get(datastore.EndpointStatusKey(testNode, "ns1", "remote")); ok {
		t.Error("status written for another node's endpoint")
	}
	if _, ok := h.store.get(otherKey); !ok {
		t.Error("another node's status was deleted")
	}
	if got, ok := h.dp.sysctls.get("trc0123456789a"); !ok || got != [2]bool{true, true} {
		t.Errorf("sysctl interface = %v %v, want v4+v6", got, ok)
	}
	if _, ok := h.dp.sysctls.get("trc00000000000"); ok {
		t.Error("sysctls asked for a remote endpoint's interface")
	}
	// An endpoint naming a host interface gets its status (its policy is programmed) but no
	// interface settings: proxy_arp or strict rp_filter on eth0 would disturb the host.
	rEth := h.putR(wep(testNode, "ns1", "odd", "eth0", "198.18.2.9/32"))
	kEth := datastore.EndpointStatusKey(testNode, "ns1", "odd")
	waitFor(t, "status of the eth0 endpoint", func() bool {
		v, _ := h.store.get(kEth)
		return v == fmt.Sprintf(`{"programmed":true,"revision":%d}`, rEth)
	})
	if _, ok := h.dp.sysctls.get("eth0"); ok {
		t.Error("sysctls set on eth0 for a workload endpoint naming it")
	}

	r2 := h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32"))
	waitFor(t, "new revision", func() bool { v, _ := h.store.get(k1); return strings.Contains(v, fmt.Sprintf(`"revision":%d`, r2)) })
	h.del(api.KindWorkloadEndpoint, "ns1", "w1")
	waitFor(t, "status removed", func() bool { _, ok := h.store.get(k1); return !ok })
	if _, ok := h.dp.sysctls.get("trc0123456789a"); ok {
		t.Error("sysctls still configured for a deleted endpoint")
	}
}

// TestStatusStoreFailure: etcd failing makes readiness say so and is retried.
func TestStatusStoreFailure(t *testing.T) {
	h := newHarness(t, nil)
	h.store.setFail(errors.New("etcdserver: request timed out"))
	h.status(kv.StatusInSync)
	h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32"))
	waitFor(t, "status failure reported", func() bool {
		_, why := h.a.Ready()
		return strings.Contains(why, "status failing") && strings.Contains(why, "request timed out")
	})
	h.store.setFail(nil)
	waitFor(t, "status written after recovery", func() bool {
		_, ok := h.store.get(datastore.EndpointStatusKey(testNode, "ns1", "w1"))
		return ok
	})
	waitFor(t, "ready", func() bool { ok, _ := h.a.Ready(); return ok })
}

// TestBlocks: confirmed affinities of this node reach the calculator; pending ones and deleted
// ones do not; the first apply waits for the affinity syncer.
func TestBlocks(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.WaitForBlocks = true })
	aff := func(cidr, state string) kv.Update {
		p := netip.MustParsePrefix(cidr)
		return kv.Update{Type: kv.UpdatePut, KV: kv.KV{Key: ipam.AffinityKey(testNode, p),
			Value: fmt.Appendf(nil, `{"state":%q,"node":%q,"cidr":%q}`, state, testNode, cidr)}}
	}
	h.status(kv.StatusInSync)
	h.a.BlockCallbacks().OnUpdates([]kv.Update{aff("198.18.0.0/26", "confirmed"), aff("198.18.0.64/26", "pending")})
	time.Sleep(30 * time.Millisecond)
	if n := h.calc.flushCount(); n != 0 {
		t.Fatalf("%d applies before the affinities were in sync", n)
	}
	h.a.BlockCallbacks().OnStatus(kv.StatusInSync)
	waitFor(t, "first apply", func() bool { return h.calc.flushCount() > 0 })
	h.calc.mu.Lock()
	got := slices.Clone(h.calc.blocks)
	h.calc.mu.Unlock()
	if d := cmp.Diff([]netip.Prefix{netip.MustParsePrefix("198.18.0.0/26")}, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("blocks (-want +got):\n%s", d)
	}
	del := kv.Update{Type: kv.UpdateDelete, KV: kv.KV{Key: ipam.AffinityKey(testNode, netip.MustParsePrefix("198.18.0.0/26"))}}
	h.a.BlockCallbacks().OnUpdates([]kv.Update{del})
	waitFor(t, "block removed", func() bool {
		h.calc.mu.Lock()
		defer h.calc.mu.Unlock()
		return len(h.calc.blocks) == 0
	})
}

// TestForceResyncAndMetrics: a forced resync calls Resync on every writer and shows in the
// metrics, together with the rule, set and endpoint counts.
func TestForceResyncAndMetrics(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	if err := h.a.ForceResync(ctx); err == nil {
		t.Error("resync accepted before in sync")
	}
	h.status(kv.StatusInSync)
	h.putR(gnp("p1"))
	h.putR(gnp("p2"))
	h.putR(gns("s", "198.18.1.0/24", "198.18.2.0/24"))
	h.putR(wep(testNode, "ns1", "w1", "trc0123456789a", "198.18.2.1/32"))
	waitFor(t, "programmed", func() bool { return len(h.dp.filter4.kernelKeys()) == 2 })
	if err := h.a.ForceResync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"ipsets.Resync", "iptables-filter-v4.Resync", "iptables-nat-v4.Resync", "routes.Resync", "sysctl.Resync"} {
		if h.dp.r.count(c) != 1 {
			t.Errorf("%s called %d times, want 1", c, h.dp.r.count(c))
		}
	}
	// A resync destroys unwanted sets only after the tables have let go of them.
	calls := h.dp.r.calls()
	resyncAt := slices.Index(calls, "iptables-filter-v4.Resync")
	if i := slices.Index(calls[resyncAt:], "ipsets.ApplyDeletions"); i < 0 {
		t.Errorf("no set deletions after the tables' resync: %v", calls[resyncAt:])
	}
	h.dp.r.setFail("routes", errors.New("netlink: no such device"))
	if err := h.a.ForceResync(ctx); err == nil || !strings.Contains(err.Error(), "no such device") {
		t.Errorf("ForceResync with a failing writer: %v", err)
	}
	rec := httptest.NewRecorder()
	h.a.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"terrace_felix_resyncs_total 2\n",
		`terrace_felix_iptables_rules{table="filter",ip_version="4"} 4` + "\n",
		`terrace_felix_iptables_chains{table="filter",ip_version="4"} 2` + "\n",
		"terrace_felix_ipsets 1\n",
		"terrace_felix_ipset_members 2\n",
		"terrace_felix_local_endpoints 1\n",
		"terrace_felix_datastore_in_sync 1\n",
		`terrace_felix_errors_total{writer="routes"} 1` + "\n",
		`terrace_felix_apply_duration_seconds_count{resync="true"} 2` + "\n",
		`terrace_felix_writer_resyncs_total{writer="ipsets"} 2` + "\n",
		`terrace_felix_writer_resyncs_total{writer="iptables-nat-v4"} 2` + "\n",
		`terrace_felix_writer_resyncs_total{writer="sysctl"} 2` + "\n",
		"terrace_felix_updates_total 4\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	checkPromFormat(t, string(body))
}

// checkPromFormat checks every sample line is "name{labels} value" with a declared TYPE.
func checkPromFormat(t *testing.T, body string) {
	t.Helper()
	typed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if rest, ok := strings.CutPrefix(l, "# TYPE "); ok {
			typed[strings.Fields(rest)[0]] = true
			continue
		}
		if strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Errorf("bad sample line %q", l)
			continue
		}
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !typed[name] && !typed[base] {
			t.Errorf("sample %q has no TYPE", l)
		}
	}
}

// TestHealthEndpoints: liveness answers at once; readiness is 503 until programmed.
func TestHealthEndpoints(t *testing.T) {
	h := newHarness(t, nil)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.a.healthHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/liveness"); code != http.StatusOK {
		t.Errorf("/liveness = %d", code)
	}
	if code, body := get("/readiness"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not in sync") {
		t.Errorf("/readiness before sync = %d %q", code, body)
	}
	h.status(kv.StatusInSync)
	waitFor(t, "ready", func() bool { code, _ := get("/readiness"); return code == http.StatusOK })
	h.status(kv.StatusResyncInProgress)
	waitFor(t, "not ready while resyncing", func() bool { code, _ := get("/readiness"); return code == http.StatusServiceUnavailable })
}

// TestStatusBatched: the status keys of a start with many endpoints go to etcd in transactions of
// statusBatch keys, not one request per key.
func TestStatusBatched(t *testing.T) {
	h := newHarness(t, nil)
	const n = 250
	var ups []datastore.ResourceUpdate
	for i := range n {
		r, kind, ns, name := wep(testNode, "ns1", fmt.Sprintf("w%d", i), fmt.Sprintf("trc%011x", i), fmt.Sprintf("198.18.%d.%d/32", i/200, i%200))
		h.rev++
		ups = append(ups, datastore.ResourceUpdate{Type: kv.UpdatePut, Kind: kind, Namespace: ns, Name: name, Resource: r, Revision: h.rev})
	}
	h.a.ResourceCallbacks().OnUpdates(ups)
	h.status(kv.StatusInSync)
	waitFor(t, "every status written", func() bool {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		return h.store.puts >= n
	})
	time.Sleep(50 * time.Millisecond) // a follow-up cycle must not write them again
	h.store.mu.Lock()
	puts, commits := h.store.puts, h.store.commits
	h.store.mu.Unlock()
	if want := (n + statusBatch - 1) / statusBatch; puts != n || commits != want {
		t.Errorf("%d keys in %d transactions, want %d in %d", puts, commits, n, want)
	}
	for _, i := range []int{0, n - 1} {
		if v, ok := h.store.get(datastore.EndpointStatusKey(testNode, "ns1", fmt.Sprintf("w%d", i))); !ok || !strings.Contains(v, `"programmed":true`) {
			t.Errorf("status of w%d = %q %v", i, v, ok)
		}
	}
}

// TestPolicyPushOKByObject: a refused object holds back the "policy programmed" status of the
// families it serves, and only those.
func TestPolicyPushOKByObject(t *testing.T) {
	v4f := calc.TableID{Table: "filter", IPVersion: 4}
	v6f := calc.TableID{Table: "filter", IPVersion: 6}
	v4n := calc.TableID{Table: "nat", IPVersion: 4}
	tests := []struct {
		name    string
		refused []modelObj
		want    familiesOK
	}{
		{name: "nothing refused", want: familiesOK{v4: true, v6: true}},
		{name: "IPv6 filter chain", refused: []modelObj{{kind: objChain, table: v6f, name: "trc-pi-x"}}, want: familiesOK{v4: true}},
		{name: "IPv4 insertions", refused: []modelObj{{kind: objInsertions, table: v4f, name: "FORWARD"}}, want: familiesOK{v6: true}},
		{name: "nat chain holds no policy", refused: []modelObj{{kind: objChain, table: v4n, name: "trc-nat-outgoing"}}, want: familiesOK{v4: true, v6: true}},
		{name: "routes and sysctls hold no policy", refused: []modelObj{{kind: objRoute, name: "198.18.0.1/32"}, {kind: objSysctl, name: "trc0"}}, want: familiesOK{v4: true, v6: true}},
		{name: "a set serves both", refused: []modelObj{{kind: objIPSet, name: "trc-v4-x"}}, want: familiesOK{}},
		{name: "both families' chains", refused: []modelObj{{kind: objChain, table: v4f, name: "a"}, {kind: objChain, table: v6f, name: "b"}}, want: familiesOK{}},
	}
	for _, tt := range tests {
		a := &Agent{pushErrs: map[modelObj]error{}}
		for _, o := range tt.refused {
			a.pushErrs[o] = errors.New("refused")
		}
		if got := a.policyPushOK(); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if got := (modelObj{kind: objChain, table: v6f, name: "trc-pi-x"}).String(); got != "chain iptables-filter-v6 trc-pi-x" {
		t.Errorf("chain object reads %q in health", got)
	}
}

package felix

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/internal/syncbuf"
)

// fakeWriters are the writers of newFakeDP, as writerNames names them.
var fakeWriters = []string{"ipsets", "iptables-filter-v4", "iptables-nat-v4", "routes", "sysctl"}

// resyncCounts is how often each fake writer was resynced.
func (h *harness) resyncCounts() map[string]int {
	out := map[string]int{}
	for _, w := range fakeWriters {
		out[w] = h.dp.r.count(w + ".Resync")
	}
	return out
}

// inSyncAndProgrammed brings the agent to its first complete apply.
func (h *harness) inSyncAndProgrammed() {
	h.t.Helper()
	h.status(kv.StatusInSync)
	waitFor(h.t, "first apply", func() bool { return h.dp.r.count("routes.SetInSync") == 1 })
}

// TestRefreshPacesItsClass: each refresh interval resyncs only its own writers: iptables the
// tables, ipsets the set writer, routes the routes and interface settings. The others, whose
// timers have not fired (1 h), are applied but never re-read.
func TestRefreshPacesItsClass(t *testing.T) {
	const fast, slow = 60 * time.Millisecond, time.Hour
	tests := []struct {
		name    string
		refresh RefreshIntervals
		fired   []string
		read    []string // writers that read ahead, off the loop
	}{
		{"iptables", RefreshIntervals{Iptables: fast, IPSets: slow, Routes: slow},
			[]string{"iptables-filter-v4", "iptables-nat-v4"}, []string{"iptables-filter-v4", "iptables-nat-v4"}},
		{"ipsets", RefreshIntervals{Iptables: slow, IPSets: fast, Routes: slow}, []string{"ipsets"}, []string{"ipsets"}},
		{"routes and interface settings", RefreshIntervals{Iptables: slow, IPSets: slow, Routes: fast}, []string{"routes", "sysctl"}, nil},
		{"ipsets and routes, iptables off", RefreshIntervals{Iptables: -1, IPSets: fast, Routes: fast},
			[]string{"ipsets", "routes", "sysctl"}, []string{"ipsets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.Refresh = tt.refresh })
			h.inSyncAndProgrammed()
			waitFor(t, "three refreshes of "+strings.Join(tt.fired, ", "), func() bool {
				n := h.resyncCounts()
				return !slices.ContainsFunc(tt.fired, func(w string) bool { return n[w] < 3 })
			})
			n := h.resyncCounts()
			for _, w := range fakeWriters {
				if !slices.Contains(tt.fired, w) && n[w] != 0 {
					t.Errorf("%s resynced %d times; its timer never fired", w, n[w])
				}
				if reads := h.dp.r.count(w + ".Read"); slices.Contains(tt.read, w) != (reads > 0) {
					t.Errorf("%s read ahead %d times", w, reads)
				}
			}
		})
	}
}

// TestRefreshDifferentPaces: with every class on at its own pace, each is resynced at its own:
// the tables (fast) far more often than the routes (slow), the ipsets (1 h) not at all.
func TestRefreshDifferentPaces(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Refresh = RefreshIntervals{Iptables: 40 * time.Millisecond, IPSets: time.Hour, Routes: 400 * time.Millisecond}
	})
	h.inSyncAndProgrammed()
	waitFor(t, "two route refreshes", func() bool { return h.dp.r.count("routes.Resync") >= 2 })
	n := h.resyncCounts()
	if n["iptables-filter-v4"] <= n["routes"] || n["iptables-nat-v4"] <= n["routes"] {
		t.Errorf("tables resynced as often as the routes, want more often: %v", n)
	}
	if n["ipsets"] != 0 {
		t.Errorf("ipsets resynced %d times with a 1 h interval", n["ipsets"])
	}
}

// TestRefreshOneResyncInFlight: while the tables' reads run off the loop, further ticks of the
// tables' timer are skipped, the ipsets' refresh that falls due waits for them instead of being
// lost or read at the same time, and the loop goes on applying changes.
func TestRefreshOneResyncInFlight(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	h := newHarness(t, func(c *Config) {
		c.Refresh = RefreshIntervals{Iptables: 30 * time.Millisecond, IPSets: 50 * time.Millisecond, Routes: time.Hour}
	})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the harness's cleanup (LIFO): Run waits for the held read
	held := make(chan struct{})
	// Where the call log stood when the tables' read was held: an ipsets refresh may have run
	// before it (its tick can come first when the datastore is in sync late), which is not
	// what this test is about.
	var mark atomic.Int64
	h.dp.r.hooks.Store("iptables-filter-v4.Read", func() {
		once.Do(func() {
			mark.Store(int64(len(h.dp.r.calls())))
			close(held)
			<-release
		})
	})
	h.inSyncAndProgrammed()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("no table read")
	}
	h.putR(gnp("during"))
	waitFor(t, "a change applied while the read is held", func() bool { _, ok := h.dp.filter4.inKernel("trc-pi-during"); return ok })
	time.Sleep(300 * time.Millisecond) // several ticks of both timers
	for call, want := range map[string]int{"iptables-filter-v4.Read": 1, "iptables-nat-v4.Read": 1, "iptables-filter-v4.Resync": 0} {
		if n := h.dp.r.count(call); n != want {
			t.Errorf("%s called %d times while the tables' read was held, want %d", call, n, want)
		}
	}
	since := func() []string { return h.dp.r.calls()[mark.Load():] }
	for _, call := range []string{"ipsets.Read", "ipsets.Resync"} {
		if n := index(since(), call); n >= 0 {
			t.Errorf("%s called while the tables' read was held: %v", call, since())
		}
	}
	free()
	waitFor(t, "the tables' resync, then the ipsets'", func() bool { return index(since(), "ipsets.Resync") >= 0 })
	calls := since()
	tablesDone, setsRead := index(calls, "iptables-filter-v4.Resync"), index(calls, "ipsets.Read")
	if tablesDone < 0 || setsRead < tablesDone {
		t.Errorf("ipsets read at %d, before the held resync finished at %d", setsRead, tablesDone)
	}
	// The tables' ticks during their own resync were dropped, not kept for another at once.
	setsDone := tablesDone + index(calls[tablesDone:], "ipsets.Resync")
	if i := index(calls[tablesDone:setsDone], "iptables-filter-v4.Read"); i >= 0 {
		t.Errorf("tables read again with the waiting ipsets: %v", calls[tablesDone:setsDone+1])
	}
}

// TestLiveRefreshChange: a FelixConfiguration change of routeRefreshInterval, then of
// ipsetsRefreshInterval, retimes only that class, in place, each with its own log line.
func TestLiveRefreshChange(t *testing.T) {
	var logs syncbuf.Buffer
	h := newHarness(t, func(c *Config) {
		c.Refresh = RefreshIntervals{} // the defaults: nothing falls due during the test
		c.FelixConfigBase = &ComponentConfig{}
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, &logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	h.inSyncAndProgrammed()
	felixConfig := func(spec api.FelixConfigurationSpec) {
		h.put(&api.FelixConfiguration{Metadata: api.ObjectMeta{Name: api.DefaultConfigName}, Spec: spec},
			api.KindFelixConfiguration, "", api.DefaultConfigName)
	}
	changed := func(setting string) []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `msg="applied felix setting change"`) && strings.Contains(l, "setting="+setting+" ") {
				out = append(out, l[strings.Index(l, "setting="):])
			}
		}
		return out
	}

	felixConfig(api.FelixConfigurationSpec{RouteRefreshInterval: &api.Duration{Duration: 50 * time.Millisecond}})
	waitFor(t, "routes refreshed", func() bool {
		n := h.resyncCounts()
		return n["routes"] >= 3 && n["sysctl"] >= 3
	})
	if n := h.resyncCounts(); n["ipsets"]+n["iptables-filter-v4"]+n["iptables-nat-v4"] != 0 {
		t.Errorf("routeRefreshInterval changed, but other writers resynced: %v", n)
	}
	if d := cmp.Diff([]string{"setting=routeRefreshInterval old=1m30s new=50ms"}, changed("routeRefreshInterval")); d != "" {
		t.Errorf("log of the routes change (-want +got):\n%s", d)
	}

	felixConfig(api.FelixConfigurationSpec{IpsetsRefreshInterval: &api.Duration{Duration: 50 * time.Millisecond}})
	waitFor(t, "ipsets refreshed", func() bool { return h.dp.r.count("ipsets.Resync") >= 2 })
	routes := h.dp.r.count("routes.Resync")
	waitFor(t, "ipsets refreshed more", func() bool { return h.dp.r.count("ipsets.Resync") >= 6 })
	if n := h.dp.r.count("routes.Resync"); n != routes {
		t.Errorf("routes resynced %d more times after routeRefreshInterval went back to its default", n-routes)
	}
	if n := h.resyncCounts(); n["iptables-filter-v4"]+n["iptables-nat-v4"] != 0 {
		t.Errorf("the tables resynced though iptablesRefreshInterval never changed: %v", n)
	}
	if d := cmp.Diff([]string{"setting=ipsetsRefreshInterval old=1m30s new=50ms"}, changed("ipsetsRefreshInterval")); d != "" {
		t.Errorf("log of the ipsets change (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"setting=routeRefreshInterval old=1m30s new=50ms", "setting=routeRefreshInterval old=50ms new=1m30s"},
		changed("routeRefreshInterval")); d != "" {
		t.Errorf("log of the routes changes (-want +got):\n%s", d)
	}
	if l := changed("iptablesRefreshInterval"); l != nil {
		t.Errorf("iptablesRefreshInterval logged as changed: %v", l)
	}
	h.a.health.mu.Lock()
	lw := h.a.health.liveWindow
	h.a.health.mu.Unlock()
	if want := liveWindow(DefaultIptablesRefreshInterval); lw != want {
		t.Errorf("liveness window %v, want %v (the longest refresh, iptables')", lw, want)
	}
}

// TestFailureRereadsTheOtherClass: a table that fails may be missing a set someone destroyed,
// and a set that cannot be destroyed may be held by a rule the tables do not know of; with the
// refresh timers apart (here: off), the retry re-reads the other class, not the routes.
func TestFailureRereadsTheOtherClass(t *testing.T) {
	tests := []struct {
		name, fail string // the failing writer (or "writer.op")
		reread     []string
	}{
		{"table fails: the sets are re-read", "iptables-filter-v4", []string{"ipsets"}},
		{"set deletion fails: the tables are re-read", "ipsets.ApplyDeletions", []string{"iptables-filter-v4", "iptables-nat-v4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.inSyncAndProgrammed()
			h.putR(gns("old", "198.18.1.0/24"))
			waitFor(t, "set programmed", func() bool { _, ok := h.dp.ipsets.inKernel("trcold"); return ok })
			h.dp.r.setFail(tt.fail, errors.New("in use by a kernel component"))
			h.del(api.KindGlobalNetworkSet, "", "old")
			h.putR(gnp("p"))
			waitFor(t, "re-read of "+strings.Join(tt.reread, ", "), func() bool {
				n := h.resyncCounts()
				return !slices.ContainsFunc(tt.reread, func(w string) bool { return n[w] == 0 })
			})
			if n := h.resyncCounts(); n["routes"]+n["sysctl"] != 0 {
				t.Errorf("routes re-read for a policy failure: %v", n)
			}
			// While the failure lasts, the other class is not re-read again at every apply:
			// once per run of failures is enough to rule its drift out.
			before := h.resyncCounts()
			failing := func() int {
				n := 0
				for _, c := range h.dp.r.calls() {
					if c == tt.fail || strings.HasPrefix(c, tt.fail+".") {
						n++
					}
				}
				return n
			}
			calls := failing()
			for i := range 5 {
				h.putR(gnp(fmt.Sprintf("busy-%d", i)))
				waitFor(t, "another failing apply", func() bool { return failing() > calls })
				calls = failing()
			}
			after := h.resyncCounts()
			for _, w := range tt.reread {
				if after[w] != before[w] {
					t.Errorf("%s re-read %d times during five more failing applies, want none (counts before %v, after %v)", w, after[w]-before[w], before, after)
				}
			}
			h.dp.r.setFail(tt.fail, nil)
			waitFor(t, "ready again", func() bool { ok, _ := h.a.Ready(); return ok })
			if _, ok := h.dp.ipsets.inKernel("trcold"); ok {
				t.Error("unwanted set still in the kernel after recovery")
			}
		})
	}
}

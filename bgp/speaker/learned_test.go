package speaker

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// slowSink takes a long time per call, like a route writer stuck behind the kernel.
type slowSink struct {
	mu    sync.Mutex
	delay time.Duration
	table map[netip.Prefix][]netip.Addr
	calls []int // size of the table after each delivery
}

func (s *slowSink) UpdateLearnedRoutes(m map[netip.Prefix][]netip.Addr, full bool) {
	time.Sleep(s.delay)
	s.mu.Lock()
	s.table = ApplyRouteChanges(s.table, m, full)
	s.calls = append(s.calls, len(s.table))
	s.mu.Unlock()
}

func (s *slowSink) get() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.calls...)
}

func pathFor(t testing.TB, i int) *api.Path {
	p, err := buildPath(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32), Advert{NextHop: addrB})
	if err != nil {
		t.Fatal(err)
	}
	p.NeighborIp = addrB.String()
	return p
}

func TestSlowSinkGetsLatestStateOnly(t *testing.T) {
	sink := &slowSink{delay: 200 * time.Millisecond}
	l := newLearnedRoutes(sink, 5*time.Millisecond, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	defer func() { cancel(); <-done }()

	const n = 2000
	start := time.Now()
	for i := range n {
		l.apply([]*api.Path{pathFor(t, i)})
	}
	// At most one call per sink delay the burst lasted, plus the last ones: a loaded machine
	// stretches the burst (nominally a few ms), which must not fail the test.
	most := int(time.Since(start)/sink.delay) + 4
	deadline := time.Now().Add(5 * time.Second)
	for {
		calls := sink.get()
		if len(calls) > 0 && calls[len(calls)-1] == n {
			// 2000 changes while the sink is busy must collapse into a handful of calls.
			if len(calls) > most {
				t.Errorf("sink called %d times for one burst, want at most %d: %v", len(calls), most, calls)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink never received all %d routes: calls %v", n, calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSteadyChangesStillDelivered(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	sink := sinkFunc(func(map[netip.Prefix][]netip.Addr) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
	})
	l := newLearnedRoutes(sink, 20*time.Millisecond, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	defer func() { cancel(); <-done }()

	// A change every 5 ms never leaves 20 ms of quiet; maxDelay must still force deliveries:
	// three are due within 300 ms, and the changes go on until they came (or 3 s, on a loaded
	// machine) so every one counted was made while changes were still arriving.
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(times)
	}
	start := time.Now()
	for i := 0; delivered() < 3 && time.Since(start) < 3*time.Second; i++ {
		l.apply([]*api.Path{pathFor(t, i)})
		time.Sleep(5 * time.Millisecond)
	}
	if got := delivered(); got < 3 {
		t.Errorf("only %d deliveries during %v of continuous change with maxDelay 100 ms", got, time.Since(start))
	}
}

type sinkFunc func(map[netip.Prefix][]netip.Addr)

func (f sinkFunc) UpdateLearnedRoutes(m map[netip.Prefix][]netip.Addr, _ bool) { f(m) }

// TestLearnedDeliversChanges: the first delivery is the whole table, later ones only the prefixes
// changed since (a withdrawn one without next hops), and a change of this host's addresses makes
// the next one whole again, with the local next hops filtered out.
func TestLearnedDeliversChanges(t *testing.T) {
	l := newLearnedRoutes(nil, time.Millisecond, time.Millisecond)
	p0, p1 := pathFor(t, 0), pathFor(t, 1)
	pfx := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32)
	}
	l.apply([]*api.Path{p0})
	l.apply([]*api.Path{p1})
	got, full := l.take()
	if !full || len(got) != 2 {
		t.Fatalf("first delivery: full %v, %d prefixes; want the whole table of 2", full, len(got))
	}
	if got, full := l.take(); full || len(got) != 0 {
		t.Fatalf("nothing changed, yet a delivery of %d (full %v)", len(got), full)
	}

	w := pathFor(t, 1)
	w.IsWithdraw = true
	l.apply([]*api.Path{w})
	got, full = l.take()
	if full || len(got) != 1 {
		t.Fatalf("after one withdrawal: full %v, %v", full, got)
	}
	if nhs, ok := got[pfx(1)]; !ok || len(nhs) != 0 {
		t.Fatalf("withdrawn prefix delivered as %v (present %v); want present without next hops", nhs, ok)
	}

	l.setLocal(map[netip.Addr]bool{addrB: true})
	got, full = l.take()
	if !full || len(got) != 0 {
		t.Fatalf("after the local addresses changed: full %v, %v; want a whole, empty table (the only next hop is local)", full, got)
	}

	// A sink keeping the whole table through ApplyRouteChanges ends where the speaker is.
	var table map[netip.Prefix][]netip.Addr
	l.setLocal(map[netip.Addr]bool{})
	for _, step := range [][]*api.Path{{pathFor(t, 2)}, {pathFor(t, 3)}, {w}} {
		l.apply(step)
		changes, full := l.take()
		table = ApplyRouteChanges(table, changes, full)
	}
	if want := l.snapshot(); len(table) != len(want) || len(table) != 3 {
		t.Fatalf("sink table %v, speaker %v; want the same 3 prefixes", table, want)
	}
	for p := range l.snapshot() {
		if _, ok := table[p]; !ok {
			t.Errorf("sink table lacks %s", p)
		}
	}
}

// TestLearnedFlappingPrefixBounded: a prefix that changes again and again between two deliveries
// is listed each time, but the list never outgrows the table by more than its bound: past it the
// next delivery is the whole table, which ends in the same state.
func TestLearnedFlappingPrefixBounded(t *testing.T) {
	l := newLearnedRoutes(nil, time.Millisecond, time.Millisecond)
	l.apply([]*api.Path{pathFor(t, 0)})
	if _, full := l.take(); !full {
		t.Fatal("first delivery not the whole table")
	}
	up, down := pathFor(t, 1), pathFor(t, 1)
	down.IsWithdraw = true
	for i := 0; i < 1500; i++ {
		l.apply([]*api.Path{up})
		l.apply([]*api.Path{down})
	}
	l.mu.Lock()
	listed := len(l.changed)
	l.mu.Unlock()
	if listed != 3000 {
		t.Fatalf("%d changes listed, want every one of the 3000 (under the bound)", listed)
	}
	got, full := l.take()
	if full || len(got) != 1 || len(got[netip.MustParsePrefix("198.18.0.1/32")]) != 0 {
		t.Fatalf("delivery after the flaps: full %v, %v; want the one prefix, withdrawn", full, got)
	}
	for i := 0; i < 5000; i++ {
		l.apply([]*api.Path{up})
	}
	l.mu.Lock()
	listed, full = len(l.changed), l.full
	l.mu.Unlock()
	if !full || listed > 2*2+4096 {
		t.Fatalf("after 5000 changes to one of 2 prefixes: %d listed, full %v; want the whole table instead", listed, full)
	}
	got, full = l.take()
	if !full || len(got) != 2 {
		t.Fatalf("delivery after the bound: full %v, %d prefixes; want the whole table of 2", full, len(got))
	}
}

// TestSetLocalUnchangedCostsNothing: every reconcile sets the local addresses; only a change may
// make the next delivery the whole table.
func TestSetLocalUnchangedCostsNothing(t *testing.T) {
	l := newLearnedRoutes(nil, time.Millisecond, time.Millisecond)
	l.apply([]*api.Path{pathFor(t, 0)})
	l.setLocal(map[netip.Addr]bool{netip.MustParseAddr("192.0.2.99"): true})
	if _, full := l.take(); !full {
		t.Fatal("first delivery not the whole table")
	}
	l.setLocal(map[netip.Addr]bool{netip.MustParseAddr("192.0.2.99"): true})
	if got, full := l.take(); full || len(got) != 0 {
		t.Fatalf("the same local addresses again: full %v, %d prefixes; want nothing", full, len(got))
	}
	l.setLocal(map[netip.Addr]bool{netip.MustParseAddr("192.0.2.98"): true})
	if _, full := l.take(); !full {
		t.Fatal("changed local addresses did not make the next delivery the whole table")
	}
}

// TestEndOfRIBHandedOn: a peer's End-of-RIB counts once the sink has been handed everything applied
// before it (a slow sink holds it back), only for its own peer and family, and only for a session
// that started no later than it arrived.
func TestEndOfRIBHandedOn(t *testing.T) {
	sink := &slowSink{delay: 300 * time.Millisecond}
	l := newLearnedRoutes(sink, 5*time.Millisecond, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	defer func() { cancel(); <-done }()

	v4 := familyKey(&api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST})
	v6 := familyKey(&api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST})
	sessionStart := time.Now()
	if l.endOfRIBHandedOn(addrB, v4, sessionStart) {
		t.Fatal("handed on before any End-of-RIB")
	}
	l.apply([]*api.Path{pathFor(t, 1)})
	l.apply([]*api.Path{{NeighborIp: addrB.String(), Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}}})
	time.Sleep(100 * time.Millisecond) // the slow sink is still taking the route
	if l.endOfRIBHandedOn(addrB, v4, sessionStart) {
		t.Error("handed on while the route sent before it was still on its way to the sink")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !l.endOfRIBHandedOn(addrB, v4, sessionStart) {
		if time.Now().After(deadline) {
			t.Fatal("End-of-RIB never handed on")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if calls := sink.get(); len(calls) == 0 || calls[len(calls)-1] != 1 {
		t.Errorf("sink calls %v, want the route delivered", calls)
	}
	if l.endOfRIBHandedOn(addrB, v6, sessionStart) || l.endOfRIBHandedOn(addrC, v4, sessionStart) {
		t.Error("End-of-RIB counted for another family or peer")
	}
	if l.endOfRIBHandedOn(addrB, v4, time.Now().Add(time.Second)) {
		t.Error("End-of-RIB of an earlier session counted for a later one")
	}
}

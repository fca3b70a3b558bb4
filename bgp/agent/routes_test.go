package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// speakerTable stands in for the speaker: it keeps the table the deliveries add up to, which the
// programmer reads back for the passes that resolve every learned route again.
type speakerTable struct {
	mu sync.Mutex
	m  map[netip.Prefix][]netip.Addr
}

func (s *speakerTable) deliver(p *programmer, m map[netip.Prefix][]netip.Addr, full bool) {
	s.mu.Lock()
	s.m = speaker.ApplyRouteChanges(s.m, m, full)
	s.mu.Unlock()
	p.UpdateLearnedRoutes(m, full)
}

func (s *speakerTable) now() map[netip.Prefix][]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func newTestProgrammer(w RouteWriter, nl Netlink) (*programmer, *speakerTable) {
	st := &speakerTable{}
	return newProgrammer(w, nl, st.now, slog.New(slog.DiscardHandler)), st
}

// fakeWriter records the programmer's calls.
type fakeWriter struct {
	mu        sync.Mutex
	desired   map[netip.Prefix]routes.Target
	sets      int
	deletes   int
	applies   int
	inSync    bool
	conflicts []netip.Prefix        // what Conflicts reports
	failing   map[netip.Prefix]bool // Apply fails for these while they are desired
	refuse    map[netip.Prefix]bool // Set refuses these
	pending   []netip.Prefix        // what Pending reports
	resyncs   int
}

func newFakeWriter() *fakeWriter { return &fakeWriter{desired: map[netip.Prefix]routes.Target{}} }

func (f *fakeWriter) Set(p netip.Prefix, t routes.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets++
	if f.refuse[p] {
		return fmt.Errorf("set route %s: refused by the test", p)
	}
	f.desired[p] = t
	return nil
}
func (f *fakeWriter) Delete(p netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	delete(f.desired, p)
}

func (f *fakeWriter) get(p netip.Prefix) (routes.Target, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.desired[p]
	return t, ok
}
func (f *fakeWriter) Apply(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	var errs []error
	for p := range f.failing {
		if _, ok := f.desired[p]; ok {
			errs = append(errs, fmt.Errorf("add route %s: invalid argument", p))
		}
	}
	return errors.Join(errs...)
}
func (f *fakeWriter) Conflicts() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.conflicts)
}
func (f *fakeWriter) applyCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}
func (f *fakeWriter) Desired(p netip.Prefix) (routes.Target, bool) { return f.get(p) }

// Installed counts every desired route but those in conflict and those failing.
func (f *fakeWriter) Installed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.desired) - len(f.conflicts)
	for p := range f.failing {
		if _, ok := f.desired[p]; ok {
			n--
		}
	}
	return n
}
func (f *fakeWriter) Unsync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inSync = false
}
func (f *fakeWriter) Prefixes() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Collect(maps.Keys(f.desired))
}
func (f *fakeWriter) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.desired)
}
func (f *fakeWriter) Resync(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resyncs++
	return nil
}
func (f *fakeWriter) SetInSync() { f.inSync = true }

func (f *fakeWriter) Pending() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pending)
}

// fakeNetlink answers FIB lookups from a small table: connected subnets and gateway routes.
type fakeNetlink struct {
	routes.Netlink
	table   []netlink.Route
	gets    int
	failErr error // lookups and listings fail with it while set
}

// RouteGetWithOptions answers as the kernel does with FIBMatch: the longest matching route of the
// table, whole (every path, its protocol and flags).
func (f *fakeNetlink) RouteGetWithOptions(dst net.IP, opts *netlink.RouteGetOptions) ([]netlink.Route, error) {
	f.gets++
	if f.failErr != nil {
		return nil, f.failErr
	}
	if opts == nil || !opts.FIBMatch {
		return nil, errors.New("fake netlink answers FIB-match lookups only")
	}
	a, _ := netip.AddrFromSlice(dst)
	a = a.Unmap()
	best, bits := -1, -1
	for i, r := range f.table {
		ones, _ := r.Dst.Mask.Size()
		pa, _ := netip.AddrFromSlice(r.Dst.IP)
		if netip.PrefixFrom(pa.Unmap(), ones).Contains(a) && ones > bits {
			best, bits = i, ones
		}
	}
	if best < 0 {
		return nil, unix.ENETUNREACH
	}
	return []netlink.Route{f.table[best]}, nil
}

func (f *fakeNetlink) RouteListFiltered(int, *netlink.Route, uint64) ([]netlink.Route, error) {
	if f.failErr != nil {
		return nil, f.failErr
	}
	return f.table, nil
}

func cidr(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func underlay() *fakeNetlink {
	return &fakeNetlink{table: []netlink.Route{
		{Dst: cidr("192.0.2.0/31"), Type: unix.RTN_UNICAST},    // link to tor-1
		{Dst: cidr("198.51.100.0/31"), Type: unix.RTN_UNICAST}, // link to tor-2
		{Dst: cidr("0.0.0.0/0"), Type: unix.RTN_UNICAST, MultiPath: []*netlink.NexthopInfo{
			{Gw: net.ParseIP("192.0.2.0")}, {Gw: net.ParseIP("198.51.100.0")}}},
		// A BGP route of ours covering a next hop must never be used to resolve it.
		{Dst: cidr("192.0.2.128/25"), Type: unix.RTN_UNICAST, Protocol: routes.ProtocolTerraceBGP, Gw: net.ParseIP("192.0.2.0")},
		{Dst: cidr("2001:db8::/64"), Type: unix.RTN_UNICAST},
		// Underlays whose routers have no global address on the host's links: link-local IPv6
		// gateways (alone, and one address on two links), an IPv4 onlink gateway and an IPv4
		// route via an IPv6 router.
		{Dst: cidr("2001:db8:2::/48"), Type: unix.RTN_UNICAST, Gw: net.ParseIP("fe80::2"), LinkIndex: 7},
		{Dst: cidr("2001:db8:3::/48"), Type: unix.RTN_UNICAST, MultiPath: []*netlink.NexthopInfo{
			{Gw: net.ParseIP("fe80::1"), LinkIndex: 8}, {Gw: net.ParseIP("fe80::1"), LinkIndex: 7}}},
		{Dst: cidr("198.51.100.64/26"), Type: unix.RTN_UNICAST, Gw: net.ParseIP("192.0.2.77"), LinkIndex: 7, Flags: unix.RTNH_F_ONLINK},
		{Dst: cidr("198.51.100.128/26"), Type: unix.RTN_UNICAST, LinkIndex: 7,
			Via: &netlink.Via{AddrFamily: netlink.FAMILY_V6, Addr: net.ParseIP("fe80::1")}},
		// One uplink down: the kernel keeps the ECMP route with that hop marked dead; a route
		// whose only hop is dead; a connected router that is also an onlink gateway.
		{Dst: cidr("198.51.100.32/27"), Type: unix.RTN_UNICAST, MultiPath: []*netlink.NexthopInfo{
			{Gw: net.ParseIP("192.0.2.77"), LinkIndex: 8, Flags: unix.RTNH_F_ONLINK | unix.RTNH_F_DEAD | unix.RTNH_F_LINKDOWN},
			{Gw: net.ParseIP("192.0.2.78"), LinkIndex: 7, Flags: unix.RTNH_F_ONLINK}}},
		{Dst: cidr("198.51.100.16/28"), Type: unix.RTN_UNICAST, Gw: net.ParseIP("192.0.2.79"), LinkIndex: 8,
			Flags: unix.RTNH_F_ONLINK | unix.RTNH_F_DEAD | unix.RTNH_F_LINKDOWN},
		{Dst: cidr("198.51.100.96/27"), Type: unix.RTN_UNICAST, Gw: net.ParseIP("192.0.2.0"), LinkIndex: 7, Flags: unix.RTNH_F_ONLINK},
	}}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestProgrammerTargets(t *testing.T) {
	tests := []struct {
		name    string
		learned map[netip.Prefix][]netip.Addr
		want    map[netip.Prefix]routes.Target
		unres   int
	}{
		{
			name:    "connected next hops stay, ECMP sorted",
			learned: map[netip.Prefix][]netip.Addr{netip.MustParsePrefix("198.18.0.64/26"): addrs("198.51.100.0", "192.0.2.0")},
			want:    map[netip.Prefix]routes.Target{netip.MustParsePrefix("198.18.0.64/26"): {Gateways: routes.Via(addrs("192.0.2.0", "198.51.100.0")...)}},
		},
		{
			name: "mesh next hop behind the ToRs resolves through the underlay's ECMP route",
			learned: map[netip.Prefix][]netip.Addr{
				netip.MustParsePrefix("198.18.0.128/26"): addrs("192.0.2.200"),
				netip.MustParsePrefix("198.18.1.0/26"):   addrs("192.0.2.5"),
			},
			want: map[netip.Prefix]routes.Target{
				netip.MustParsePrefix("198.18.0.128/26"): {Gateways: routes.Via(addrs("192.0.2.0", "198.51.100.0")...)},
				netip.MustParsePrefix("198.18.1.0/26"):   {Gateways: routes.Via(addrs("192.0.2.0", "198.51.100.0")...)},
			},
		},
		{
			name: "IPv6 connected, link-local and unreachable skipped",
			learned: map[netip.Prefix][]netip.Addr{
				netip.MustParsePrefix("2001:db8:1000::/122"):   addrs("2001:db8::1"),
				netip.MustParsePrefix("2001:db8:1000::40/122"): addrs("fe80::1"),
				netip.MustParsePrefix("2001:db8:1000::80/122"): addrs("2001:db8:9::1"),
			},
			want:  map[netip.Prefix]routes.Target{netip.MustParsePrefix("2001:db8:1000::/122"): {Gateways: routes.Via(addrs("2001:db8::1")...)}},
			unres: 2,
		},
		{
			name: "next hops of the other family are never gateways (an IPv6 block sent over IPv4 without an IPv6 next hop)",
			learned: map[netip.Prefix][]netip.Addr{
				netip.MustParsePrefix("2001:db8:1000::40/122"): addrs("192.0.2.0"),
				netip.MustParsePrefix("2001:db8:1000::80/122"): addrs("192.0.2.0", "2001:db8::1"),
			},
			want:  map[netip.Prefix]routes.Target{netip.MustParsePrefix("2001:db8:1000::80/122"): {Gateways: routes.Via(addrs("2001:db8::1")...)}},
			unres: 1,
		},
		{
			name: "gateways that need their link keep it: link-local IPv6, onlink IPv4",
			learned: map[netip.Prefix][]netip.Addr{
				netip.MustParsePrefix("2001:db8:1000::/122"):   addrs("2001:db8:2::9"),
				netip.MustParsePrefix("2001:db8:1000::40/122"): addrs("2001:db8:3::9"),
				netip.MustParsePrefix("198.18.0.0/26"):         addrs("198.51.100.70"),
				netip.MustParsePrefix("198.18.0.64/26"):        addrs("198.51.100.130"),
			},
			want: map[netip.Prefix]routes.Target{
				netip.MustParsePrefix("2001:db8:1000::/122"): {Gateways: []routes.Gateway{{Addr: netip.MustParseAddr("fe80::2"), LinkIndex: 7}}},
				netip.MustParsePrefix("2001:db8:1000::40/122"): {Gateways: []routes.Gateway{
					{Addr: netip.MustParseAddr("fe80::1"), LinkIndex: 7}, {Addr: netip.MustParseAddr("fe80::1"), LinkIndex: 8}}},
				netip.MustParsePrefix("198.18.0.0/26"): {Gateways: []routes.Gateway{{Addr: netip.MustParseAddr("192.0.2.77"), LinkIndex: 7, OnLink: true}}},
			},
			unres: 1, // via an IPv6 router: not something the writer can make
		},
		{
			name: "a dead hop of the underlay is left out; a route all of whose hops are dead is unresolved",
			learned: map[netip.Prefix][]netip.Addr{
				netip.MustParsePrefix("198.18.0.0/26"):  addrs("198.51.100.40"),
				netip.MustParsePrefix("198.18.0.64/26"): addrs("198.51.100.20"),
			},
			want: map[netip.Prefix]routes.Target{
				netip.MustParsePrefix("198.18.0.0/26"): {Gateways: []routes.Gateway{{Addr: netip.MustParseAddr("192.0.2.78"), LinkIndex: 7, OnLink: true}}},
			},
			unres: 1,
		},
		{
			name: "one router reached as a connected next hop and as an onlink gateway is one gateway",
			learned: map[netip.Prefix][]netip.Addr{
				netip.MustParsePrefix("198.18.0.0/26"): addrs("192.0.2.0", "198.51.100.100"),
			},
			want: map[netip.Prefix]routes.Target{
				netip.MustParsePrefix("198.18.0.0/26"): {Gateways: []routes.Gateway{{Addr: netip.MustParseAddr("192.0.2.0"), LinkIndex: 7, OnLink: true}}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newFakeWriter()
			p, st := newTestProgrammer(w, underlay())
			st.deliver(p, tc.learned, true)
			p.sync(context.Background(), true)
			if diff := cmp.Diff(tc.want, w.desired, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			if unres := p.Stats().Unresolved; unres != tc.unres {
				t.Errorf("unresolved = %d, want %d", unres, tc.unres)
			}
		})
	}
}

// TestProgrammerDiffs checks that only changes reach the writer and that a shrinking snapshot
// deletes what is gone.
func TestProgrammerDiffs(t *testing.T) {
	w := newFakeWriter()
	nl := underlay()
	p, st := newTestProgrammer(w, nl)
	ctx := context.Background()
	a, b := netip.MustParsePrefix("198.18.0.64/26"), netip.MustParsePrefix("198.18.0.128/26")
	st.deliver(p, map[netip.Prefix][]netip.Addr{a: addrs("192.0.2.0"), b: addrs("192.0.2.0")}, true)
	p.sync(ctx, false)
	if w.sets != 2 || w.applies != 1 {
		t.Fatalf("first sync: %d sets, %d applies; want 2, 1", w.sets, w.applies)
	}
	gets := nl.gets
	p.sync(ctx, false) // nothing changed: the same slices, so nothing is resolved again
	if w.sets != 2 || w.deletes != 0 || nl.gets != gets {
		t.Fatalf("unchanged snapshot: %d sets, %d deletes, %d lookups; want 2, 0, 0", w.sets, w.deletes, nl.gets-gets)
	}
	p.sync(ctx, true) // a resync resolves everything again but changes nothing
	if w.sets != 2 || nl.gets == gets {
		t.Fatalf("full sync: %d sets, %d lookups; want 2 sets and new lookups", w.sets, nl.gets-gets)
	}
	st.deliver(p, map[netip.Prefix][]netip.Addr{a: addrs("192.0.2.0", "198.51.100.0")}, true)
	p.sync(ctx, false)
	want := map[netip.Prefix]routes.Target{a: {Gateways: routes.Via(addrs("192.0.2.0", "198.51.100.0")...)}}
	if diff := cmp.Diff(want, w.desired, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("writer's desired routes (-want +got):\n%s", diff)
	}
	if w.sets != 3 || w.deletes != 1 {
		t.Errorf("after change: %d sets, %d deletes; want 3, 1", w.sets, w.deletes)
	}
	if stats := p.Stats(); stats.Learned != 1 || stats.Installed != 1 || stats.InSync {
		t.Errorf("stats = %+v, want learned 1, installed 1, not in sync", stats)
	}
	if w.inSync {
		t.Error("writer declared in sync by sync alone; only run may do that")
	}

	// Deliveries of changes only: b comes back, then a is withdrawn; nothing else is touched.
	sets, deletes := w.sets, w.deletes
	gets = nl.gets
	st.deliver(p, map[netip.Prefix][]netip.Addr{b: addrs("192.0.2.0")}, false)
	p.sync(ctx, false)
	st.deliver(p, map[netip.Prefix][]netip.Addr{a: nil}, false)
	p.sync(ctx, false)
	want = map[netip.Prefix]routes.Target{b: {Gateways: routes.Via(addrs("192.0.2.0")...)}}
	if diff := cmp.Diff(want, w.desired, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("after changes only (-want +got):\n%s", diff)
	}
	// The next hop was resolved by the resync above, less than resolverTTL ago: no lookup.
	if w.sets-sets != 1 || w.deletes-deletes != 1 || nl.gets-gets != 0 {
		t.Errorf("changes only: %d sets, %d deletes, %d lookups; want 1, 1, 0", w.sets-sets, w.deletes-deletes, nl.gets-gets)
	}
	// Once the resolutions are older than resolverTTL, a changed route's next hop is looked up again.
	p.resAt = p.resAt.Add(-resolverTTL)
	gets = nl.gets
	st.deliver(p, map[netip.Prefix][]netip.Addr{a: addrs("192.0.2.0")}, false)
	p.sync(ctx, false)
	st.deliver(p, map[netip.Prefix][]netip.Addr{a: nil}, false)
	p.sync(ctx, false)
	if nl.gets-gets != 1 {
		t.Errorf("after resolverTTL: %d lookups, want 1", nl.gets-gets)
	}
	// A next hop that cannot be resolved is tried again by the next pass, not kept as failed.
	c := netip.MustParsePrefix("2001:db8:77::/64")
	st.deliver(p, map[netip.Prefix][]netip.Addr{c: addrs("2001:db8:9::1")}, false)
	p.sync(ctx, false)
	if st := p.Stats(); st.Unresolved != 1 {
		t.Fatalf("unreachable next hop: stats %+v, want 1 unresolved", st)
	}
	nl.table = append(nl.table, netlink.Route{Dst: cidr("2001:db8:9::/64"), Type: unix.RTN_UNICAST})
	st.deliver(p, map[netip.Prefix][]netip.Addr{c: addrs("2001:db8:9::1", "2001:db8::5")}, false)
	p.sync(ctx, false)
	if got, ok := w.get(c); !ok || !slices.Contains(got.Gateways, routes.Gateway{Addr: netip.MustParseAddr("2001:db8:9::1")}) {
		t.Errorf("next hop reachable again within resolverTTL: route %v (set %v), want it through 2001:db8:9::1", got, ok)
	}

	// Changes delivered on top of a whole table not yet programmed are merged into it.
	st.deliver(p, map[netip.Prefix][]netip.Addr{a: addrs("192.0.2.0")}, true)
	st.deliver(p, map[netip.Prefix][]netip.Addr{b: addrs("192.0.2.0"), a: nil}, false)
	p.sync(ctx, false)
	if diff := cmp.Diff(want, w.desired, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("whole table plus changes (-want +got):\n%s", diff)
	}
	if st := p.Stats(); st.Learned != 1 || st.Installed != 1 {
		t.Errorf("stats = %+v, want learned 1, installed 1", st)
	}
}

func TestProgrammerRunWaitsForInSync(t *testing.T) {
	w := newFakeWriter()
	p, st := newTestProgrammer(w, underlay())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	allow := make(chan struct{})
	may := func() bool {
		select {
		case <-allow:
			return true
		default:
			return false
		}
	}
	done := make(chan struct{})
	go func() { p.run(ctx, 3600e9, may); close(done) }()
	st.deliver(p, map[netip.Prefix][]netip.Addr{}, true)
	waitFor(t, func() bool { return p.appliedOnce() })
	// run owns the writer: read its state only through Stats.
	if p.Stats().InSync {
		t.Fatal("in sync before the agent allowed deletions")
	}
	close(allow)
	waitFor(t, func() bool { return p.Stats().InSync })
	cancel()
	<-done
	if !w.inSync {
		t.Error("writer never told it is in sync")
	}
}

// TestProgrammerRetriesConflicts: while another protocol's route holds back one of ours, the
// programmer applies again at its one-second poll (not only at the resync), and the status does
// not count the held-back route as installed; once it goes in, the polling stops.
func TestProgrammerRetriesConflicts(t *testing.T) {
	w := newFakeWriter()
	block := netip.MustParsePrefix("198.18.1.0/26")
	w.conflicts = []netip.Prefix{block}
	p, st := newTestProgrammer(w, underlay())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.run(ctx, 3600e9, func() bool { return false }); close(done) }()
	st.deliver(p, map[netip.Prefix][]netip.Addr{block: {netip.MustParseAddr("192.0.2.2")}}, true)
	waitFor(t, func() bool { return p.appliedOnce() })
	if st := p.Stats(); st.Installed != 0 || st.Learned != 1 || st.HeldBack != 1 {
		t.Errorf("stats with the route held back: %+v, want 1 learned, 0 installed, 1 held back", st)
	}
	first := w.applyCount()
	waitFor(t, func() bool { return w.applyCount() >= first+2 })
	w.mu.Lock()
	w.conflicts = nil
	w.mu.Unlock()
	waitFor(t, func() bool { return p.Stats().Installed == 1 })
	if st := p.Stats(); st.HeldBack != 0 {
		t.Errorf("stats once installed: %+v", st)
	}
	n := w.applyCount()
	time.Sleep(1500 * time.Millisecond)
	if m := w.applyCount(); m > n+1 {
		t.Errorf("programmer applied %d more times after the conflict went", m-n)
	}
	cancel()
	<-done
}

// TestProgrammerUnderlayChange: a host interface changing state makes the programmer read its
// routes back (the writer's resync repairs what the kernel lost) and resolve every learned one
// again within about a second (the kernel flushes the
// routes through a link that goes down and says nothing), not at the 60 s resync; a burst of
// changes costs one pass.
func TestProgrammerUnderlayChange(t *testing.T) {
	w := newFakeWriter()
	p, st := newTestProgrammer(w, underlay())
	ev := make(chan string, 1)
	p.underlay = ev
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.run(ctx, 3600e9, func() bool { return false }); close(done) }()
	st.deliver(p, map[netip.Prefix][]netip.Addr{netip.MustParsePrefix("198.18.1.0/26"): {netip.MustParseAddr("192.0.2.2")}}, true)
	waitFor(t, func() bool { return p.appliedOnce() })
	applied := w.applyCount()
	for range 3 {
		select {
		case ev <- "eth0":
		default:
		}
	}
	waitFor(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.resyncs == 1 && w.applies > applied
	})
	time.Sleep(1200 * time.Millisecond)
	w.mu.Lock()
	resyncs := w.resyncs
	w.mu.Unlock()
	if resyncs != 1 {
		t.Errorf("%d resyncs for one burst of underlay changes, want 1", resyncs)
	}
	cancel()
	<-done
}

// TestLookupFailureKeepsRoutes: a next-hop lookup that fails (netlink trouble, not "no route")
// says nothing about the next hop: a resync pass meeting it keeps every installed route as it is,
// where before it withdrew them all until the next retry. "No route" still withdraws.
func TestLookupFailureKeepsRoutes(t *testing.T) {
	w := newFakeWriter()
	nl := underlay()
	p, st := newTestProgrammer(w, nl)
	ctx := context.Background()
	direct, mesh := netip.MustParsePrefix("198.18.0.64/26"), netip.MustParsePrefix("198.18.0.128/26")
	st.deliver(p, map[netip.Prefix][]netip.Addr{direct: addrs("192.0.2.0"), mesh: addrs("203.0.113.7")}, true)
	p.sync(ctx, false)
	if _, ok := w.get(mesh); !ok {
		t.Fatalf("mesh route (recursive next hop) not installed: %v", w.desired)
	}
	nl.failErr = unix.ENOBUFS
	deletes := w.deletes
	p.sync(ctx, true)
	if w.deletes != deletes || w.Len() != 2 {
		t.Fatalf("a resync with failing lookups deleted routes: %d deletes, desired %v", w.deletes-deletes, w.desired)
	}
	// A new prefix whose lookup fails waits with the unresolved ones.
	fresh := netip.MustParsePrefix("198.18.1.0/26")
	st.deliver(p, map[netip.Prefix][]netip.Addr{fresh: addrs("203.0.113.7")}, false)
	p.sync(ctx, false)
	if st := p.Stats(); st.Unresolved != 1 || st.Learned != 3 {
		t.Fatalf("stats %+v, want the new prefix unresolved, 3 learned", st)
	}
	nl.failErr = nil
	p.resolveAgain(ctx)
	if _, ok := w.get(fresh); !ok {
		t.Fatal("the new prefix was not installed once lookups worked again")
	}
	// Unreachable for real: withdrawn.
	nl.table = nl.table[:2] // the default route goes
	p.sync(ctx, true)
	if _, ok := w.get(mesh); ok {
		t.Fatalf("mesh route kept though its next hop has no route any more: %v", w.desired)
	}
}

// TestSetRefusedDropsOldRoute: a route the writer refuses takes the prefix's earlier route out
// (it would forward by stale next hops) and still counts as learned, as refused, with the error in
// the status until the prefix changes.
func TestSetRefusedDropsOldRoute(t *testing.T) {
	w := newFakeWriter()
	p, st := newTestProgrammer(w, underlay())
	ctx := context.Background()
	block := netip.MustParsePrefix("198.18.0.64/26")
	st.deliver(p, map[netip.Prefix][]netip.Addr{block: addrs("192.0.2.0")}, true)
	p.sync(ctx, false)
	if _, ok := w.get(block); !ok {
		t.Fatalf("route not installed: %v", w.desired)
	}
	w.refuse = map[netip.Prefix]bool{block: true}
	st.deliver(p, map[netip.Prefix][]netip.Addr{block: addrs("192.0.2.0", "203.0.113.7")}, false)
	p.sync(ctx, false)
	if got, ok := w.get(block); ok {
		t.Errorf("the refused prefix keeps its old route %+v", got)
	}
	if s := p.Stats(); s.Learned != 1 || s.Installed != 0 || s.Refused != 1 || s.Unresolved != 0 || !strings.Contains(s.LastError, "refused by the test") {
		t.Errorf("stats %+v, want 1 learned, 0 installed, 1 refused, the refusal as last error", s)
	}
	// Passes with nothing to do keep it in the status.
	p.sync(ctx, false)
	p.resolveAgain(ctx)
	if s := p.Stats(); s.Refused != 1 || !strings.Contains(s.LastError, "1 learned routes refused, first: set route 198.18.0.64/26: refused by the test") {
		t.Errorf("stats after a quiet pass %+v", s)
	}
	w.refuse = nil
	st.deliver(p, map[netip.Prefix][]netip.Addr{block: addrs("192.0.2.0")}, false)
	p.sync(ctx, false)
	if _, ok := w.get(block); !ok || p.Stats().LastError != "" || p.Stats().Refused != 0 {
		t.Fatalf("not installed once accepted again: %v, stats %+v", w.desired, p.Stats())
	}
	// A route whose interface is down is counted as such.
	w.pending = []netip.Prefix{block}
	p.sync(ctx, true)
	if s := p.Stats(); s.LinkDown != 1 {
		t.Errorf("stats with the route's link down: %+v", s)
	}
}

func TestBrief(t *testing.T) {
	var errs []error
	for i := range 5 {
		errs = append(errs, fmt.Errorf("add route 198.18.%d.0/26: network is unreachable", i))
	}
	if got, want := brief(errors.Join(errs...)), "add route 198.18.0.0/26: network is unreachable; add route 198.18.1.0/26: network is unreachable; add route 198.18.2.0/26: network is unreachable; and 2 more"; got != want {
		t.Errorf("brief = %q, want %q", got, want)
	}
	if got := brief(errors.Join(errs[:2]...)); got != errs[0].Error()+"\n"+errs[1].Error() {
		t.Errorf("brief of two = %q", got)
	}
}

// TestSpeakerReplacedHoldsRoutes: the pass after the speaker was replaced takes the programmer
// and the writer out of sync before it handles the new speaker's first (empty) table, so the
// writer holds the routes instead of deleting them.
func TestSpeakerReplacedHoldsRoutes(t *testing.T) {
	w := newFakeWriter()
	p, st := newTestProgrammer(w, underlay())
	ctx := context.Background()
	pfx := netip.MustParsePrefix("198.18.0.64/26")
	st.deliver(p, map[netip.Prefix][]netip.Addr{pfx: addrs("192.0.2.0")}, true)
	p.sync(ctx, false)
	p.inSync = true
	w.SetInSync()
	p.speakerReplaced()
	st.deliver(p, map[netip.Prefix][]netip.Addr{}, true)
	p.sync(ctx, false)
	if p.inSync || w.inSync {
		t.Fatalf("after the speaker was replaced: programmer in sync %v, writer in sync %v; want neither", p.inSync, w.inSync)
	}
}

// TestProgrammerBacksOff: a route the kernel keeps refusing is asked again after 1, 2, 4 … s, not
// every second; the status counts it learned but not installed and says why; a pass that goes
// through ends the back-off.
func TestProgrammerBacksOff(t *testing.T) {
	w := newFakeWriter()
	bad, good := netip.MustParsePrefix("198.18.1.0/26"), netip.MustParsePrefix("198.18.2.0/26")
	w.failing = map[netip.Prefix]bool{bad: true}
	p, st := newTestProgrammer(w, underlay())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.run(ctx, 3600e9, func() bool { return false }); close(done) }()
	defer func() { cancel(); <-done }()
	st.deliver(p, map[netip.Prefix][]netip.Addr{bad: addrs("192.0.2.2"), good: addrs("192.0.2.2")}, true)
	waitFor(t, func() bool { return p.appliedOnce() })
	first := w.applyCount()
	time.Sleep(6500 * time.Millisecond)
	// Every second would be 6 more; 1, 2 then 4 s apart is 2 or 3.
	if n := w.applyCount() - first; n < 2 || n > 3 {
		t.Errorf("%d applies in 6.5 s of a failing route, want 2 or 3 (1 s, 2 s, 4 s apart)", n)
	}
	if s := p.Stats(); s.Learned != 2 || s.Installed != 1 || !strings.Contains(s.LastError, bad.String()) {
		t.Errorf("stats = %+v, want 2 learned, 1 installed, an error naming %s", s, bad)
	}
	// A second route failing is news: it is tried again after 1 s, then 2, not after the 8 s
	// the first one's back-off has reached.
	bad2 := netip.MustParsePrefix("198.18.4.0/26")
	w.mu.Lock()
	w.failing[bad2] = true
	w.mu.Unlock()
	before := w.applyCount()
	st.deliver(p, map[netip.Prefix][]netip.Addr{bad2: addrs("192.0.2.2")}, false)
	time.Sleep(4500 * time.Millisecond)
	// The polls are a second apart: the retries come 1–2 s and 3–4 s after the delivery.
	if n := w.applyCount() - before; n < 3 {
		t.Errorf("%d applies in 4.5 s after a new route failed, want 3 (the delivery, then 1 s and 2 s apart)", n)
	}
	w.mu.Lock()
	w.failing = nil
	w.mu.Unlock()
	// A new delivery applies at once, whatever the back-off, and its success ends it.
	st.deliver(p, map[netip.Prefix][]netip.Addr{netip.MustParsePrefix("198.18.3.0/26"): addrs("192.0.2.2")}, false)
	waitFor(t, func() bool { s := p.Stats(); return s.Installed == 4 && s.LastError == "" })
	n := w.applyCount()
	time.Sleep(1500 * time.Millisecond)
	if got := w.applyCount(); got != n {
		t.Errorf("%d applies after everything went in", got-n)
	}
}

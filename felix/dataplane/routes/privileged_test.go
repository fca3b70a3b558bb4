package routes

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/terracenet/terrace/internal/nstest"
)

func handleIn(t testing.TB, ns string) *netlink.Handle {
	t.Helper()
	_, h := nstest.Handle(t, ns)
	return h
}

// batchedIn opens a batching handle in the named namespace.
func batchedIn(t testing.TB, ns string) *Batched {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	mustT(t, err)
	t.Cleanup(func() { nsh.Close() })
	b, err := NewBatched(nsh)
	mustT(t, err)
	t.Cleanup(b.Close)
	return b
}

// netlinkKinds are the two ways the writer reaches the kernel: a plain handle (one request per
// route) and a Batched one; the privileged tests run against both.
var netlinkKinds = []struct {
	name string
	open func(testing.TB, string) Netlink
}{
	{"one-by-one", func(t testing.TB, ns string) Netlink { return handleIn(t, ns) }},
	{"batched", func(t testing.TB, ns string) Netlink { return batchedIn(t, ns) }},
}

func routesOf(t testing.TB, ns string, args ...string) string {
	t.Helper()
	var lines []string
	for _, fam := range []string{"-4", "-6"} {
		out := nstest.Run(t, ns, append([]string{"ip", fam, "-o", "route", "show"}, args...)...)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return strings.Join(lines, "\n")
}

// TestRealRoutes programs device, blackhole and ECMP routes (IPv4 and IPv6) through netlink in a
// fresh namespace, tampers with them using ip(8) and checks Resync repairs them while routes of
// other protocols, including one for the same prefix, survive.
func TestRealRoutes(t *testing.T) {
	for _, k := range netlinkKinds {
		t.Run(k.name, func(t *testing.T) { testRealRoutes(t, k.open) })
	}
}

func testRealRoutes(t *testing.T, open func(testing.TB, string) Netlink) {
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "trc0123456789a", "type", "veth", "peer", "name", "wl0"},
		{"ip", "link", "set", "trc0123456789a", "up"},
		{"ip", "link", "set", "wl0", "up"},
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "under1", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "under0"},
		{"ip", "addr", "add", "2001:db8::1/64", "dev", "under0", "nodad"},
		{"ip", "route", "add", "198.18.3.0/26", "via", "192.0.2.9", "proto", "static"},
		{"ip", "route", "add", "198.18.0.0/16", "via", "192.0.2.9"},
	} {
		nstest.Run(t, ns, c...)
	}
	h := open(t, ns)
	local, err := New(h, Config{Protocol: ProtocolTerrace})
	mustT(t, err)
	bgp, err := New(h, Config{Protocol: ProtocolTerraceBGP})
	mustT(t, err)
	local.SetInSync()
	bgp.SetInSync()
	mustT(t, local.Set(pfx("198.18.0.5/32"), Target{Dev: "trc0123456789a"}))
	mustT(t, local.Set(pfx("2001:db8:1000::5/128"), Target{Dev: "trc0123456789a"}))
	mustT(t, local.Set(pfx("198.18.1.0/26"), Target{Blackhole: true}))
	mustT(t, local.Set(pfx("2001:db8:1000:2::/122"), Target{Blackhole: true}))
	mustT(t, local.Set(pfx("198.18.3.0/26"), Target{Blackhole: true})) // held by a static route
	mustT(t, bgp.Set(pfx("198.18.2.0/26"), Target{Gateways: Via(addr("192.0.2.2"), addr("192.0.2.3"))}))
	mustT(t, bgp.Set(pfx("198.18.4.0/26"), Target{Gateways: Via(addr("192.0.2.4"))}))
	mustT(t, bgp.Set(pfx("2001:db8:1000:1::/64"), Target{Gateways: Via(addr("2001:db8::2"), addr("2001:db8::3"))}))
	mustT(t, local.Apply(ctx))
	mustT(t, bgp.Apply(ctx))

	if got := local.Conflicts(); len(got) != 1 || got[0] != pfx("198.18.3.0/26") {
		t.Fatalf("conflicts = %v", got)
	}
	foreign := routesOf(t, ns, "proto", "static") + "|" + routesOf(t, ns, "proto", "boot")
	if !strings.Contains(foreign, "198.18.3.0/26 via 192.0.2.9") || !strings.Contains(foreign, "198.18.0.0/16 via 192.0.2.9") {
		t.Fatalf("foreign routes missing: %s", foreign)
	}
	p80 := routesOf(t, ns, "proto", "80")
	for _, want := range []string{
		"198.18.0.5 dev trc0123456789a scope link",
		"blackhole 198.18.1.0/26",
		"2001:db8:1000::5 dev trc0123456789a",
		"blackhole 2001:db8:1000:2::/122",
	} {
		if !strings.Contains(p80, want) {
			t.Errorf("proto 80 routes lack %q:\n%s", want, p80)
		}
	}
	p81 := routesOf(t, ns, "proto", "81")
	for _, want := range []string{"198.18.2.0/26", "nexthop via 192.0.2.2", "nexthop via 192.0.2.3", "198.18.4.0/26 via 192.0.2.4", "2001:db8:1000:1::/64", "nexthop via 2001:db8::3"} {
		if !strings.Contains(p81, want) {
			t.Errorf("proto 81 routes lack %q:\n%s", want, p81)
		}
	}

	t.Logf("proto 80:\n%s\nproto 81:\n%s", p80, p81)

	// A fresh writer reading the kernel finds nothing to change.
	rec := &recording{Netlink: h}
	fresh, _ := New(rec, Config{Protocol: ProtocolTerraceBGP})
	mustT(t, fresh.Set(pfx("198.18.2.0/26"), Target{Gateways: Via(addr("192.0.2.3"), addr("192.0.2.2"))}))
	mustT(t, fresh.Set(pfx("198.18.4.0/26"), Target{Gateways: Via(addr("192.0.2.4"))}))
	mustT(t, fresh.Set(pfx("2001:db8:1000:1::/64"), Target{Gateways: Via(addr("2001:db8::2"), addr("2001:db8::3"))}))
	mustT(t, fresh.Apply(ctx))
	if rec.writes != 0 {
		t.Fatalf("fresh writer rewrote %d routes in a clean kernel", rec.writes)
	}

	// Tamper, then repair.
	nstest.Run(t, ns, "ip", "route", "del", "198.18.0.5/32", "proto", "80")
	nstest.Run(t, ns, "ip", "route", "replace", "198.18.2.0/26", "via", "192.0.2.2", "proto", "81")
	nstest.Run(t, ns, "ip", "-6", "route", "del", "2001:db8:1000:1::/64", "proto", "81")
	nstest.Run(t, ns, "ip", "route", "add", "198.18.77.0/24", "via", "192.0.2.2", "proto", "81")
	mustT(t, local.Resync(ctx))
	mustT(t, bgp.Resync(ctx))
	if got := routesOf(t, ns, "proto", "80"); got != p80 {
		t.Errorf("proto 80 after resync:\n%s\nwant:\n%s", got, p80)
	}
	if got := routesOf(t, ns, "proto", "81"); got != p81 {
		t.Errorf("proto 81 after resync:\n%s\nwant:\n%s", got, p81)
	}
	if got := routesOf(t, ns, "proto", "static") + "|" + routesOf(t, ns, "proto", "boot"); got != foreign {
		t.Errorf("foreign routes changed:\n%s\nwant:\n%s", got, foreign)
	}
}

// TestRealPinnedGateways programs what underlays without a global next hop give: an IPv6 route
// via a link-local router (alone, and the same fe80::1 on two links as ECMP, as unnumbered ToRs
// do) and IPv4 routes via onlink gateways, through both kinds of handle. The kernel must take
// them, and a fresh writer must read them back as they were asked for: nothing to rewrite.
func TestRealPinnedGateways(t *testing.T) {
	for _, k := range netlinkKinds {
		t.Run(k.name, func(t *testing.T) { testRealPinnedGateways(t, k.open) })
	}
}

func testRealPinnedGateways(t *testing.T, open func(testing.TB, string) Netlink) {
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "tor0"},
		{"ip", "link", "add", "under1", "type", "veth", "peer", "name", "tor1"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "tor0", "up"},
		{"ip", "link", "set", "under1", "up"},
		{"ip", "link", "set", "tor1", "up"},
	} {
		nstest.Run(t, ns, c...)
	}
	h := open(t, ns)
	links := handleIn(t, ns)
	idx := func(name string) int {
		l, err := links.LinkByName(name)
		mustT(t, err)
		return l.Attrs().Index
	}
	u0, u1 := idx("under0"), idx("under1")
	want := map[netip.Prefix]Target{
		pfx("2001:db8:1000:5::/64"): {Gateways: []Gateway{{Addr: addr("fe80::1"), LinkIndex: u0}}},
		pfx("2001:db8:1000:6::/64"): {Gateways: []Gateway{{Addr: addr("fe80::1"), LinkIndex: u1}, {Addr: addr("fe80::1"), LinkIndex: u0}}},
		pfx("198.18.5.0/26"):        {Gateways: []Gateway{{Addr: addr("198.51.100.1"), LinkIndex: u0, OnLink: true}}},
		pfx("198.18.6.0/26"): {Gateways: []Gateway{
			{Addr: addr("198.51.100.1"), LinkIndex: u0, OnLink: true}, {Addr: addr("198.51.100.2"), LinkIndex: u1, OnLink: true}}},
	}
	w, err := New(h, Config{Protocol: ProtocolTerraceBGP})
	mustT(t, err)
	w.SetInSync()
	for p, tg := range want {
		mustT(t, w.Set(p, tg))
	}
	mustT(t, w.Apply(t.Context()))
	got := routesOf(t, ns, "proto", "81")
	for _, line := range []string{
		"2001:db8:1000:5::/64 via fe80::1 dev under0",
		"198.18.5.0/26 via 198.51.100.1 dev under0 onlink",
		"nexthop via 198.51.100.1 dev under0 weight 1 onlink",
		"nexthop via 198.51.100.2 dev under1 weight 1 onlink",
		"nexthop via fe80::1 dev under0 weight 1",
		"nexthop via fe80::1 dev under1 weight 1",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("proto 81 routes lack %q:\n%s", line, got)
		}
	}

	rec := &recording{Netlink: h}
	fresh, err := New(rec, Config{Protocol: ProtocolTerraceBGP})
	mustT(t, err)
	for p, tg := range want {
		mustT(t, fresh.Set(p, tg))
	}
	mustT(t, fresh.Apply(t.Context()))
	if rec.writes != 0 {
		t.Errorf("a fresh writer rewrote %d of the routes it had asked for", rec.writes)
	}

	// Asked without onlink, the same gateway is another route: the writer replaces it (and the
	// kernel refuses it, the gateway being on none of under0's subnets).
	mustT(t, fresh.Set(pfx("198.18.5.0/26"), Target{Gateways: []Gateway{{Addr: addr("198.51.100.1"), LinkIndex: u0}}}))
	if err := fresh.Apply(t.Context()); err == nil {
		t.Errorf("the kernel took a gateway on no connected subnet without onlink:\n%s", routesOf(t, ns, "proto", "81"))
	}
	if rec.writes != 1 {
		t.Errorf("writes after changing one route = %d, want 1", rec.writes)
	}
}

type recording struct {
	Netlink
	writes int
}

func (r *recording) RouteAdd(rt *netlink.Route) error { r.writes++; return r.Netlink.RouteAdd(rt) }
func (r *recording) RouteReplace(rt *netlink.Route) error {
	r.writes++
	return r.Netlink.RouteReplace(rt)
}
func (r *recording) RouteDel(rt *netlink.Route) error { r.writes++; return r.Netlink.RouteDel(rt) }

// TestRealDeleteEveryKind deletes a wanted device route (scope link), a blackhole and an ECMP route,
// and stale routes of our protocol of types the writer never makes (unreachable, prohibit), and
// checks the kernel no longer has them: a delete that does not match the route's scope or type is
// answered "no such process", which must not be mistaken for "already gone".
func TestRealDeleteEveryKind(t *testing.T) {
	for _, k := range netlinkKinds {
		t.Run(k.name, func(t *testing.T) { testRealDeleteEveryKind(t, k.open) })
	}
}

func testRealDeleteEveryKind(t *testing.T, open func(testing.TB, string) Netlink) {
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "trc0a1b2c3d4e5", "type", "veth", "peer", "name", "wl0"},
		{"ip", "link", "set", "trc0a1b2c3d4e5", "up"},
		{"ip", "link", "set", "wl0", "up"},
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "under1", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "under0"},
		{"ip", "route", "add", "unreachable", "198.18.3.0/26", "proto", "80"},
		{"ip", "route", "add", "prohibit", "198.18.4.0/26", "proto", "80"},
	} {
		nstest.Run(t, ns, c...)
	}
	h := open(t, ns)
	w, err := New(h, Config{Protocol: ProtocolTerrace})
	mustT(t, err)
	want := map[netip.Prefix]Target{
		pfx("198.18.0.5/32"): {Dev: "trc0a1b2c3d4e5"},
		pfx("198.18.1.0/26"): {Blackhole: true},
		pfx("198.18.2.0/26"): {Gateways: Via(addr("192.0.2.2"), addr("192.0.2.3"))},
	}
	for p, tg := range want {
		mustT(t, w.Set(p, tg))
	}
	mustT(t, w.Apply(ctx))
	w.SetInSync()
	for p := range want {
		// ip(8) prints a host route without its /32.
		if got := routesOf(t, ns, "proto", "80"); !strings.Contains(got, strings.TrimSuffix(p.String(), "/32")) {
			t.Fatalf("%s not installed:\n%s", p, got)
		}
		w.Delete(p)
	}
	mustT(t, w.Apply(ctx))
	if got := routesOf(t, ns, "proto", "80"); got != "" {
		t.Fatalf("deleted routes still in the kernel:\n%s", got)
	}
}

// TestBatchedPerRouteErrors: in one batch larger than a sendmsg's share, each route gets its own
// answer; a failing route neither hides nor stops the others.
func TestBatchedPerRouteErrors(t *testing.T) {
	ns := underlayNS(t)
	b := batchedIn(t, ns)
	route := func(p string, gw string) *netlink.Route {
		return &netlink.Route{Dst: ipNet(pfx(p)), Gw: net.ParseIP(gw), Protocol: ProtocolTerraceBGP, Family: netlink.FAMILY_V4}
	}
	var ops []RouteOp
	base := netip.MustParseAddr("198.18.0.0")
	for i := range 3*batchSize + 7 {
		gw := "192.0.2.2"
		if i == 5 || i == batchSize+1 {
			gw = "203.0.113.9" // no route to this gateway
		}
		ops = append(ops, RouteOp{Kind: OpAdd, Route: route(netip.PrefixFrom(base, 32).String(), gw)})
		base = base.Next()
	}
	ops = append(ops,
		RouteOp{Kind: OpAdd, Route: route("198.18.0.0/32", "192.0.2.2")},     // exists by now
		RouteOp{Kind: OpDel, Route: route("198.19.9.0/24", "192.0.2.2")},     // never existed
		RouteOp{Kind: OpReplace, Route: route("198.18.0.1/32", "192.0.2.3")}, // moves
	)
	errs := b.RouteBatch(ops)
	if len(errs) != len(ops) {
		t.Fatalf("%d answers for %d ops", len(errs), len(ops))
	}
	n := len(ops)
	for i, err := range errs {
		var want error
		switch i {
		case 5, batchSize + 1:
			want = syscall.ENETUNREACH
		case n - 3:
			want = syscall.EEXIST
		case n - 2:
			want = syscall.ESRCH
		}
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("op %d: %v, want %v", i, err, want)
		}
	}
	got := routesOf(t, ns, "proto", "81")
	if c := strings.Count(got, "\n") + 1; c != n-3-2 {
		t.Errorf("%d routes installed, want %d", c, n-3-2)
	}
	if !strings.Contains(got, "198.18.0.1 via 192.0.2.3") {
		t.Errorf("replaced route not moved:\n%s", got)
	}
	// Only a batch's last request asks for an acknowledgement: when that one fails, and when it
	// is the only one, the answers must still be right.
	for _, tc := range []struct {
		ops  []RouteOp
		want []error
	}{
		{[]RouteOp{{Kind: OpAdd, Route: route("198.19.0.1/32", "192.0.2.2")}, {Kind: OpAdd, Route: route("198.19.0.2/32", "203.0.113.9")}},
			[]error{nil, syscall.ENETUNREACH}},
		{[]RouteOp{{Kind: OpAdd, Route: route("198.19.0.1/32", "192.0.2.2")}}, []error{syscall.EEXIST}},
		{[]RouteOp{{Kind: OpDel, Route: route("198.19.0.1/32", "192.0.2.2")}}, []error{nil}},
	} {
		errs := b.RouteBatch(tc.ops)
		for i := range tc.want {
			if !errors.Is(errs[i], tc.want[i]) && !(tc.want[i] == nil && errs[i] == nil) {
				t.Errorf("batch %v: op %d: %v, want %v", tc.ops, i, errs[i], tc.want[i])
			}
		}
	}
	if got := routesOf(t, ns, "proto", "81"); strings.Contains(got, "198.19.0.") {
		t.Errorf("routes of the small batches left:\n%s", got)
	}
}

// TestRealOwnRouteHoldingTheKey: the kernel holds routes of ours that the writer does not know
// of (as after lost acknowledgements); adding them meets EEXIST, and the writer recognises its
// own routes by a FIB match instead of reporting conflicts; a static route stays a conflict.
func TestRealOwnRouteHoldingTheKey(t *testing.T) {
	for _, k := range netlinkKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := underlayNS(t)
			w, err := New(k.open(t, ns), Config{Protocol: ProtocolTerraceBGP})
			mustT(t, err)
			w.SetInSync()
			mustT(t, w.Apply(ctx)) // reads the table while it is empty
			for _, c := range [][]string{
				{"ip", "route", "add", "198.18.1.0/26", "via", "192.0.2.2", "proto", "81"},
				{"ip", "route", "add", "198.18.2.0/26", "via", "192.0.2.9", "proto", "81"},
				{"ip", "route", "add", "198.18.3.0/26", "via", "192.0.2.2", "proto", "static"},
				{"ip", "route", "add", "blackhole", "198.18.4.0/26", "proto", "81"},
				{"ip", "-6", "route", "add", "blackhole", "2001:db8:1000::/122", "proto", "81"},
			} {
				nstest.Run(t, ns, c...)
			}
			for _, p := range []string{"198.18.1.0/26", "198.18.2.0/26", "198.18.3.0/26"} {
				mustT(t, w.Set(pfx(p), Target{Gateways: Via(addr("192.0.2.2"))}))
			}
			mustT(t, w.Set(pfx("198.18.4.0/26"), Target{Blackhole: true}))
			mustT(t, w.Set(pfx("2001:db8:1000::/122"), Target{Blackhole: true}))
			mustT(t, w.Apply(ctx)) // also brings 198.18.2.0/26 to the wanted gateway
			if diff := cmp.Diff([]netip.Prefix{pfx("198.18.3.0/26")}, w.Conflicts(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Fatalf("conflicts (-want +got):\n%s", diff)
			}
			want := "198.18.1.0/26 via 192.0.2.2 dev under0\n198.18.2.0/26 via 192.0.2.2 dev under0\nblackhole 198.18.4.0/26\nblackhole 2001:db8:1000::/122 dev lo metric 1024 pref medium"
			if got := routesOf(t, ns, "proto", "81"); got != want {
				t.Fatalf("proto 81 routes:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// underlayNS is a fresh namespace with an uplink, under0 with 192.0.2.1/24, for gateway routes.
func underlayNS(t *testing.T) string {
	t.Helper()
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "under1", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "under0"},
	} {
		nstest.Run(t, ns, c...)
	}
	return ns
}

// TestRealDownDevice: a route to a device that is down is pending, not a failure, and goes in
// once the device is up (the next Apply, as the agent's pending poll does).
func TestRealDownDevice(t *testing.T) {
	for _, k := range netlinkKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := underlayNS(t)
			nstest.Run(t, ns, "ip", "link", "add", "trc0000000001", "type", "veth", "peer", "name", "pod1")
			w, err := New(k.open(t, ns), Config{Protocol: ProtocolTerrace})
			mustT(t, err)
			w.SetInSync()
			mustT(t, w.Set(pfx("198.18.0.7/32"), Target{Dev: "trc0000000001"}))
			mustT(t, w.Set(pfx("198.18.0.8/32"), Target{Dev: "under0"}))
			if err := w.Apply(ctx); err != nil {
				t.Fatalf("Apply with a down device failed: %v", err)
			}
			if diff := cmp.Diff([]netip.Prefix{pfx("198.18.0.7/32")}, w.Pending(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Fatalf("pending (-want +got):\n%s", diff)
			}
			if got := routesOf(t, ns, "proto", "80"); !strings.Contains(got, "198.18.0.8 dev under0") {
				t.Fatalf("the other route is missing:\n%s", got)
			}
			nstest.Run(t, ns, "ip", "link", "set", "trc0000000001", "up")
			mustT(t, w.Apply(ctx))
			if got := routesOf(t, ns, "proto", "80"); !strings.Contains(got, "198.18.0.7 dev trc0000000001") || len(w.Pending()) != 0 {
				t.Fatalf("after the device came up: pending %v, routes:\n%s", w.Pending(), got)
			}
		})
	}
}

// TestRealMetric: a writer with a metric shares no key with another owner's route at the
// kernel's default metric (no conflict; the static route, metric 0, wins the lookup). Our
// protocol's routes at other metrics (an earlier version's, at 0 and IPv6's 1024) go as soon as
// ours holds the prefix, the others once in sync; when the kernel's "any metric" delete of a
// metric-0 leftover meets ours instead (the leftover went meanwhile), ours is put back in the same
// Apply; and a delete of ours names its metric, never taking a route at another one.
func TestRealMetric(t *testing.T) {
	for _, k := range netlinkKinds {
		t.Run(k.name, func(t *testing.T) {
			ns := underlayNS(t)
			for _, c := range [][]string{
				{"ip", "route", "add", "198.18.1.0/26", "via", "192.0.2.2", "proto", "static"},
				{"ip", "route", "add", "198.18.2.0/26", "via", "192.0.2.9", "proto", "81"},
				{"ip", "route", "add", "198.18.3.0/26", "via", "192.0.2.2", "proto", "81", "metric", "32"},
				{"ip", "route", "add", "198.18.4.0/26", "via", "192.0.2.9", "proto", "81"},
				{"ip", "-6", "route", "add", "blackhole", "2001:db8:1000::/122", "proto", "81"},
			} {
				nstest.Run(t, ns, c...)
			}
			w, err := New(k.open(t, ns), Config{Protocol: ProtocolTerraceBGP, Metric: 32})
			mustT(t, err)
			via2 := Target{Gateways: Via(addr("192.0.2.2"))}
			mustT(t, w.Set(pfx("198.18.1.0/26"), via2))
			mustT(t, w.Set(pfx("198.18.2.0/26"), via2))
			mustT(t, w.Set(pfx("2001:db8:1000::/122"), Target{Blackhole: true}))
			mustT(t, w.Apply(ctx))
			if c := w.Conflicts(); len(c) != 0 || w.Installed() != 3 {
				t.Fatalf("conflicts %v, installed %d of 3", c, w.Installed())
			}
			if got := nstest.Run(t, ns, "ip", "route", "get", "198.18.1.1"); !strings.Contains(got, "via 192.0.2.2") {
				t.Errorf("lookup of the static route's prefix: %s", got)
			}
			want := "198.18.1.0/26 via 192.0.2.2 dev under0 metric 32\n198.18.2.0/26 via 192.0.2.2 dev under0 metric 32\n" +
				"198.18.3.0/26 via 192.0.2.2 dev under0 metric 32\n198.18.4.0/26 via 192.0.2.9 dev under0\n" +
				"blackhole 2001:db8:1000::/122 dev lo metric 32 pref medium"
			if got := routesOf(t, ns, "proto", "81"); got != want {
				t.Fatalf("before in sync:\n%s\nwant:\n%s", got, want)
			}
			// The waiting leftover goes behind the writer's back; then the prefix is asked for.
			nstest.Run(t, ns, "ip", "route", "del", "198.18.4.0/26", "proto", "81", "metric", "0")
			mustT(t, w.Set(pfx("198.18.4.0/26"), via2))
			mustT(t, w.Apply(ctx))
			if got := routesOf(t, ns, "proto", "81"); !strings.Contains(got, "198.18.4.0/26 via 192.0.2.2 dev under0 metric 32") {
				t.Fatalf("our route lost to the delete of a leftover that was gone:\n%s", got)
			}
			// Ours goes at its metric only: a route at metric 7 the writer has not read stays.
			mustT(t, w.Set(pfx("198.18.6.0/26"), via2))
			mustT(t, w.Apply(ctx))
			nstest.Run(t, ns, "ip", "route", "add", "198.18.6.0/26", "via", "192.0.2.9", "proto", "81", "metric", "7")
			w.Delete(pfx("198.18.6.0/26"))
			mustT(t, w.Apply(ctx))
			if got := routesOf(t, ns, "proto", "81"); !strings.Contains(got, "198.18.6.0/26 via 192.0.2.9 dev under0 metric 7") ||
				strings.Contains(got, "198.18.6.0/26 via 192.0.2.2") {
				t.Fatalf("after deleting ours for 198.18.6.0/26:\n%s", got)
			}
			mustT(t, w.Resync(ctx)) // reads the metric-7 route: a leftover, kept until in sync
			w.SetInSync()
			mustT(t, w.Apply(ctx))
			want = "198.18.1.0/26 via 192.0.2.2 dev under0 metric 32\n198.18.2.0/26 via 192.0.2.2 dev under0 metric 32\n" +
				"198.18.4.0/26 via 192.0.2.2 dev under0 metric 32\nblackhole 2001:db8:1000::/122 dev lo metric 32 pref medium"
			if got := routesOf(t, ns, "proto", "81"); got != want {
				t.Fatalf("in sync:\n%s\nwant:\n%s", got, want)
			}
			if got := routesOf(t, ns, "proto", "static"); got != "198.18.1.0/26 via 192.0.2.2 dev under0" {
				t.Fatalf("the static route: %q", got)
			}
			if w.Installed() != 4 {
				t.Errorf("installed %d, want 4", w.Installed())
			}
			// Drift at our metric is repaired; a route at another metric is a leftover again.
			nstest.Run(t, ns, "ip", "route", "add", "198.18.6.0/26", "via", "192.0.2.2", "proto", "81", "metric", "7")
			nstest.Run(t, ns, "ip", "route", "del", "198.18.1.0/26", "proto", "81", "metric", "32")
			mustT(t, w.Resync(ctx))
			if got := routesOf(t, ns, "proto", "81"); got != want {
				t.Fatalf("after a resync:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

package routes

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var ctx = context.Background()

func mustT(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func newWriter(t *testing.T, f *fakeNetlink, proto netlink.RouteProtocol) *Writer {
	t.Helper()
	w, err := New(f, Config{Protocol: proto})
	mustT(t, err)
	return w
}

func TestApplyNoopAndChange(t *testing.T) {
	f := newFakeNetlink()
	f.links["trc0123456789a"] = 7
	w := newWriter(t, f, ProtocolTerrace)
	mustT(t, w.Set(pfx("198.18.0.5/32"), Target{Dev: "trc0123456789a"}))
	mustT(t, w.Set(pfx("198.18.0.0/26"), Target{Blackhole: true}))
	mustT(t, w.Set(pfx("2001:db8:1000::/122"), Target{Blackhole: true}))
	mustT(t, w.Set(pfx("198.18.1.0/26"), Target{Gateways: Via(addr("192.0.2.3"), addr("192.0.2.2"), addr("192.0.2.2"))}))
	mustT(t, w.Apply(ctx))
	want := []string{
		"add 198.18.0.0/26 proto 80 blackhole",
		"add 198.18.0.5/32 proto 80 dev 7",
		"add 198.18.1.0/26 proto 80 nexthop 192.0.2.2 nexthop 192.0.2.3",
		"add 2001:db8:1000::/122 proto 80 blackhole",
	}
	if diff := cmp.Diff(want, f.calls); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}
	f.calls = nil
	mustT(t, w.Apply(ctx))
	mustT(t, w.Resync(ctx))
	if len(f.calls) != 0 {
		t.Fatalf("no-op apply/resync made calls: %v", f.calls)
	}
	// Changing one route's gateways replaces that route only.
	mustT(t, w.Set(pfx("198.18.1.0/26"), Target{Gateways: Via(addr("192.0.2.2"))}))
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"replace 198.18.1.0/26 proto 80 via 192.0.2.2"}, f.calls); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}
}

func TestPendingDevice(t *testing.T) {
	f := newFakeNetlink()
	w := newWriter(t, f, ProtocolTerrace)
	mustT(t, w.Set(pfx("198.18.0.5/32"), Target{Dev: "trcabc"}))
	mustT(t, w.Apply(ctx))
	if len(f.calls) != 0 || len(w.Pending()) != 1 {
		t.Fatalf("calls %v pending %v", f.calls, w.Pending())
	}
	f.links["trcabc"] = 9
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"add 198.18.0.5/32 proto 80 dev 9"}, f.calls); diff != "" {
		t.Fatal(diff)
	}
	if len(w.Pending()) != 0 {
		t.Fatalf("still pending: %v", w.Pending())
	}
	// The device is re-created with a new index: its routes follow.
	f.links["trcabc"] = 11
	f.calls = nil
	w.DeviceChanged("trcabc")
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"replace 198.18.0.5/32 proto 80 dev 11"}, f.calls); diff != "" {
		t.Fatal(diff)
	}
}

func TestForeignRoutesUntouched(t *testing.T) {
	f := newFakeNetlink()
	f.routes = []netlink.Route{
		foreign("198.18.0.0/26", unix.RTPROT_STATIC, "192.0.2.9"), // same key as one we want
		foreign("198.51.100.0/24", unix.RTPROT_BOOT, "192.0.2.1"),
		foreign("198.18.9.0/24", ProtocolTerraceBGP, "192.0.2.7"), // the other Terrace owner
	}
	orig := append([]netlink.Route{}, f.routes...)
	w := newWriter(t, f, ProtocolTerrace)
	w.SetInSync()
	mustT(t, w.Set(pfx("198.18.0.0/26"), Target{Blackhole: true}))
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]netip.Prefix{pfx("198.18.0.0/26")}, w.Conflicts(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Fatalf("conflicts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(describeAll(orig), describeAll(f.routes)); diff != "" {
		t.Fatalf("foreign routes changed (-want +got):\n%s", diff)
	}
	// Once the other owner removes its route, ours goes in on the next apply.
	f.routes = f.routes[1:]
	mustT(t, w.Apply(ctx))
	if len(w.Conflicts()) != 0 || f.find(ipNetRoute("198.18.0.0/26")) < 0 {
		t.Fatalf("route not added after conflict cleared: %v", describeAll(f.routes))
	}
}

func ipNetRoute(s string) *netlink.Route {
	return &netlink.Route{Dst: ipNet(pfx(s)), Table: TableMain}
}

func describeAll(rs []netlink.Route) []string {
	var out []string
	for i := range rs {
		out = append(out, describe(&rs[i]))
	}
	return out
}

func TestDeletesHeldUntilInSync(t *testing.T) {
	f := newFakeNetlink()
	stale := foreign("198.18.3.0/26", ProtocolTerrace, "")
	stale.Type = unix.RTN_BLACKHOLE
	f.routes = []netlink.Route{stale, foreign("198.51.100.0/24", unix.RTPROT_BOOT, "192.0.2.1")}
	w := newWriter(t, f, ProtocolTerrace)
	mustT(t, w.Set(pfx("198.18.0.0/26"), Target{Blackhole: true}))
	mustT(t, w.Apply(ctx))
	if len(f.routes) != 3 {
		t.Fatalf("stale route removed before in-sync: %v", describeAll(f.routes))
	}
	w.SetInSync()
	f.calls = nil
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"del 198.18.3.0/26 proto 80 blackhole"}, f.calls); diff != "" {
		t.Fatal(diff)
	}
	want := []string{"198.51.100.0/24 proto 3 via 192.0.2.1", "198.18.0.0/26 proto 80 blackhole"}
	if diff := cmp.Diff(want, describeAll(f.routes)); diff != "" {
		t.Fatal(diff)
	}
	// An explicit Delete removes ours.
	w.Delete(pfx("198.18.0.0/26"))
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff(want[:1], describeAll(f.routes)); diff != "" {
		t.Fatal(diff)
	}
}

// TestOnlyAdoptedRoutesWaitForSync: before in-sync only the routes found at start (a previous
// run's, perhaps still live) are kept; a route asked for in this run and then dropped (a BGP
// withdrawal seconds after a restart) goes at once, also one that was adopted and asked for again.
func TestOnlyAdoptedRoutesWaitForSync(t *testing.T) {
	f := newFakeNetlink()
	f.routes = []netlink.Route{
		foreign("198.18.3.0/26", ProtocolTerraceBGP, "192.0.2.9"), // stale, never asked for
		foreign("198.18.4.0/26", ProtocolTerraceBGP, "192.0.2.9"), // asked for again below
	}
	w := newWriter(t, f, ProtocolTerraceBGP)
	gw := Target{Gateways: Via(addr("192.0.2.9"))}
	mustT(t, w.Set(pfx("198.18.0.0/26"), gw))
	mustT(t, w.Apply(ctx))
	mustT(t, w.Set(pfx("198.18.4.0/26"), gw))
	mustT(t, w.Apply(ctx))
	w.Delete(pfx("198.18.0.0/26"))
	w.Delete(pfx("198.18.4.0/26"))
	f.calls = nil
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"del 198.18.0.0/26 proto 81 dev 0", "del 198.18.4.0/26 proto 81 dev 0"}, f.calls); diff != "" {
		t.Fatalf("deletes before in-sync (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"198.18.3.0/26 proto 81 via 192.0.2.9"}, describeAll(f.routes)); diff != "" {
		t.Fatalf("routes before in-sync (-want +got):\n%s", diff)
	}
	// A resync before in-sync reads the table again: what this run removed stays removed, and the
	// adopted route is still kept.
	mustT(t, w.Resync(ctx))
	if len(f.routes) != 1 {
		t.Fatalf("after a resync: %v", describeAll(f.routes))
	}
	w.SetInSync()
	f.calls = nil
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"del 198.18.3.0/26 proto 81 dev 0"}, f.calls); diff != "" {
		t.Fatal(diff)
	}
}

func TestResyncRepairsDrift(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(f *fakeNetlink)
		want   []string
	}{
		{"route deleted", func(f *fakeNetlink) { f.routes = f.routes[1:] }, []string{"add 198.18.0.0/26 proto 81 via 192.0.2.2"}},
		{"gateway changed", func(f *fakeNetlink) { f.routes[1].MultiPath = f.routes[1].MultiPath[:1] },
			[]string{"replace 2001:db8:1000::/64 proto 81 nexthop 2001:db8::2 nexthop 2001:db8::3"}},
		{"extra route of ours", func(f *fakeNetlink) {
			f.routes = append(f.routes, foreign("198.18.200.0/24", ProtocolTerraceBGP, "192.0.2.9"))
		}, []string{"del 198.18.200.0/24 proto 81 dev 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeNetlink()
			w := newWriter(t, f, ProtocolTerraceBGP)
			w.SetInSync()
			mustT(t, w.Set(pfx("198.18.0.0/26"), Target{Gateways: Via(addr("192.0.2.2"))}))
			mustT(t, w.Set(pfx("2001:db8:1000::/64"), Target{Gateways: Via(addr("2001:db8::3"), addr("2001:db8::2"))}))
			mustT(t, w.Apply(ctx))
			tc.tamper(f)
			f.calls = nil
			mustT(t, w.Apply(ctx))
			if len(f.calls) != 0 {
				t.Fatalf("apply without resync looked at the kernel: %v", f.calls)
			}
			mustT(t, w.Resync(ctx))
			if diff := cmp.Diff(tc.want, f.calls); diff != "" {
				t.Fatalf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	w := newWriter(t, newFakeNetlink(), ProtocolTerrace)
	bad := []struct {
		p string
		t Target
	}{
		{"198.18.0.0/26", Target{}},
		{"198.18.0.0/26", Target{Blackhole: true, Dev: "x"}},
		{"198.18.0.0/26", Target{Gateways: Via(addr("2001:db8::1"))}},
		{"2001:db8::/64", Target{Gateways: Via(addr("192.0.2.1"))}},
		{"::ffff:198.18.0.1/128", Target{Blackhole: true}},
		{"2001:db8::/64", Target{Gateways: Via(addr("fe80::1"))}},
		{"2001:db8::/64", Target{Gateways: []Gateway{{Addr: addr("fe80::1%eth0"), LinkIndex: 2}}}},
		{"198.18.0.0/26", Target{Gateways: []Gateway{{Addr: addr("192.0.2.1"), OnLink: true}}}},
		{"198.18.0.0/26", Target{Gateways: []Gateway{{Addr: addr("192.0.2.1"), LinkIndex: -1}}}},
		{"198.18.0.0/26", Target{Dev: "eth0", Gateways: []Gateway{{Addr: addr("192.0.2.1"), LinkIndex: 2}}}},
		{"2001:db8::/64", Target{Gateways: []Gateway{{Addr: addr("fe80::1"), LinkIndex: 2}, {Addr: addr("fe80::1"), LinkIndex: 2, OnLink: true}}}},
		{"198.18.0.0/26", Target{Gateways: []Gateway{{Addr: addr("192.0.2.1")}, {Addr: addr("192.0.2.1"), LinkIndex: 3}}}},
	}
	for _, tc := range bad {
		if err := w.Set(pfx(tc.p), tc.t); err == nil {
			t.Errorf("Set(%s, %+v) accepted", tc.p, tc.t)
		}
	}
	if _, err := New(newFakeNetlink(), Config{}); err == nil {
		t.Error("New without a protocol accepted")
	}
}

// TestMatches: a desired target against kernel routes as read back. The kernel names the outgoing
// interface of every gateway route; it only counts when the target named a device.
func TestMatches(t *testing.T) {
	a, b := addr("192.0.2.2"), addr("192.0.2.3")
	gw := func(x netip.Addr, idx int) kgw { return kgw{addr: x, linkIndex: idx} }
	cases := []struct {
		name string
		t    Target
		link int
		k    kroute
		want bool
	}{
		{"one gateway, kernel names its interface", Target{Gateways: Via(a)}, 0, kroute{gws: []kgw{gw(a, 4)}}, true},
		{"other gateway", Target{Gateways: Via(a)}, 0, kroute{gws: []kgw{gw(b, 4)}}, false},
		{"gateway via the named device", Target{Dev: "d", Gateways: Via(a)}, 4, kroute{gws: []kgw{gw(a, 4)}}, true},
		{"gateway via another device", Target{Dev: "d", Gateways: Via(a)}, 5, kroute{gws: []kgw{gw(a, 4)}}, false},
		{"ECMP same set", Target{Gateways: Via(a, b)}, 0, kroute{gws: []kgw{gw(a, 4), gw(b, 4)}}, true},
		{"ECMP one missing", Target{Gateways: Via(a, b)}, 0, kroute{gws: []kgw{gw(a, 4)}}, false},
		{"ECMP same gateway twice in the kernel", Target{Gateways: Via(a, b)}, 0, kroute{gws: []kgw{gw(a, 4), gw(a, 5)}}, false},
		{"device route", Target{Dev: "d"}, 7, kroute{linkIndex: 7}, true},
		{"device route, other device", Target{Dev: "d"}, 7, kroute{linkIndex: 8}, false},
		{"device route, kernel has a gateway", Target{Dev: "d"}, 7, kroute{linkIndex: 7, gws: []kgw{gw(a, 7)}}, false},
		{"blackhole", Target{Blackhole: true}, 0, kroute{blackhole: true}, true},
		{"blackhole wanted, gateway route there", Target{Blackhole: true}, 0, kroute{gws: []kgw{gw(a, 4)}}, false},
		{"gateway wanted, blackhole there", Target{Gateways: Via(a)}, 0, kroute{blackhole: true}, false},
		{"gateway pinned to its link", Target{Gateways: []Gateway{{Addr: a, LinkIndex: 4}}}, 0, kroute{gws: []kgw{gw(a, 4)}}, true},
		{"gateway pinned, kernel on another link", Target{Gateways: []Gateway{{Addr: a, LinkIndex: 4}}}, 0, kroute{gws: []kgw{gw(a, 5)}}, false},
		{"onlink wanted, kernel's is not", Target{Gateways: []Gateway{{Addr: a, LinkIndex: 4, OnLink: true}}}, 0, kroute{gws: []kgw{gw(a, 4)}}, false},
		{"onlink both", Target{Gateways: []Gateway{{Addr: a, LinkIndex: 4, OnLink: true}}}, 0, kroute{gws: []kgw{{addr: a, linkIndex: 4, onlink: true}}}, true},
		{"kernel's onlink, not wanted", Target{Gateways: Via(a)}, 0, kroute{gws: []kgw{{addr: a, linkIndex: 4, onlink: true}}}, false},
		{"one router on two links", Target{Gateways: []Gateway{{Addr: a, LinkIndex: 4}, {Addr: a, LinkIndex: 5}}}, 0, kroute{gws: []kgw{gw(a, 4), gw(a, 5)}}, true},
		{"one router on two links, one link differs", Target{Gateways: []Gateway{{Addr: a, LinkIndex: 4}, {Addr: a, LinkIndex: 6}}}, 0, kroute{gws: []kgw{gw(a, 4), gw(a, 5)}}, false},
	}
	for _, c := range cases {
		if got := matches(c.t, c.link, c.k); got != c.want {
			t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestOwnRouteHoldingTheKey: when a batch's acknowledgements are lost, an add that did succeed
// looks undone; the next add of the same route meets EEXIST from our own route. The writer reads
// the table again and recognises its own route (protocol and table), keeping it in line, instead of
// reporting a conflict; another protocol's route stays a conflict, and is not read for again.
func TestOwnRouteHoldingTheKey(t *testing.T) {
	tests := []struct {
		name         string
		inKernel     netlink.Route
		wantConflict bool
		wantCalls    []string // what the Apply that meets the route does
		wantNext     []string // and the one after
	}{
		{"ours, as wanted", foreign("198.18.1.0/26", ProtocolTerraceBGP, "192.0.2.2"), false,
			[]string{"add 198.18.1.0/26 proto 81 via 192.0.2.2"}, nil},
		{"ours, another gateway", foreign("198.18.1.0/26", ProtocolTerraceBGP, "192.0.2.9"), false,
			[]string{"add 198.18.1.0/26 proto 81 via 192.0.2.2", "replace 198.18.1.0/26 proto 81 via 192.0.2.2"}, nil},
		{"ours, a blackhole", netlink.Route{Dst: ipNet(pfx("198.18.1.0/26")), Table: TableMain, Protocol: ProtocolTerraceBGP, Type: unix.RTN_BLACKHOLE}, false,
			[]string{"add 198.18.1.0/26 proto 81 via 192.0.2.2", "replace 198.18.1.0/26 proto 81 via 192.0.2.2"}, nil},
		{"another protocol's", foreign("198.18.1.0/26", unix.RTPROT_STATIC, "192.0.2.2"), true,
			[]string{"add 198.18.1.0/26 proto 81 via 192.0.2.2", "add 198.18.1.0/26 proto 81 via 192.0.2.2"},
			[]string{"add 198.18.1.0/26 proto 81 via 192.0.2.2"}}, // retried, but the table is not read again
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeNetlink()
			w := newWriter(t, f, ProtocolTerraceBGP)
			mustT(t, w.Apply(ctx)) // the writer has read an empty table
			f.routes = append(f.routes, tc.inKernel)
			mustT(t, w.Set(pfx("198.18.1.0/26"), Target{Gateways: Via(addr("192.0.2.2"))}))
			mustT(t, w.Apply(ctx))
			if got := len(w.Conflicts()) > 0; got != tc.wantConflict {
				t.Fatalf("conflict %v, want %v (calls %v)", got, tc.wantConflict, f.calls)
			}
			if diff := cmp.Diff(tc.wantCalls, f.calls); diff != "" {
				t.Errorf("apply (-want +got):\n%s", diff)
			}
			f.calls = nil
			mustT(t, w.Apply(ctx))
			if diff := cmp.Diff(tc.wantNext, f.calls); diff != "" {
				t.Errorf("next apply (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInstalledEntryTransitions: a route installed as desired is kept in its desired entry only;
// changing, changing back, deleting and re-creating it must still give exactly the kernel
// calls needed, for every kind of target.
func TestInstalledEntryTransitions(t *testing.T) {
	gw := func(a ...string) Target {
		var t Target
		for _, s := range a {
			t.Gateways = append(t.Gateways, Gateway{Addr: addr(s)})
		}
		return t
	}
	p := pfx("198.18.1.0/26")
	tests := []struct {
		name  string
		first Target
		steps func(w *Writer)
		want  []string
	}{
		{"same target again", gw("192.0.2.2"), func(w *Writer) { mustT(t, w.Set(p, gw("192.0.2.2"))) }, nil},
		{"changed and changed back before apply", gw("192.0.2.2"), func(w *Writer) {
			mustT(t, w.Set(p, gw("192.0.2.3")))
			mustT(t, w.Set(p, gw("192.0.2.2")))
		}, nil},
		{"changed to ECMP", gw("192.0.2.2"), func(w *Writer) { mustT(t, w.Set(p, gw("192.0.2.2", "192.0.2.3"))) },
			[]string{"replace 198.18.1.0/26 proto 81 nexthop 192.0.2.2 nexthop 192.0.2.3"}},
		{"gateway to blackhole", gw("192.0.2.2"), func(w *Writer) { mustT(t, w.Set(p, Target{Blackhole: true})) },
			[]string{"replace 198.18.1.0/26 proto 81 blackhole"}},
		{"blackhole deleted", Target{Blackhole: true}, func(w *Writer) { w.Delete(p) },
			[]string{"del 198.18.1.0/26 proto 81 blackhole"}},
		{"deleted and set again before apply", gw("192.0.2.2"), func(w *Writer) {
			w.Delete(p)
			mustT(t, w.Set(p, gw("192.0.2.2")))
		}, nil},
		{"device route, device re-created", Target{Dev: "trc0123456789a"}, func(w *Writer) { w.DeviceChanged("trc0123456789a") },
			[]string{"replace 198.18.1.0/26 proto 81 dev 7"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeNetlink()
			f.links["trc0123456789a"] = 7
			w := newWriter(t, f, ProtocolTerraceBGP)
			w.SetInSync()
			mustT(t, w.Set(p, tc.first))
			mustT(t, w.Apply(ctx))
			f.calls = nil
			checkInstalled(t, w, 1)
			tc.steps(w)
			checkInstalled(t, w, -1)
			mustT(t, w.Apply(ctx))
			if diff := cmp.Diff(tc.want, f.calls); diff != "" {
				t.Fatalf("calls (-want +got):\n%s", diff)
			}
			// Whatever happened, a resync finds the kernel as desired.
			f.calls = nil
			mustT(t, w.Resync(ctx))
			if len(f.calls) != 0 {
				t.Fatalf("resync after the steps made calls: %v", f.calls)
			}
			checkInstalled(t, w, w.Len())
		})
	}
}

// checkInstalled compares Installed (a counter) with a walk over the entries, and with want
// unless it is negative.
func checkInstalled(t *testing.T, w *Writer, want int) {
	t.Helper()
	n := 0
	for _, e := range w.desired {
		if e.installed {
			n++
		}
	}
	if got := w.Installed(); got != n || (want >= 0 && got != want) {
		t.Fatalf("Installed() = %d; entries marked installed: %d, want %d", got, n, want)
	}
}

// TestFailedReadThenChanges: after a failed read of the table (a resync, or the re-read after
// EEXIST) the writer knows nothing of the kernel; changing, deleting or re-checking an installed
// route then must neither crash nor lose the change: the next Apply reads the table and acts.
func TestFailedReadThenChanges(t *testing.T) {
	gw := func(a string) Target { return Target{Gateways: Via(addr(a))} }
	a, b, c := pfx("198.18.1.0/26"), pfx("198.18.2.0/26"), pfx("198.18.0.5/32")
	f := newFakeNetlink()
	f.links["trc0123456789a"] = 7
	w := newWriter(t, f, ProtocolTerraceBGP)
	w.SetInSync()
	mustT(t, w.Set(a, gw("192.0.2.2")))
	mustT(t, w.Set(b, gw("192.0.2.2")))
	mustT(t, w.Set(c, Target{Dev: "trc0123456789a"}))
	mustT(t, w.Apply(ctx))
	f.listErr = syscall.EINTR
	if err := w.Resync(ctx); err == nil {
		t.Fatal("resync with a failing listing reported no error")
	}
	mustT(t, w.Set(a, gw("192.0.2.3")))
	w.Delete(b)
	w.DeviceChanged("trc0123456789a")
	f.listErr = nil
	f.calls = nil
	mustT(t, w.Apply(ctx))
	want := []string{"replace 198.18.1.0/26 proto 81 via 192.0.2.3", "del 198.18.2.0/26 proto 81 dev 0"}
	if diff := cmp.Diff(want, f.calls); diff != "" {
		t.Fatalf("calls after the table could be read again (-want +got):\n%s", diff)
	}
}

// lostAnswers is a kernel whose batch answers get lost: the changes are made, but every request
// is reported unanswered.
type lostAnswers struct{ *fakeNetlink }

func (l lostAnswers) RouteBatch(ops []RouteOp) []error {
	errs := oneByOne{l.fakeNetlink}.RouteBatch(ops)
	for i := range errs {
		errs[i] = fmt.Errorf("%w: read route batch acknowledgements: %w", ErrUnanswered, syscall.ENOBUFS)
	}
	return errs
}

// TestUnansweredBatchReadAgain: a route whose add went in but whose answer was lost is found by
// reading the table again, so withdrawing it before any retry still deletes it.
func TestUnansweredBatchReadAgain(t *testing.T) {
	f := newFakeNetlink()
	w, err := New(lostAnswers{f}, Config{Protocol: ProtocolTerraceBGP})
	mustT(t, err)
	w.SetInSync()
	p := pfx("198.18.1.0/26")
	mustT(t, w.Set(p, Target{Gateways: Via(addr("192.0.2.2"))}))
	// The read that follows finds the route as desired, so this Apply may well succeed.
	_ = w.Apply(ctx)
	w.Delete(p)
	f.calls = nil
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"del 198.18.1.0/26 proto 81 dev 0"}, f.calls); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}
	if len(f.routes) != 0 {
		t.Fatalf("route left: %v", describeAll(f.routes))
	}
}

// TestUnsyncHoldsRoutes: after Unsync (a replaced BGP speaker learning its table again) every
// route in the kernel is kept when no longer asked for, until SetInSync, unless it was asked for
// again in the meantime.
func TestUnsyncHoldsRoutes(t *testing.T) {
	gw := Target{Gateways: Via(addr("192.0.2.2"))}
	a, b := pfx("198.18.1.0/26"), pfx("198.18.2.0/26")
	f := newFakeNetlink()
	w := newWriter(t, f, ProtocolTerraceBGP)
	w.SetInSync()
	mustT(t, w.Set(a, gw))
	mustT(t, w.Set(b, gw))
	mustT(t, w.Apply(ctx))
	w.Unsync()
	w.Delete(a) // the new speaker has not learned it (yet)
	mustT(t, w.Set(b, gw))
	w.Delete(b) // learned again, then withdrawn for real
	f.calls = nil
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"del 198.18.2.0/26 proto 81 dev 0"}, f.calls); diff != "" {
		t.Fatalf("calls before in sync (-want +got):\n%s", diff)
	}
	w.SetInSync()
	f.calls = nil
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"del 198.18.1.0/26 proto 81 dev 0"}, f.calls); diff != "" {
		t.Fatalf("calls once in sync (-want +got):\n%s", diff)
	}
}

// unansweredDeletes does every change but reports deletes as unanswered, as after lost
// acknowledgements.
type unansweredDeletes struct{ *fakeNetlink }

func (u unansweredDeletes) RouteBatch(ops []RouteOp) []error {
	errs := oneByOne{u.fakeNetlink}.RouteBatch(ops)
	for i, op := range ops {
		if op.Kind == OpDel {
			errs[i] = fmt.Errorf("%w: test", ErrUnanswered)
		}
	}
	return errs
}

// TestLeftoverDeleteUnanswered: a leftover's delete whose answer is lost is not sent again (at
// metric 0 the kernel would take our route for it); the table is read back instead.
func TestLeftoverDeleteUnanswered(t *testing.T) {
	f := newFakeNetlink()
	f.routes = []netlink.Route{foreign("198.18.2.0/26", ProtocolTerraceBGP, "192.0.2.9")} // metric 0
	w, err := New(unansweredDeletes{f}, Config{Protocol: ProtocolTerraceBGP, Metric: 32})
	mustT(t, err)
	mustT(t, w.Set(pfx("198.18.2.0/26"), Target{Gateways: Via(addr("192.0.2.2"))}))
	_ = w.Apply(ctx) // reads the table back after the unanswered delete, within this Apply
	f.calls = nil
	mustT(t, w.Apply(ctx))
	mustT(t, w.Apply(ctx))
	if diff := cmp.Diff([]string{"198.18.2.0/26 proto 81 metric 32 via 192.0.2.2"}, describeAll(f.routes)); diff != "" {
		t.Fatalf("routes (-want +got):\n%s\ncalls %v", diff, f.calls)
	}
	if w.Installed() != 1 {
		t.Errorf("installed %d", w.Installed())
	}
}

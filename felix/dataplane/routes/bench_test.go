package routes

import (
	"github.com/vishvananda/netlink"
	"net/netip"
	"strings"
	"testing"

	"github.com/terracenet/terrace/internal/nstest"
)

// BenchmarkInstall10k: 10k /32 workload routes onto one device in an empty namespace.
func BenchmarkInstall10k(b *testing.B) {
	for _, k := range netlinkKinds {
		b.Run(k.name, func(b *testing.B) { benchInstall10k(b, k.open) })
	}
}

func benchInstall10k(b *testing.B, open func(testing.TB, string) Netlink) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := nstest.New(b)
		nstest.Run(b, ns, "ip", "link", "add", "trc0123456789a", "type", "veth", "peer", "name", "wl0")
		nstest.Run(b, ns, "ip", "link", "set", "trc0123456789a", "up")
		h := open(b, ns)
		w, err := New(h, Config{Protocol: ProtocolTerrace})
		if err != nil {
			b.Fatal(err)
		}
		base := netip.MustParseAddr("198.18.0.0")
		for j := 0; j < 10000; j++ {
			if err := w.Set(netip.PrefixFrom(base, 32), Target{Dev: "trc0123456789a"}); err != nil {
				b.Fatal(err)
			}
			base = base.Next()
		}
		b.StartTimer()
		if err := w.Apply(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if n := strings.Count(routesOf(b, ns, "proto", "80"), "\n") + 1; n != 10000 {
			b.Fatalf("%d routes installed, want 10000", n)
		}
		b.StartTimer()
	}
}

// BenchmarkRawRouteAdd10k is the anchor for BenchmarkInstall10k: the same 10k routes through bare
// netlink RouteAdd calls with no diffing or bookkeeping.
func BenchmarkRawRouteAdd10k(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := nstest.New(b)
		nstest.Run(b, ns, "ip", "link", "add", "trc0123456789a", "type", "veth", "peer", "name", "wl0")
		nstest.Run(b, ns, "ip", "link", "set", "trc0123456789a", "up")
		h := handleIn(b, ns)
		l, err := h.LinkByName("trc0123456789a")
		if err != nil {
			b.Fatal(err)
		}
		rs := make([]*netlink.Route, 10000)
		base := netip.MustParseAddr("198.18.0.0")
		for j := range rs {
			rs[j] = &netlink.Route{Dst: ipNet(netip.PrefixFrom(base, 32)), LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK, Protocol: ProtocolTerrace}
			base = base.Next()
		}
		b.StartTimer()
		for _, r := range rs {
			if err := h.RouteAdd(r); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkInstallGateway100k: 100k /24 routes through one gateway, as BGP hands them over: four
// deliveries of 25k, each set and applied in one Apply, through the batching handle. It is the
// writer's part of the route-scale scenario (docs/benchmarks.md) without the speaker.
func BenchmarkInstallGateway100k(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := nstest.New(b)
		nstest.Run(b, ns, "ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1")
		nstest.Run(b, ns, "ip", "link", "set", "under0", "up")
		nstest.Run(b, ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "under0")
		h := batchedIn(b, ns)
		w, err := New(h, Config{Protocol: ProtocolTerraceBGP})
		if err != nil {
			b.Fatal(err)
		}
		w.SetInSync()
		gw := Via(netip.MustParseAddr("192.0.2.9"))
		b.StartTimer()
		for d := 0; d < 4; d++ {
			for j := 0; j < 25000; j++ {
				n := d*25000 + j
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 32)
				if err := w.Set(p, Target{Gateways: gw}); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Apply(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if n := strings.Count(nstest.Run(b, ns, "ip", "-4", "route", "show", "proto", "81"), "\n"); n != 100000 {
			b.Fatalf("%d routes installed, want 100000", n)
		}
		b.StartTimer()
	}
}

package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/internal/nstest"
)

// TestRealUnderlayGateways resolves learned routes through underlays the kernel answers with
// gateways that need their link: an IPv6 default via link-local routers (one address on two
// links, as unnumbered ToRs give) and an IPv4 route via an onlink gateway. The real resolver and
// writer run in a fresh namespace; the kernel must hold every route, each through the same
// hops as the underlay's.
func TestRealUnderlayGateways(t *testing.T) {
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "tor0"},
		{"ip", "link", "add", "under1", "type", "veth", "peer", "name", "tor1"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "tor0", "up"},
		{"ip", "link", "set", "under1", "up"},
		{"ip", "link", "set", "tor1", "up"},
		{"ip", "-6", "route", "add", "2001:db8:3::/48", "nexthop", "via", "fe80::1", "dev", "under0", "nexthop", "via", "fe80::1", "dev", "under1"},
		{"ip", "-6", "route", "add", "2001:db8:2::/48", "via", "fe80::2", "dev", "under1"},
		{"ip", "route", "add", "198.51.100.64/26", "via", "192.0.2.77", "dev", "under0", "onlink"},
	} {
		nstest.Run(t, ns, c...)
	}
	_, h := nstest.Handle(t, ns)
	w, err := routes.New(h, routes.Config{Protocol: routes.ProtocolTerraceBGP})
	if err != nil {
		t.Fatal(err)
	}
	p, st := newTestProgrammer(w, h)
	st.deliver(p, map[netip.Prefix][]netip.Addr{
		netip.MustParsePrefix("2001:db8:1000::/122"):   addrs("2001:db8:3::9"),
		netip.MustParsePrefix("2001:db8:1000::40/122"): addrs("2001:db8:2::9"),
		netip.MustParsePrefix("198.18.0.0/26"):         addrs("198.51.100.70"),
	}, true)
	p.sync(t.Context(), true)
	if st := p.Stats(); st.LastError != "" || st.Installed != 3 || st.Unresolved != 0 {
		t.Errorf("stats = %+v, want 3 installed, none unresolved, no error", st)
	}
	var got []string
	for _, fam := range []string{"-4", "-6"} {
		out := nstest.Run(t, ns, "ip", fam, "-o", "route", "show", "proto", "81")
		got = append(got, strings.Join(strings.Fields(out), " "))
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"198.18.0.0/26 via 192.0.2.77 dev under0 onlink",
		"2001:db8:1000::/122",
		"nexthop via fe80::1 dev under0 weight 1",
		"nexthop via fe80::1 dev under1 weight 1",
		"2001:db8:1000::40/122 via fe80::2 dev under1",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("routes lack %q:\n%s", want, all)
		}
	}
}

// TestRealUnderlayRouteChange runs the programmer with a real subscription to route changes: the
// underlay's ECMP default loses a gateway while the link stays up (a ToR gone), then goes, then
// comes back. The learned route must follow each change within a few seconds, with the resync an
// hour away.
func TestRealUnderlayRouteChange(t *testing.T) {
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "tor0"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "tor0", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "under0"},
		{"ip", "route", "add", "default", "nexthop", "via", "192.0.2.2", "nexthop", "via", "192.0.2.3"},
	} {
		nstest.Run(t, ns, c...)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, h := nstest.Handle(t, ns)
	w, err := routes.New(h, routes.Config{Protocol: routes.ProtocolTerraceBGP})
	if err != nil {
		t.Fatal(err)
	}
	p, st := newTestProgrammer(w, h)
	if err := nstest.Do(t, ns, func() (err error) {
		p.underlayRoutes, err = SubscribeUnderlayRoutes(ctx, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, time.Hour, func() bool { return true })
	}()
	defer func() { cancel(); <-done }()
	st.deliver(p, map[netip.Prefix][]netip.Addr{netip.MustParsePrefix("198.18.0.0/26"): addrs("198.51.100.9")}, true)

	learned := func() string {
		return strings.Join(strings.Fields(nstest.Run(t, ns, "ip", "route", "show", "198.18.0.0/26", "proto", "81")), " ")
	}
	expect := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok(learned()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s; route now: %q", what, learned())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect("through both gateways", func(s string) bool {
		return strings.Contains(s, "nexthop via 192.0.2.2") && strings.Contains(s, "nexthop via 192.0.2.3")
	})
	nstest.Run(t, ns, "ip", "route", "replace", "default", "via", "192.0.2.3")
	expect("through the gateway left", func(s string) bool { return strings.Contains(s, "198.18.0.0/26 via 192.0.2.3") })
	nstest.Run(t, ns, "ip", "route", "del", "default")
	expect("gone with the default route", func(s string) bool { return s == "" })
	nstest.Run(t, ns, "ip", "route", "add", "default", "via", "192.0.2.2")
	expect("back through the new gateway", func(s string) bool { return strings.Contains(s, "198.18.0.0/26 via 192.0.2.2") })
	// The underlay's address goes and comes back at once, as a DHCP client may do: the kernel
	// flushes our route with it, says nothing of that, and the resolution comes out the same.
	nstest.Run(t, ns, "ip", "addr", "del", "192.0.2.1/24", "dev", "under0")
	nstest.Run(t, ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "under0")
	nstest.Run(t, ns, "ip", "route", "add", "default", "via", "192.0.2.2")
	expect("back after the address flush", func(s string) bool { return strings.Contains(s, "198.18.0.0/26 via 192.0.2.2") })
	// An underlay made of nexthop objects (as FRR makes it): a member going changes the default
	// route's paths with no route message, only the nexthop object's.
	for _, c := range [][]string{
		{"ip", "nexthop", "add", "id", "1", "via", "192.0.2.2", "dev", "under0"},
		{"ip", "nexthop", "add", "id", "2", "via", "192.0.2.3", "dev", "under0"},
		{"ip", "nexthop", "add", "id", "10", "group", "1/2"},
		{"ip", "route", "replace", "default", "nhid", "10"},
	} {
		nstest.Run(t, ns, c...)
	}
	expect("through the nexthop group's two gateways", func(s string) bool {
		return strings.Contains(s, "nexthop via 192.0.2.2") && strings.Contains(s, "nexthop via 192.0.2.3")
	})
	nstest.Run(t, ns, "ip", "nexthop", "del", "id", "1")
	expect("through the group's remaining gateway", func(s string) bool { return strings.Contains(s, "198.18.0.0/26 via 192.0.2.3") })
}

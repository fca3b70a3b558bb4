package speaker

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"

	"github.com/terracenet/terrace/internal/syncbuf"
)

const asn = 64512

// pair starts two iBGP speakers on A and B peered with each other and waits for the session.
func pair(t *testing.T) (a, b *testSpeaker) {
	port := freePort(t, addrA, addrB)
	a = startSpeaker(t, addrA, asn, port, nil)
	b = startSpeaker(t, addrB, asn, port, nil)
	setPeers(t, a, peerOf(a, b))
	setPeers(t, b, peerOf(b, a))
	waitEstablished(t, a, addrB)
	waitEstablished(t, b, addrA)
	return a, b
}

func TestAdvertiseLearnWithdraw(t *testing.T) {
	a, b := pair(t)
	block := pfx("198.18.0.0/26")
	borrowed := pfx("198.18.5.7/32")
	advertise(t, a, map[netip.Prefix]Advert{block: {NextHop: addrA}, borrowed: {NextHop: addrA}})

	want := map[netip.Prefix][]netip.Addr{block: {addrA}, borrowed: {addrA}}
	b.sink.waitFor(t, 10*time.Second, "both prefixes at B", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m, want, netOpts)
	})
	if diff := cmp.Diff(want, b.Learned(), netOpts); diff != "" {
		t.Errorf("B Learned() differs (-want +got):\n%s", diff)
	}
	// A originates these itself: they are not learned routes there.
	if got := a.Learned(); len(got) != 0 {
		t.Errorf("A learned its own prefixes: %v", got)
	}
	st := statusOf(t, b, addrA)
	if st.Received != 2 || st.Accepted != 2 {
		t.Errorf("B's status for A: received %d accepted %d, want 2/2", st.Received, st.Accepted)
	}
	if st := statusOf(t, a, addrB); st.Advertised != 2 {
		t.Errorf("A's status for B: advertised %d, want 2", st.Advertised)
	}

	advertise(t, a, map[netip.Prefix]Advert{block: {NextHop: addrA}})
	want = map[netip.Prefix][]netip.Addr{block: {addrA}}
	b.sink.waitFor(t, 10*time.Second, "withdrawal of the /32 at B", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m, want, netOpts)
	})
	if got := a.Advertised(); len(got) != 1 {
		t.Errorf("A advertises %v, want only %v", got, block)
	}
}

func TestNextHopChangeReplacesPath(t *testing.T) {
	a, b := pair(t)
	p := pfx("198.18.0.64/26")
	other := netip.MustParseAddr("192.0.2.10")
	advertise(t, a, map[netip.Prefix]Advert{p: {NextHop: addrA}})
	b.sink.waitFor(t, 10*time.Second, "first next hop", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{addrA}, netOpts)
	})
	advertise(t, a, map[netip.Prefix]Advert{p: {NextHop: other}})
	b.sink.waitFor(t, 10*time.Second, "replaced next hop", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{other}, netOpts)
	})
}

func TestECMPFromTwoPeers(t *testing.T) {
	port := freePort(t, addrA, addrB, addrC)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	c := startSpeaker(t, addrC, asn, port, nil)
	setPeers(t, a, peerOf(a, c))
	setPeers(t, b, peerOf(b, c))
	setPeers(t, c, peerOf(c, a), peerOf(c, b))
	waitEstablished(t, c, addrA)
	waitEstablished(t, c, addrB)

	p := pfx("198.18.8.0/24")
	advertise(t, a, map[netip.Prefix]Advert{p: {NextHop: addrA}})
	advertise(t, b, map[netip.Prefix]Advert{p: {NextHop: addrB}})
	c.sink.waitFor(t, 10*time.Second, "two next hops at C", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{addrA, addrB}, netOpts)
	})
	advertise(t, a, nil)
	c.sink.waitFor(t, 10*time.Second, "one next hop left after A withdraws", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{addrB}, netOpts)
	})
}

func TestSetPeersKeepsUnchangedSessions(t *testing.T) {
	port := freePort(t, addrA, addrB, addrC)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	c := startSpeaker(t, addrC, asn, port, nil)
	setPeers(t, a, peerOf(a, b), peerOf(a, c))
	setPeers(t, b, peerOf(b, a))
	setPeers(t, c, peerOf(c, a))
	ab := waitEstablished(t, a, addrB)
	ac := waitEstablished(t, a, addrC)
	// Uptime has a one-second resolution in GoBGP: let it move so a reset would show.
	time.Sleep(1100 * time.Millisecond)

	// Same B; C's hold time changes; B's label and next-hop-self (policy only) change.
	pb := peerOf(a, b)
	pb.Type = PeerTypeNode
	pb.NextHop = NextHopSelf
	pc := peerOf(a, c)
	pc.HoldSeconds = 12
	setPeers(t, a, pb, pc)

	deadline := time.Now().Add(30 * time.Second)
	for {
		nc := statusOf(t, a, addrC)
		if nc.State == "established" && nc.EstablishedAt.After(ac.EstablishedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("changed peer C was not re-established: before %+v, now %+v", ac, nc)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nb := statusOf(t, a, addrB)
	if nb.State != "established" || !nb.EstablishedAt.Equal(ab.EstablishedAt) {
		t.Errorf("unchanged peer B was reset: before %+v, now %+v", ab, nb)
	}
	if nb.Type != PeerTypeNode {
		t.Errorf("B's type is %q after relabel, want %q", nb.Type, PeerTypeNode)
	}

	// Removing C leaves B alone.
	setPeers(t, a, pb)
	sts, err := a.PeerStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Address != addrB || !sts[0].EstablishedAt.Equal(ab.EstablishedAt) {
		t.Errorf("after removing C: %+v", sts)
	}
}

func TestWrongASIsReportedAndIsolated(t *testing.T) {
	port := freePort(t, addrA, addrB, addrC)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	c := startSpeaker(t, addrC, asn, port, nil)
	wrong := peerOf(a, b)
	wrong.ASN = 65099
	setPeers(t, a, wrong, peerOf(a, c))
	setPeers(t, b, peerOf(b, a))
	setPeers(t, c, peerOf(c, a))
	waitEstablished(t, a, addrC)

	deadline := time.Now().Add(20 * time.Second)
	for {
		st := statusOf(t, a, addrB)
		if st.State == "established" {
			t.Fatalf("session with a wrong AS came up: %+v", st)
		}
		if strings.Contains(strings.ToLower(st.LastError), "bad peer as") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clear error for wrong AS: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := statusOf(t, a, addrC); st.State != "established" || st.LastError != "" {
		t.Errorf("healthy session affected: %+v", st)
	}
	// Fixing the AS brings the session up and clears the old error.
	setPeers(t, a, peerOf(a, b), peerOf(a, c))
	if st := waitEstablished(t, a, addrB); st.LastError != "" && !strings.Contains(st.LastError, "session down") {
		t.Errorf("stale error after fix: %+v", st)
	}
}

func TestMD5(t *testing.T) {
	tests := []struct {
		name         string
		passA, passB string
		wantUp       bool
	}{
		{name: "matching", passA: "s3cret", passB: "s3cret", wantUp: true},
		{name: "mismatch", passA: "s3cret", passB: "other", wantUp: false},
		{name: "one side only", passA: "s3cret", passB: "", wantUp: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t, addrA, addrB)
			var logs syncbuf.Buffer
			debugLog := func(o *Options, _ *Global) {
				o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			a := startSpeaker(t, addrA, asn, port, debugLog)
			b := startSpeaker(t, addrB, asn, port, debugLog)
			defer func() {
				if strings.Contains(logs.String(), tc.passA) {
					t.Errorf("the MD5 password appears in the debug log")
				}
			}()
			pa, pb := peerOf(a, b), peerOf(b, a)
			pa.Password, pb.Password = tc.passA, tc.passB
			setPeers(t, a, pa)
			setPeers(t, b, pb)
			if tc.wantUp {
				waitEstablished(t, a, addrB)
				return
			}
			deadline := time.Now().Add(6 * time.Second)
			for time.Now().Before(deadline) {
				if st := statusOf(t, a, addrB); st.State == "established" {
					t.Fatalf("session came up with mismatched MD5: %+v", st)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

// TestMD5Removed: after the password is removed on both sides, the session comes back. GoBGP
// left the old key on its listeners, which then dropped the peer's unsigned SYNs for good.
func TestMD5Removed(t *testing.T) {
	port := freePort(t, addrA, addrB)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	pa, pb := peerOf(a, b), peerOf(b, a)
	pa.Password, pb.Password = "s3cret", "s3cret"
	setPeers(t, a, pa)
	setPeers(t, b, pb)
	waitEstablished(t, a, addrB)
	pa.Password, pb.Password = "", ""
	setPeers(t, a, pa)
	setPeers(t, b, pb)
	deadline := time.Now().Add(30 * time.Second)
	for statusOf(t, a, addrB).State != "established" || statusOf(t, b, addrA).State != "established" {
		if time.Now().After(deadline) {
			t.Fatalf("session not back 30 s after the password was removed on both sides: A %+v, B %+v", statusOf(t, a, addrB), statusOf(t, b, addrA))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestIPv6OverIPv4Session(t *testing.T) {
	port := freePort(t, addrA, addrB)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	pa, pb := peerOf(a, b), peerOf(b, a)
	// As bgp/config builds them: the session over IPv4 carries IPv6 with this host's IPv6
	// address as its next hop, and the adverts name no next hop (BGP's own choice for IPv4).
	nh6 := netip.MustParseAddr("2001:db8::2")
	pa.Families, pa.IPv6NextHop = Families{IPv4: true, IPv6: true}, nh6
	pb.Families, pb.IPv6NextHop = Families{IPv4: true, IPv6: true}, netip.MustParseAddr("2001:db8::3")
	setPeers(t, a, pa)
	setPeers(t, b, pb)
	waitEstablished(t, a, addrB)

	v6 := pfx("2001:db8:1000::/122")
	v4 := pfx("198.18.0.0/26")
	advertise(t, a, map[netip.Prefix]Advert{v6: {}, v4: {}})
	want := map[netip.Prefix][]netip.Addr{v6: {nh6}, v4: {addrA}}
	b.sink.waitFor(t, 10*time.Second, "IPv4 and IPv6 prefixes at B", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m, want, netOpts)
	})
	advertise(t, a, map[netip.Prefix]Advert{v4: {}})
	b.sink.waitFor(t, 10*time.Second, "IPv6 withdrawal", func(m map[netip.Prefix][]netip.Addr) bool {
		_, ok := m[v6]
		return !ok && len(m) == 1
	})
}

func TestRouteReflector(t *testing.T) {
	port := freePort(t, addrA, addrB, addrC)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	rr := startSpeaker(t, addrC, asn, port, nil)
	toA, toB := peerOf(rr, a), peerOf(rr, b)
	for _, p := range []*Peer{&toA, &toB} {
		p.Type, p.RouteReflectorClient, p.RRClusterID = PeerTypeRRClient, true, "224.0.0.1"
	}
	setPeers(t, rr, toA, toB)
	fromA, fromB := peerOf(a, rr), peerOf(b, rr)
	fromA.Type, fromB.Type = PeerTypeReflector, PeerTypeReflector
	setPeers(t, a, fromA)
	setPeers(t, b, fromB)
	waitEstablished(t, rr, addrA)
	waitEstablished(t, rr, addrB)

	pa, pb := pfx("198.18.0.0/26"), pfx("198.18.0.64/26")
	advertise(t, a, map[netip.Prefix]Advert{pa: {NextHop: addrA}})
	advertise(t, b, map[netip.Prefix]Advert{pb: {NextHop: addrB}})
	// Reflection keeps the originator's next hop: traffic goes host to host, not via the RR.
	b.sink.waitFor(t, 10*time.Second, "A's block reflected to B", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m, map[netip.Prefix][]netip.Addr{pa: {addrA}}, netOpts)
	})
	a.sink.waitFor(t, 10*time.Second, "B's block reflected to A", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m, map[netip.Prefix][]netip.Addr{pb: {addrB}}, netOpts)
	})
	advertise(t, a, nil)
	b.sink.waitFor(t, 10*time.Second, "withdrawal reflected to B", func(m map[netip.Prefix][]netip.Addr) bool {
		return len(m) == 0
	})
}

// TestNoTransit: a host between two external peers must not pass one's routes to the other.
func TestNoTransit(t *testing.T) {
	port := freePort(t, addrA, addrB, addrC)
	a := startSpeaker(t, addrA, 65001, port, nil)
	host := startSpeaker(t, addrB, 65002, port, nil)
	c := startSpeaker(t, addrC, 65003, port, nil)
	setPeers(t, a, peerOf(a, host))
	setPeers(t, c, peerOf(c, host))
	setPeers(t, host, peerOf(host, a), peerOf(host, c))
	waitEstablished(t, host, addrA)
	waitEstablished(t, host, addrC)

	fromA, own := pfx("198.18.10.0/24"), pfx("198.18.20.0/26")
	advertise(t, a, map[netip.Prefix]Advert{fromA: {NextHop: addrA}})
	advertise(t, host, map[netip.Prefix]Advert{own: {}})
	host.sink.waitFor(t, 10*time.Second, "host learns A's route", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[fromA], []netip.Addr{addrA}, netOpts)
	})
	// eBGP rewrites the next hop of the host's own prefix to the session address.
	c.sink.waitFor(t, 10*time.Second, "C learns the host's own prefix", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[own], []netip.Addr{addrB}, netOpts)
	})
	time.Sleep(500 * time.Millisecond)
	if got, ok := c.sink.get()[fromA]; ok {
		t.Errorf("host re-advertised an external route to another external peer: %v via %v", fromA, got)
	}
}

func TestRestartMarker(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t, addrA)
	first := startSpeaker(t, addrA, asn, port, func(o *Options, _ *Global) { o.StateDir = dir })
	if first.Restarting() {
		t.Error("first start on an empty state dir claims to be a restart")
	}
	first.stop(false) // as if the daemon exited without a clean shutdown
	second := startSpeaker(t, addrA, asn, port, func(o *Options, _ *Global) { o.StateDir = dir })
	if !second.Restarting() {
		t.Error("start after an unclean exit is not a restart")
	}
	second.Stop()
	third := startSpeaker(t, addrA, asn, port, func(o *Options, _ *Global) { o.StateDir = dir })
	if third.Restarting() {
		t.Error("start after a clean Stop claims to be a restart")
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		g    Global
		want string
	}{
		{name: "no router id", g: Global{ASN: 1}, want: "router ID"},
		{name: "ipv6 router id", g: Global{ASN: 1, RouterID: netip.MustParseAddr("2001:db8::1")}, want: "router ID"},
		{name: "no AS", g: Global{RouterID: addrA}, want: "AS number"},
		{name: "debug listen off loopback", opts: Options{DebugListen: "192.0.2.1:50051"},
			g: Global{ASN: 1, RouterID: addrA, ListenPort: -1}, want: "not on loopback"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := New(tc.opts).Start(context.Background(), tc.g)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// localRestarting reads GoBGP's view of the LocalRestarting flag for each configured peer.
func localRestarting(t *testing.T, s *testSpeaker) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		out[p.GetConf().GetNeighborAddress()] = p.GetGracefulRestart().GetLocalRestarting()
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLocalRestartingOnlyOnRestart(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t, addrA)
	grPeer := func(addr netip.Addr) Peer {
		// Nobody listens there: the session stays down, so GoBGP never clears the flag itself.
		return Peer{Address: addr, Port: port, ASN: asn, SourceAddress: addrA,
			GracefulRestart: GracefulRestart{Enabled: true, RestartTime: 60}}
	}
	first := startSpeaker(t, addrA, asn, port, func(o *Options, _ *Global) { o.StateDir = dir })
	setPeers(t, first, grPeer(addrB))
	if got := localRestarting(t, first); got[addrB.String()] {
		t.Errorf("first start marks peers as locally restarting: %v", got)
	}
	first.stop(false)

	second := startSpeaker(t, addrA, asn, port, func(o *Options, _ *Global) { o.StateDir = dir })
	setPeers(t, second, grPeer(addrB))
	setPeers(t, second, grPeer(addrB), grPeer(addrC))
	want := map[string]bool{addrB.String(): true, addrC.String(): false}
	if diff := cmp.Diff(want, localRestarting(t, second)); diff != "" {
		t.Errorf("LocalRestarting after restart (-want +got):\n%s", diff)
	}
}

// TestReflectorNextHopSelfIsPolicyOnly: turning on next-hop-self for one client rewrites what it
// receives through a soft reset, without taking its session down.
func TestReflectorNextHopSelfIsPolicyOnly(t *testing.T) {
	port := freePort(t, addrA, addrB, addrC)
	a := startSpeaker(t, addrA, asn, port, nil)
	b := startSpeaker(t, addrB, asn, port, nil)
	rr := startSpeaker(t, addrC, asn, port, nil)
	toA, toB := peerOf(rr, a), peerOf(rr, b)
	for _, p := range []*Peer{&toA, &toB} {
		p.Type, p.RouteReflectorClient = PeerTypeRRClient, true
	}
	setPeers(t, rr, toA, toB)
	setPeers(t, a, peerOf(a, rr))
	setPeers(t, b, peerOf(b, rr))
	waitEstablished(t, rr, addrA)
	before := waitEstablished(t, rr, addrB)

	p := pfx("198.18.0.0/26")
	advertise(t, a, map[netip.Prefix]Advert{p: {NextHop: addrA}})
	b.sink.waitFor(t, 10*time.Second, "reflected with the originator's next hop", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{addrA}, netOpts)
	})
	toB.NextHop = NextHopSelf
	setPeers(t, rr, toA, toB)
	b.sink.waitFor(t, 10*time.Second, "reflected with the reflector as next hop", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{addrC}, netOpts)
	})
	if after := statusOf(t, rr, addrB); !after.EstablishedAt.Equal(before.EstablishedAt) {
		t.Errorf("next-hop-self change reset the session: before %v, after %v", before.EstablishedAt, after.EstablishedAt)
	}
	// Turning it off again restores the originator's next hop.
	toB.NextHop = NextHopAuto
	setPeers(t, rr, toA, toB)
	b.sink.waitFor(t, 10*time.Second, "original next hop restored", func(m map[netip.Prefix][]netip.Addr) bool {
		return cmp.Equal(m[p], []netip.Addr{addrA}, netOpts)
	})
}

func TestInputErrors(t *testing.T) {
	ctx := context.Background()
	idle := New(Options{})
	if err := idle.SetPeers(ctx, nil); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Errorf("SetPeers before Start: %v", err)
	}
	if err := idle.SetAdvertised(ctx, nil); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Errorf("SetAdvertised before Start: %v", err)
	}
	if _, err := idle.PeerStatus(ctx); err == nil {
		t.Error("PeerStatus before Start succeeded")
	}

	s := startSpeaker(t, addrA, asn, 0, func(_ *Options, g *Global) { g.ListenPort = -1 })
	good := Peer{Address: addrB, ASN: asn}
	err := s.SetPeers(ctx, []Peer{good, {ASN: asn}, {Address: addrB, ASN: 65001}})
	for _, want := range []string{"peer without address", "duplicate peer 127.0.0.3"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SetPeers error %v, want it to mention %q", err, want)
		}
	}
	if st := statusOf(t, s, addrB); st.ASN != asn {
		t.Errorf("first of the duplicates not configured: %+v", st)
	}

	v4 := pfx("198.18.0.0/26")
	err = s.SetAdvertised(ctx, map[netip.Prefix]Advert{
		v4:                     {NextHop: addrA},
		pfx("198.18.1.0/26"):   {NextHop: netip.MustParseAddr("2001:db8::1")},
		pfx("2001:db8:1::/64"): {NextHop: addrA},
	})
	if err == nil || !strings.Contains(err.Error(), "not in the family") {
		t.Errorf("mixed-family next hops accepted: %v", err)
	}
	if diff := cmp.Diff(map[netip.Prefix]Advert{v4: {NextHop: addrA}}, s.Advertised(), netOpts); diff != "" {
		t.Errorf("advertised after partial failure (-want +got):\n%s", diff)
	}
}

// TestPeerStatusCachedAdvertised: the cached status asks GoBGP to count advertised prefixes only
// when the last count is too old or something it depends on changed; everything else is current.
func TestPeerStatusCachedAdvertised(t *testing.T) {
	a, b := pair(t)
	advertise(t, a, map[netip.Prefix]Advert{pfx("198.18.0.0/26"): {NextHop: addrA}, pfx("198.18.5.7/32"): {NextHop: addrA}})
	b.sink.waitFor(t, 10*time.Second, "both prefixes at B", func(m map[netip.Prefix][]netip.Addr) bool { return len(m) == 2 })
	cached := func(maxAge time.Duration) PeerStatus {
		t.Helper()
		sts, err := a.PeerStatusCached(context.Background(), maxAge)
		if err != nil || len(sts) != 1 {
			t.Fatalf("cached peer status: %v %v", sts, err)
		}
		return sts[0]
	}
	n := a.advCounts.Load()
	if st := cached(time.Hour); st.Advertised != 2 || a.advCounts.Load() != n+1 {
		t.Fatalf("first cached status: advertised %d after %d counts, want 2 after 1", st.Advertised, a.advCounts.Load()-n)
	}
	if st := cached(time.Hour); st.Advertised != 2 || a.advCounts.Load() != n+1 {
		t.Errorf("second cached status: advertised %d after %d counts, want 2 without counting again", st.Advertised, a.advCounts.Load()-n)
	}
	// Received is current even while advertised is reused.
	advertise(t, b, map[netip.Prefix]Advert{pfx("198.18.9.0/26"): {NextHop: addrB}})
	a.sink.waitFor(t, 10*time.Second, "B's prefix at A", func(m map[netip.Prefix][]netip.Addr) bool { return len(m) == 1 })
	if st := cached(time.Hour); st.Received != 1 || a.advCounts.Load() != n+1 {
		t.Errorf("cached status after B advertised: received %d after %d counts, want 1 without counting", st.Received, a.advCounts.Load()-n)
	}
	// A changed advertisement is counted at once.
	advertise(t, a, map[netip.Prefix]Advert{pfx("198.18.0.0/26"): {NextHop: addrA}, pfx("198.18.5.7/32"): {NextHop: addrA}, pfx("198.18.5.8/32"): {NextHop: addrA}})
	if st := cached(time.Hour); st.Advertised != 3 || a.advCounts.Load() != n+2 {
		t.Errorf("cached status after A's advertisement changed: advertised %d after %d counts, want 3 after 2", st.Advertised, a.advCounts.Load()-n)
	}
	// An expired count is renewed; the uncached status always counts.
	m := a.advCounts.Load()
	cached(time.Nanosecond)
	statusOf(t, a, addrB)
	if got := a.advCounts.Load() - m; got != 2 {
		t.Errorf("expired cached status and uncached status counted %d times, want 2", got)
	}
}

// TestReflectorStops: a host that stops reflecting (its only client becomes an ordinary iBGP peer,
// or goes) must not leave what it reflected at its other iBGP peers. The client's session is
// re-created or deleted, which withdraws the client's routes everywhere, and the host does not
// pass them on again between non-clients.
func TestReflectorStops(t *testing.T) {
	for _, how := range []string{"client becomes a mesh peer", "client removed"} {
		t.Run(how, func(t *testing.T) {
			port := freePort(t, addrA, addrB, addrC)
			client := startSpeaker(t, addrA, asn, port, nil)
			other := startSpeaker(t, addrB, asn, port, nil)
			rr := startSpeaker(t, addrC, asn, port, nil)
			toClient, toOther := peerOf(rr, client), peerOf(rr, other)
			toClient.Type, toClient.RouteReflectorClient, toClient.RRClusterID = PeerTypeRRClient, true, "224.0.0.1"
			setPeers(t, rr, toClient, toOther)
			fromClient := peerOf(client, rr)
			fromClient.Type = PeerTypeReflector
			setPeers(t, client, fromClient)
			setPeers(t, other, peerOf(other, rr))
			waitEstablished(t, rr, addrA)
			waitEstablished(t, rr, addrB)

			pc, po := pfx("198.18.0.0/26"), pfx("198.18.0.64/26")
			advertise(t, client, map[netip.Prefix]Advert{pc: {NextHop: addrA}})
			advertise(t, other, map[netip.Prefix]Advert{po: {NextHop: addrB}})
			other.sink.waitFor(t, 10*time.Second, "the client's block reflected to the non-client", func(m map[netip.Prefix][]netip.Addr) bool {
				return cmp.Equal(m, map[netip.Prefix][]netip.Addr{pc: {addrA}}, netOpts)
			})
			client.sink.waitFor(t, 10*time.Second, "the non-client's block reflected to the client", func(m map[netip.Prefix][]netip.Addr) bool {
				return cmp.Equal(m, map[netip.Prefix][]netip.Addr{po: {addrB}}, netOpts)
			})

			if how == "client removed" {
				setPeers(t, rr, toOther)
			} else {
				plain := peerOf(rr, client)
				setPeers(t, rr, plain, toOther)
				fromClient.Type = PeerTypeMesh
				setPeers(t, client, fromClient)
				waitEstablished(t, rr, addrA)
				rr.sink.waitFor(t, 10*time.Second, "the former client's block learned again", func(m map[netip.Prefix][]netip.Addr) bool {
					return cmp.Equal(m[pc], []netip.Addr{addrA}, netOpts)
				})
			}
			other.sink.waitFor(t, 15*time.Second, "the reflected block withdrawn from the non-client", func(m map[netip.Prefix][]netip.Addr) bool {
				return len(m) == 0
			})
			client.sink.waitFor(t, 15*time.Second, "the reflected block withdrawn from the former client", func(m map[netip.Prefix][]netip.Addr) bool {
				return len(m) == 0
			})
			// Nothing comes back: between non-clients nothing is passed on.
			time.Sleep(2 * time.Second)
			if m := other.sink.get(); len(m) != 0 {
				t.Errorf("non-client holds %v after the host stopped reflecting", m)
			}
			if m := client.sink.get(); len(m) != 0 {
				t.Errorf("former client holds %v after the host stopped reflecting", m)
			}
		})
	}
}

// TestPeersSynced: with graceful restart on both sides a peer says when it has sent everything
// (End-of-RIB), and PeersSynced turns true once every configured peer has; a peer without
// graceful restart never says so, nor does a configured peer that is down.
func TestPeersSynced(t *testing.T) {
	gr := func(p Peer) Peer {
		p.GracefulRestart = GracefulRestart{Enabled: true, RestartTime: 60}
		return p
	}
	synced := func(s *testSpeaker) bool {
		t.Helper()
		ok, err := s.PeersSynced(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	t.Run("graceful restart", func(t *testing.T) {
		a := startSpeaker(t, addrA, asn, freePort(t, addrA), nil)
		b := startSpeaker(t, addrB, asn, freePort(t, addrB), nil)
		advertise(t, b, map[netip.Prefix]Advert{pfx("198.18.0.64/26"): {}})
		if synced(a) {
			t.Error("synced with no peers configured")
		}
		setPeers(t, a, gr(peerOf(a, b)))
		if synced(a) {
			t.Error("synced before the session is up")
		}
		setPeers(t, b, gr(peerOf(b, a)))
		deadline := time.Now().Add(20 * time.Second)
		for !synced(a) {
			if time.Now().After(deadline) {
				t.Fatalf("not synced within 20 s; peer: %+v", statusOf(t, a, addrB))
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Sent before its End-of-RIB, the peer's prefix has already reached the sink.
		if got := a.sink.get()[pfx("198.18.0.64/26")]; len(got) == 0 {
			t.Errorf("synced before b's prefix reached the sink: %v", a.sink.get())
		}
		// A second peer that never comes up holds it back.
		setPeers(t, a, gr(peerOf(a, b)), gr(Peer{Address: addrC, Port: freePort(t, addrC), ASN: asn, SourceAddress: addrA}))
		if synced(a) {
			t.Error("synced with a configured peer down")
		}
	})
	t.Run("no graceful restart", func(t *testing.T) {
		a := startSpeaker(t, addrA, asn, freePort(t, addrA), nil)
		b := startSpeaker(t, addrB, asn, freePort(t, addrB), nil)
		setPeers(t, a, peerOf(a, b))
		setPeers(t, b, peerOf(b, a))
		waitEstablished(t, a, addrB)
		time.Sleep(time.Second)
		if synced(a) {
			t.Error("synced with a peer that cannot say it has sent everything")
		}
	})
}

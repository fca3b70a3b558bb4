package speaker

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
)

// TestFilters: a peer's filter rules decide, first match wins, which of its routes the host
// takes in and which of the host's routes it is sent; other peers are untouched, rules of the
// other family never match, and changing the rules re-evaluates routes already exchanged without
// a session reset (import: re-run over what was received; export: this host's own routes now
// refused are withdrawn), except for a peer that an Accept rule had sent routes learned from
// others, whose session is reset (GoBGP cannot withdraw those alone).
func TestFilters(t *testing.T) {
	tor, host, other := transitTrio(t)

	torA, torB := pfx("198.18.10.0/24"), pfx("198.18.11.0/24")
	own1, own2, borrowed := pfx("198.18.20.0/26"), pfx("198.18.21.0/26"), pfx("198.18.30.5/32")
	advertise(t, tor, map[netip.Prefix]Advert{torA: {NextHop: addrA}, torB: {NextHop: addrA}})
	advertise(t, host, map[netip.Prefix]Advert{own1: {}, own2: {}, borrowed: {}})

	withFilters := func(f *Filters) {
		t.Helper()
		toTor := peerOf(host, tor)
		toTor.Filters = f
		setPeers(t, host, toTor, peerOf(host, other))
	}
	has := func(m map[netip.Prefix][]netip.Addr, ps ...netip.Prefix) bool {
		for _, p := range ps {
			if _, ok := m[p]; !ok {
				return false
			}
		}
		return true
	}
	lacks := func(m map[netip.Prefix][]netip.Addr, ps ...netip.Prefix) bool {
		for _, p := range ps {
			if _, ok := m[p]; ok {
				return false
			}
		}
		return true
	}

	withFilters(&Filters{
		Import: []FilterRule{
			{Filter: "v6-only", Family: 6}, // rejects every IPv6 route: must not touch IPv4 ones
			{Filter: "tor-in", Family: 4, Prefix: torB, Exact: true},
			{Filter: "tor-in", Family: 4, Accept: true}, // ends the list for IPv4: nothing after it applies
			{Filter: "tor-in", Family: 4, Prefix: torA, Exact: true},
		},
		Export: []FilterRule{
			{Filter: "tor-out", Family: 4, Prefix: pfx("198.18.21.0/24"), MinLen: 24, MaxLen: 32},
		},
	})
	waitEstablished(t, host, addrA)
	waitEstablished(t, host, addrC)
	sessionsBefore := []PeerStatus{statusOf(t, host, addrA), statusOf(t, host, addrC)}

	host.sink.waitFor(t, 10*time.Second, "host takes torA, not torB", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, torA) && lacks(m, torB)
	})
	tor.sink.waitFor(t, 10*time.Second, "tor gets own1 and the borrowed /32, not own2", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, own1, borrowed) && lacks(m, own2)
	})
	other.sink.waitFor(t, 10*time.Second, "the other peer gets everything the host owns", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, own1, own2, borrowed)
	})
	if st := statusOf(t, host, addrA); st.Received != 2 {
		t.Errorf("host's status for the tor: received %d, want 2", st.Received)
	}

	// Import rules alone change: routes already received are re-evaluated, sessions stay up.
	withFilters(&Filters{
		Import: []FilterRule{{Filter: "tor-in", Family: 4, Prefix: torA, Exact: true}},
		Export: []FilterRule{{Filter: "tor-out", Family: 4, Prefix: pfx("198.18.21.0/24"), MinLen: 24, MaxLen: 32}},
	})
	host.sink.waitFor(t, 10*time.Second, "host takes torB, not torA", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, torB) && lacks(m, torA)
	})
	for i, addr := range []netip.Addr{addrA, addrC} {
		if st := statusOf(t, host, addr); st.State != "established" || !st.EstablishedAt.Equal(sessionsBefore[i].EstablishedAt) {
			t.Errorf("session to %v was reset by an import rule change: %+v, before %+v", addr, st, sessionsBefore[i])
		}
	}

	// NotIn, and an explicit Accept of routes learned from peers: the host then passes the tor's
	// route on to the other peer, which it never does by itself.
	withFilters(&Filters{
		Export: []FilterRule{{Filter: "tor-out", Family: 4, Prefix: pfx("198.18.20.0/24"), MinLen: 24, MaxLen: 32, Negate: true}},
	})
	toOther := peerOf(host, other)
	toOther.Filters = &Filters{Export: []FilterRule{{Filter: "transit", Family: 4, Accept: true, RemoteOnly: true}}}
	toTor := peerOf(host, tor)
	toTor.Filters = &Filters{Export: []FilterRule{{Filter: "tor-out", Family: 4, Prefix: pfx("198.18.20.0/24"), MinLen: 24, MaxLen: 32, Negate: true}}}
	setPeers(t, host, toTor, toOther)
	host.sink.waitFor(t, 10*time.Second, "host takes torB again once the import rule is gone", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, torA, torB)
	})
	tor.sink.waitFor(t, 10*time.Second, "tor gets own1 only", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, own1) && lacks(m, own2, borrowed)
	})
	other.sink.waitFor(t, 10*time.Second, "the other peer gets the tor's routes too", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, own1, own2, borrowed, torA, torB)
	})
	for i, addr := range []netip.Addr{addrA, addrC} {
		if st := statusOf(t, host, addr); st.State != "established" || !st.EstablishedAt.Equal(sessionsBefore[i].EstablishedAt) {
			t.Errorf("session to %v was reset by an export rule change: %+v, before %+v", addr, st, sessionsBefore[i])
		}
	}

	// No filters: back to the speaker's own rules (no transit).
	setPeers(t, host, peerOf(host, tor), peerOf(host, other))
	tor.sink.waitFor(t, 10*time.Second, "tor gets everything the host owns", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, own1, own2, borrowed)
	})
	// The other peer's session is reset to take back the tor's routes (GoBGP cannot withdraw
	// them otherwise); it comes back after GoBGP's idle hold.
	other.sink.waitFor(t, 60*time.Second, "the other peer loses the tor's routes", func(m map[netip.Prefix][]netip.Addr) bool {
		return has(m, own1, own2, borrowed) && lacks(m, torA, torB)
	})
}

// The speaker's own reading of a rule must agree with how GoBGP applies it (TestFilters): it
// decides which of this host's routes are withdrawn before an export rule change.
func TestFilterRuleMatches(t *testing.T) {
	in24 := FilterRule{Family: 4, Prefix: pfx("198.18.20.0/24"), MinLen: 24, MaxLen: 32}
	tests := []struct {
		name string
		rule FilterRule
		p    string
		want bool
	}{
		{"no prefix matches all", FilterRule{Family: 4}, "203.0.113.0/24", true},
		{"equal", FilterRule{Prefix: pfx("198.18.20.0/24"), Exact: true}, "198.18.20.0/24", true},
		{"equal, longer", FilterRule{Prefix: pfx("198.18.20.0/24"), Exact: true}, "198.18.20.0/26", false},
		{"not equal", FilterRule{Prefix: pfx("198.18.20.0/24"), Exact: true, Negate: true}, "198.18.20.0/26", true},
		{"in", in24, "198.18.20.64/26", true},
		{"in, the prefix itself", in24, "198.18.20.0/24", true},
		{"in, shorter", in24, "198.18.0.0/16", false},
		{"in, outside", in24, "198.18.21.0/26", false},
		{"in, length above max", FilterRule{Prefix: pfx("198.18.20.0/24"), MinLen: 24, MaxLen: 26}, "198.18.20.5/32", false},
		{"in, length below min", FilterRule{Prefix: pfx("198.18.0.0/16"), MinLen: 26, MaxLen: 32}, "198.18.20.0/24", false},
		{"not in", FilterRule{Prefix: pfx("198.18.20.0/24"), MinLen: 24, MaxLen: 32, Negate: true}, "198.18.30.5/32", true},
		{"v6 in", FilterRule{Family: 6, Prefix: pfx("2001:db8::/32"), MinLen: 32, MaxLen: 128}, "2001:db8:1::/64", true},
	}
	for _, tc := range tests {
		if got := tc.rule.matches(pfx(tc.p)); got != tc.want {
			t.Errorf("%s: %+v matches %s = %v, want %v", tc.name, tc.rule, tc.p, got, tc.want)
		}
	}
	f := &Filters{Export: []FilterRule{
		{Family: 6, Accept: false},
		{Family: 4, Prefix: pfx("198.18.21.0/24"), MinLen: 24, MaxLen: 32},
		{Family: 4, Accept: true, RemoteOnly: true},
		{Family: 4, Accept: true, Prefix: pfx("198.18.0.0/16"), MinLen: 16, MaxLen: 32},
	}}
	for _, tc := range []struct {
		p             string
		local, remote bool
	}{
		{"198.18.21.0/26", false, false}, // the Reject rule comes first for both
		{"198.18.20.0/26", true, true},   // local: no rule but the last matches; remote: RemoteOnly Accept
		{"203.0.113.0/24", true, true},   // local: no rule matches, the policy's own accept; remote: RemoteOnly Accept
		{"2001:db8::/64", false, false},
	} {
		if got := exportsLocal(f, pfx(tc.p)); got != tc.local {
			t.Errorf("exportsLocal(%s) = %v, want %v", tc.p, got, tc.local)
		}
		if got := acceptsRemote(f, pfx(tc.p)); got != tc.remote {
			t.Errorf("acceptsRemote(%s) = %v, want %v", tc.p, got, tc.remote)
		}
	}
	if !exportsLocal(nil, pfx("198.18.0.0/26")) || acceptsRemote(nil, pfx("198.18.0.0/26")) {
		t.Error("no filters: local routes go out, learned ones do not")
	}
}

// An export Accept rule ends evaluation before the policy's own statements, so the filter's
// statements set the peer's next hop mode themselves: on every route an Accept passes (this host's
// own too, where self and keep both give the session address), never on a Reject, never on import.
func TestFilterStatementsNextHop(t *testing.T) {
	rules := []FilterRule{
		{Filter: "f", Family: 4, Accept: true, Prefix: pfx("198.18.0.0/16"), MinLen: 16, MaxLen: 32},
		{Filter: "f", Family: 4, Accept: true, RemoteOnly: true},
		{Filter: "f", Family: 4},
	}
	type nh struct{ Self, Unchanged int }
	for _, c := range []struct {
		mode NextHopMode
		dir  string
		want nh
	}{
		{NextHopAuto, "export", nh{}},
		{NextHopSelf, "export", nh{Self: 3}}, // the Accept, and the RemoteOnly Accept's two route types
		{NextHopKeep, "export", nh{Unchanged: 3}},
		{NextHopSelf, "import", nh{}},
		{NextHopKeep, "import", nh{}},
	} {
		p := Peer{Address: addrA, NextHop: c.mode, Filters: &Filters{Export: rules, Import: rules}}
		_, stmts := filterStatements(c.dir, []Peer{p}, func(Peer) bool { return true })
		var got nh
		for _, st := range stmts {
			if st.Actions.GetNexthop() != nil && st.Actions.GetRouteAction().String() != "ACCEPT" {
				t.Errorf("mode %v %s: next hop set on %v", c.mode, c.dir, st)
			}
			if st.Actions.GetNexthop().GetSelf() {
				got.Self++
			}
			if st.Actions.GetNexthop().GetUnchanged() {
				got.Unchanged++
			}
		}
		if got != c.want {
			t.Errorf("mode %v %s: %+v statements set the next hop, want %+v", c.mode, c.dir, got, c.want)
		}
		if len(stmts) != 4 {
			t.Errorf("mode %v %s: %d statements, want 4", c.mode, c.dir, len(stmts))
		}
	}
}

// TestNextHopModes: a peer's next hop mode decides the next hop of routes passed on to it (here
// by a filter's Accept rule, from an eBGP ToR to another eBGP peer): Auto and Self give this
// host's address, Keep the ToR's. This host's own routes always carry its address. Changing the
// mode re-sends the routes without resetting the session.
func TestNextHopModes(t *testing.T) {
	tor, host, other := transitTrio(t)
	fromTor, own := pfx("198.18.10.0/24"), pfx("198.18.20.0/26")
	advertise(t, tor, map[netip.Prefix]Advert{fromTor: {NextHop: addrA}})
	advertise(t, host, map[netip.Prefix]Advert{own: {}})

	var established time.Time
	for _, c := range []struct {
		mode NextHopMode
		want netip.Addr
	}{{NextHopAuto, addrB}, {NextHopKeep, addrA}, {NextHopSelf, addrB}, {NextHopKeep, addrA}} {
		toOther := peerOf(host, other)
		toOther.NextHop = c.mode
		toOther.Filters = &Filters{Export: []FilterRule{{Filter: "transit", Family: 4, Accept: true, RemoteOnly: true}}}
		setPeers(t, host, peerOf(host, tor), toOther)
		want := map[netip.Prefix][]netip.Addr{fromTor: {c.want}, own: {addrB}}
		other.sink.waitFor(t, 10*time.Second, fmt.Sprintf("mode %v: the ToR's route via %v", c.mode, c.want), func(m map[netip.Prefix][]netip.Addr) bool {
			return cmp.Equal(m, want, netOpts)
		})
		st := statusOf(t, host, addrC)
		if established.IsZero() {
			established = st.EstablishedAt
		} else if st.State != "established" || !st.EstablishedAt.Equal(established) {
			t.Errorf("mode %v: session reset by a next hop mode change: %+v", c.mode, st)
		}
	}
}

// TestRefusedRemote: which peers are owed a reset when export rules change. A peer in the
// reflection set gets iBGP-learned routes by reflection anyway, so only an eBGP-learned route its
// old Accept rule sent, and its new rules refuse, makes it owed one; a peer outside it is owed one
// for any learned route, except those it sent itself.
func TestRefusedRemote(t *testing.T) {
	const local = 64512
	ebgp, ibgpPeer, target := addrA, addrB, addrC
	fromEBGP, fromIBGP := pfx("198.18.10.0/24"), pfx("198.18.11.0/24")
	learned := func(routes map[netip.Prefix]netip.Addr) *learnedRoutes {
		l := newLearnedRoutes(nil, time.Millisecond, time.Millisecond)
		for p, nh := range routes {
			path, err := buildPath(p, Advert{NextHop: nh})
			if err != nil {
				t.Fatal(err)
			}
			path.NeighborIp = nh.String()
			l.apply([]*api.Path{path})
		}
		return l
	}
	acceptAll := &Filters{Export: []FilterRule{{Filter: "transit", Family: 4, Accept: true, RemoteOnly: true}}}
	none := &Filters{}
	for _, c := range []struct {
		name      string
		routes    map[netip.Prefix]netip.Addr
		reflected bool
		want      []netip.Addr
	}{
		{"outside reflection, an iBGP-learned route", map[netip.Prefix]netip.Addr{fromIBGP: ibgpPeer}, false, []netip.Addr{target}},
		{"reflected to, an iBGP-learned route only", map[netip.Prefix]netip.Addr{fromIBGP: ibgpPeer}, true, nil},
		{"reflected to, an eBGP-learned route", map[netip.Prefix]netip.Addr{fromIBGP: ibgpPeer, fromEBGP: ebgp}, true, []netip.Addr{target}},
		{"its own routes only", map[netip.Prefix]netip.Addr{fromEBGP: target}, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Speaker{global: Global{ASN: local}, learned: learned(c.routes),
				peers: map[netip.Addr]Peer{
					ebgp:     {Address: ebgp, ASN: 65001},
					ibgpPeer: {Address: ibgpPeer, ASN: local},
					target:   {Address: target, ASN: local},
				},
				exportFilters: map[netip.Addr]*Filters{target: acceptAll}}
			var ibgp []string
			if c.reflected {
				ibgp = []string{hostPrefix(ibgpPeer), hostPrefix(target)}
			}
			got := s.refusedRemote(map[netip.Addr]*Filters{target: none}, ibgp)
			if diff := cmp.Diff(c.want, got, netOpts); diff != "" {
				t.Errorf("peers owed a reset (-want +got):\n%s", diff)
			}
		})
	}
}

// transitTrio starts three speakers in three ASes: a ToR and another peer, each peering with the
// host in the middle (whose own peers the test sets).
func transitTrio(t *testing.T) (tor, host, other *testSpeaker) {
	t.Helper()
	port := freePort(t, addrA, addrB, addrC)
	tor = startSpeaker(t, addrA, 65001, port, nil)
	host = startSpeaker(t, addrB, 65002, port, nil)
	other = startSpeaker(t, addrC, 65003, port, nil)
	setPeers(t, tor, peerOf(tor, host))
	setPeers(t, other, peerOf(other, host))
	return tor, host, other
}

// TestNextHopModesIPv6OverIPv4: on sessions over IPv4 that carry IPv6, an IPv6 route a filter's
// Accept passes on must not carry the session's IPv4 address (what BGP puts there for "self"),
// which no IPv6 route can use: Auto and Self give this host's IPv6 next hop, Keep the ToR's.
// This host's own IPv6 routes carry its IPv6 next hop under every mode, Self included.
func TestNextHopModesIPv6OverIPv4(t *testing.T) {
	tor, host, other := transitTrio(t)
	dual := Families{IPv4: true, IPv6: true}
	torNH, hostNH, otherNH := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3")
	toHost := peerOf(tor, host)
	toHost.Families, toHost.IPv6NextHop = dual, torNH
	setPeers(t, tor, toHost)
	fromOther := peerOf(other, host)
	fromOther.Families, fromOther.IPv6NextHop = dual, otherNH
	setPeers(t, other, fromOther)

	fromTor, own := pfx("2001:db8:10::/48"), pfx("2001:db8:20::/122")
	advertise(t, tor, map[netip.Prefix]Advert{fromTor: {NextHop: torNH}})
	advertise(t, host, map[netip.Prefix]Advert{own: {}})

	for _, c := range []struct {
		mode NextHopMode
		want netip.Addr
	}{{NextHopAuto, hostNH}, {NextHopKeep, torNH}, {NextHopSelf, hostNH}} {
		toTor := peerOf(host, tor)
		toTor.Families, toTor.IPv6NextHop = dual, hostNH
		toOther := peerOf(host, other)
		toOther.Families, toOther.IPv6NextHop, toOther.NextHop = dual, hostNH, c.mode
		toOther.Filters = &Filters{Export: []FilterRule{
			{Filter: "transit", Family: 6, Accept: true, RemoteOnly: true},
			{Filter: "own", Family: 6, Accept: true, Prefix: own, Exact: true},
		}}
		setPeers(t, host, toTor, toOther)
		want := map[netip.Prefix][]netip.Addr{fromTor: {c.want}, own: {hostNH}}
		other.sink.waitFor(t, 10*time.Second, fmt.Sprintf("mode %v: the ToR's IPv6 route via %v, the host's own via %v", c.mode, c.want, hostNH), func(m map[netip.Prefix][]netip.Addr) bool {
			return cmp.Equal(m, want, netOpts)
		})
	}
}

package speaker

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
)

func TestDecodePath(t *testing.T) {
	v4path, err := buildPath(pfx("198.18.0.0/26"), Advert{NextHop: addrA, Communities: []Community{1}})
	if err != nil {
		t.Fatal(err)
	}
	v6path, err := buildPath(pfx("2001:db8:1000::/122"), Advert{NextHop: netip.MustParseAddr("2001:db8::2")})
	if err != nil {
		t.Fatal(err)
	}
	noNH, err := buildPath(pfx("198.18.0.64/26"), Advert{})
	if err != nil {
		t.Fatal(err)
	}
	other := &api.Path{Nlri: mustAny(&api.NextHopAttribute{NextHop: "1.2.3.4"})}
	tests := []struct {
		name    string
		path    *api.Path
		want    netip.Prefix
		wantNH  netip.Addr
		wantErr bool
	}{
		{name: "ipv4", path: v4path, want: pfx("198.18.0.0/26"), wantNH: addrA},
		{name: "ipv6 via mp_reach", path: v6path, want: pfx("2001:db8:1000::/122"), wantNH: netip.MustParseAddr("2001:db8::2")},
		{name: "unspecified next hop", path: noNH, want: pfx("198.18.0.64/26"), wantNH: netip.MustParseAddr("0.0.0.0")},
		{name: "not a unicast prefix", path: other, wantErr: true},
		{name: "no nlri", path: &api.Path{}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, nh, err := decodePath(tc.path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("decodePath error = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want || nh != tc.wantNH {
				t.Errorf("decodePath = %v via %v, want %v via %v", got, nh, tc.want, tc.wantNH)
			}
		})
	}
}

// FuzzParseIPAddressPrefix checks the hand-written wire parser against the protobuf library:
// whatever proto.Unmarshal accepts as a valid prefix, ours must read identically, and no input
// may make it panic.
func FuzzParseIPAddressPrefix(f *testing.F) {
	for _, p := range []*api.IPAddressPrefix{
		{Prefix: "198.18.0.0", PrefixLen: 26},
		{Prefix: "2001:db8::", PrefixLen: 122},
		{Prefix: "10.0.0.1", PrefixLen: 33},
	} {
		b, _ := proto.Marshal(p)
		f.Add(b)
	}
	f.Add([]byte{0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseIPAddressPrefix(b)
		var ref api.IPAddressPrefix
		if proto.Unmarshal(b, &ref) != nil {
			return
		}
		a, aerr := netip.ParseAddr(ref.Prefix)
		if aerr != nil || uint64(ref.PrefixLen) > uint64(a.Unmap().BitLen()) {
			if err == nil {
				t.Fatalf("accepted %x as %v; protobuf reads %+v which is not a valid prefix", b, got, &ref)
			}
			return
		}
		want := netip.PrefixFrom(a.Unmap(), int(ref.PrefixLen)).Masked()
		if err != nil || got != want {
			t.Fatalf("parse %x = %v, %v; protobuf reads %v", b, got, err, want)
		}
	})
}

func FuzzFirstString(f *testing.F) {
	b, _ := proto.Marshal(&api.MpReachNLRIAttribute{NextHops: []string{"2001:db8::1", "fe80::1"}})
	f.Add(b)
	b, _ = proto.Marshal(&api.NextHopAttribute{NextHop: "192.0.2.1"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := firstString(b, 2)
		var ref api.MpReachNLRIAttribute
		if proto.Unmarshal(b, &ref) != nil || err != nil {
			return
		}
		want := ""
		if len(ref.NextHops) > 0 {
			want = ref.NextHops[0]
		}
		if got != want {
			t.Fatalf("firstString(%x) = %q, protobuf reads %q", b, got, want)
		}
	})
}

func TestLearnedRoutesApply(t *testing.T) {
	mk := func(prefix string, nh netip.Addr, withdraw bool, neighbor string) *api.Path {
		p, err := buildPath(pfx(prefix), Advert{NextHop: nh})
		if err != nil {
			t.Fatal(err)
		}
		p.IsWithdraw, p.NeighborIp = withdraw, neighbor
		return p
	}
	tor1, tor2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	type event []*api.Path
	tests := []struct {
		name   string
		local  []netip.Addr
		events []event
		want   map[netip.Prefix][]netip.Addr
	}{
		{
			name:   "ecmp set replaces per prefix",
			events: []event{{mk("198.18.0.0/26", tor1, false, "192.0.2.1"), mk("198.18.0.0/26", tor2, false, "192.0.2.2")}},
			want:   map[netip.Prefix][]netip.Addr{pfx("198.18.0.0/26"): {tor1, tor2}},
		},
		{
			name: "later event shrinks the set",
			events: []event{
				{mk("198.18.0.0/26", tor2, false, "192.0.2.2"), mk("198.18.0.0/26", tor1, false, "192.0.2.1")},
				{mk("198.18.0.0/26", tor2, false, "192.0.2.2")},
			},
			want: map[netip.Prefix][]netip.Addr{pfx("198.18.0.0/26"): {tor2}},
		},
		{
			name: "withdrawn best removes the prefix",
			events: []event{
				{mk("198.18.0.0/26", tor1, false, "192.0.2.1"), mk("198.18.1.0/26", tor1, false, "192.0.2.1")},
				{mk("198.18.0.0/26", tor1, true, "192.0.2.1")},
			},
			want: map[netip.Prefix][]netip.Addr{pfx("198.18.1.0/26"): {tor1}},
		},
		{
			name: "locally originated best path is not a learned route",
			events: []event{
				{mk("198.18.0.0/26", tor1, false, "192.0.2.1")},
				{mk("198.18.0.0/26", addrA, false, "<nil>")},
			},
			want: map[netip.Prefix][]netip.Addr{},
		},
		{
			name:   "next hops that are this host are skipped",
			local:  []netip.Addr{tor1},
			events: []event{{mk("198.18.0.0/26", tor1, false, "192.0.2.1"), mk("198.18.0.0/26", tor2, false, "192.0.2.2"), mk("198.18.1.0/26", tor1, false, "192.0.2.1")}},
			want:   map[netip.Prefix][]netip.Addr{pfx("198.18.0.0/26"): {tor2}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLearnedRoutes(nil, 0, 0)
			m := map[netip.Addr]bool{}
			for _, a := range tc.local {
				m[a] = true
			}
			l.setLocal(m)
			for _, ev := range tc.events {
				l.apply(ev)
			}
			if diff := cmp.Diff(tc.want, l.snapshot(), netOpts); diff != "" {
				t.Errorf("learned routes differ (-want +got):\n%s", diff)
			}
		})
	}
}

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/datastore/api"
)

var netOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func ip(s string) netip.Addr     { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix  { return netip.MustParsePrefix(s) }
func asn(n uint32) *api.ASNumber { a := api.ASNumber(n); return &a }
func boolp(b bool) *bool         { return &b }

func node(name, v4, v6 string, labels map[string]string, mod ...func(*api.NodeBGPSpec)) *api.Node {
	n := &api.Node{Metadata: api.ObjectMeta{Name: name, Labels: labels}}
	if v4 != "" || v6 != "" {
		n.Spec.BGP = &api.NodeBGPSpec{IPv4Address: v4, IPv6Address: v6}
		for _, m := range mod {
			m(n.Spec.BGP)
		}
	}
	return n
}

func rr(cluster string) func(*api.NodeBGPSpec) {
	return func(b *api.NodeBGPSpec) { b.RouteReflectorClusterID = cluster }
}

func pool(name, cidr string, noExport bool) *api.IPPool {
	return &api.IPPool{Metadata: api.ObjectMeta{Name: name}, Spec: api.IPPoolSpec{CIDR: cidr, DisableBGPExport: noExport}}
}

func bgpConfig(name string, mod func(*api.BGPConfigurationSpec)) *api.BGPConfiguration {
	c := &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: name}}
	mod(&c.Spec)
	return c
}

func peer(name string, spec api.BGPPeerSpec) *api.BGPPeer {
	return &api.BGPPeer{Metadata: api.ObjectMeta{Name: name}, Spec: spec}
}

func meshOff(s *api.BGPConfigurationSpec) { s.NodeToNodeMeshEnabled = boolp(false) }

var gr = speaker.GracefulRestart{Enabled: true, RestartTime: 120, NotificationEnabled: true}

func threeNodes() []*api.Node {
	return []*api.Node{
		node("host-1", "192.0.2.11/24", "", nil),
		node("host-2", "192.0.2.12/24", "", nil),
		node("host-3", "192.0.2.13/24", "", nil),
	}
}

func TestPeers(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want []speaker.Peer
		warn string // substring of a warning, if one is expected
	}{
		{
			name: "default full mesh, lower address dials",
			in:   Input{NodeName: "host-2", Nodes: threeNodes()},
			want: []speaker.Peer{
				{Address: ip("192.0.2.11"), ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.12"),
					Passive: true, GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
				{Address: ip("192.0.2.13"), ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.12"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
		},
		{
			name: "mesh uses per-node AS and mesh restart time; dual stack over the IPv4 session",
			in: Input{NodeName: "host-1", Nodes: []*api.Node{
				node("host-1", "192.0.2.11/24", "2001:db8::11/64", nil),
				node("host-2", "192.0.2.12/24", "2001:db8::12/64", nil, func(b *api.NodeBGPSpec) { b.ASNumber = asn(65002) }),
			}, Configs: []*api.BGPConfiguration{bgpConfig("default", func(s *api.BGPConfigurationSpec) {
				s.NodeMeshMaxRestartTime = &api.Duration{Duration: 300 * time.Second}
			})}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.12"), ASN: 65002, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: speaker.GracefulRestart{Enabled: true, RestartTime: 300, NotificationEnabled: true},
					// IPv6 routes on this IPv4 session carry this node's IPv6 address.
					Families: speaker.Families{IPv4: true, IPv6: true}, IPv6NextHop: ip("2001:db8::11")},
			},
		},
		{
			name: "mesh off, global ToR with port, node-scoped peer for another node ignored",
			in: Input{NodeName: "host-1", Nodes: threeNodes(),
				Configs: []*api.BGPConfiguration{bgpConfig("default", meshOff)},
				Peers: []*api.BGPPeer{
					peer("tor", api.BGPPeerSpec{PeerIP: "192.0.2.1:1179", ASNumber: 65000,
						KeepaliveTime: &api.Duration{Duration: 10 * time.Second}, HoldTime: &api.Duration{Duration: 30 * time.Second},
						EBGPMultihopTTL: intp(2), MaxRestartTime: &api.Duration{Duration: 60 * time.Second}}),
					peer("other", api.BGPPeerSpec{Node: "host-2", PeerIP: "192.0.2.2", ASNumber: 65000}),
				}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.1"), Port: 1179, ASN: 65000, Type: speaker.PeerTypeGlobal, SourceAddress: ip("192.0.2.11"),
					KeepaliveSeconds: 10, HoldSeconds: 30, MultihopTTL: 2,
					GracefulRestart: speaker.GracefulRestart{Enabled: true, RestartTime: 60, NotificationEnabled: true},
					Families:        speaker.Families{IPv4: true}},
			},
		},
		{
			name: "nodeSelector match, sourceAddress None, next-hop-self, local AS",
			in: Input{NodeName: "host-1", Nodes: []*api.Node{node("host-1", "192.0.2.11", "", map[string]string{"rack": "a"})},
				Peers: []*api.BGPPeer{
					peer("rack-a", api.BGPPeerSpec{NodeSelector: "rack == 'a'", PeerIP: "192.0.2.1", ASNumber: 65000,
						SourceAddress: "None", NextHopMode: "Self", LocalASNumber: asn(65100)}),
					peer("rack-b", api.BGPPeerSpec{NodeSelector: "rack == 'b'", PeerIP: "192.0.2.2", ASNumber: 65000}),
				}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.1"), ASN: 65000, LocalASN: 65100, Type: speaker.PeerTypeNode, NextHop: speaker.NextHopSelf,
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
		},
		{
			// Every node listens where its own configuration says; a mesh session dials that port
			// (host-1 dials the higher addresses).
			name: "mesh sessions follow the other node's listen port",
			in: Input{NodeName: "host-1", Nodes: threeNodes(), Configs: []*api.BGPConfiguration{
				bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.ListenPort = 1179 }),
				bgpConfig("node.host-1", func(s *api.BGPConfigurationSpec) { s.ListenPort = 179 }),
				bgpConfig("node.host-3", func(s *api.BGPConfigurationSpec) { s.ListenPort = 3179 }),
			}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.12"), Port: 1179, ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
				{Address: ip("192.0.2.13"), Port: 3179, ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
		},
		{
			name: "next hop kept: keepOriginalNextHop, or nextHopMode Keep",
			in: Input{NodeName: "host-1", Nodes: []*api.Node{node("host-1", "192.0.2.11", "", nil)},
				Configs: []*api.BGPConfiguration{bgpConfig("default", meshOff)},
				Peers: []*api.BGPPeer{
					peer("tor-1", api.BGPPeerSpec{PeerIP: "192.0.2.1", ASNumber: 65000, KeepOriginalNextHop: true}),
					peer("tor-2", api.BGPPeerSpec{PeerIP: "192.0.2.2", ASNumber: 65000, NextHopMode: "Keep"}),
					peer("tor-3", api.BGPPeerSpec{PeerIP: "192.0.2.3", ASNumber: 65000, NextHopMode: "Auto"}),
				}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.1"), ASN: 65000, Type: speaker.PeerTypeGlobal, SourceAddress: ip("192.0.2.11"),
					NextHop: speaker.NextHopKeep, GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
				{Address: ip("192.0.2.2"), ASN: 65000, Type: speaker.PeerTypeGlobal, SourceAddress: ip("192.0.2.11"),
					NextHop: speaker.NextHopKeep, GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
				{Address: ip("192.0.2.3"), ASN: 65000, Type: speaker.PeerTypeGlobal, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
		},
		{
			name: "explicit peer to a node wins over the mesh session",
			in: Input{NodeName: "host-1", Nodes: threeNodes(), Peers: []*api.BGPPeer{
				peer("to-host-3", api.BGPPeerSpec{Node: "host-1", PeerIP: "192.0.2.13", ASNumber: 64512, HoldTime: &api.Duration{Duration: 9 * time.Second}}),
			}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.12"), ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
				{Address: ip("192.0.2.13"), ASN: 64512, Type: speaker.PeerTypeNode, SourceAddress: ip("192.0.2.11"),
					HoldSeconds: 9, GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
			warn: "already configured by BGPPeer to-host-3",
		},
		{
			name: "bad peer IP is a warning, other peers unaffected",
			in: Input{NodeName: "host-1", Nodes: threeNodes()[:1], Peers: []*api.BGPPeer{
				peer("bad", api.BGPPeerSpec{PeerIP: "not-an-ip", ASNumber: 65000}),
				peer("good", api.BGPPeerSpec{PeerIP: "192.0.2.1", ASNumber: 65000}),
			}},
			want: []speaker.Peer{
				{Address: ip("192.0.2.1"), ASN: 65000, Type: speaker.PeerTypeGlobal, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
			warn: `BGPPeer bad skipped: parse peerIP "not-an-ip"`,
		},
		{
			name: "IPv6 ToR needs a node IPv6 address",
			in: Input{NodeName: "host-1", Nodes: threeNodes()[:1], Peers: []*api.BGPPeer{
				peer("tor6", api.BGPPeerSpec{PeerIP: "[2001:db8::1]:179", ASNumber: 65000}),
			}},
			want: nil,
			warn: "no address in the family of 2001:db8::1",
		},
		{
			name: "mesh skips a node without addresses and says so",
			in:   Input{NodeName: "host-1", Nodes: append(threeNodes()[:2], node("ghost", "", "", nil))},
			want: []speaker.Peer{
				{Address: ip("192.0.2.12"), ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("192.0.2.11"),
					GracefulRestart: gr, Families: speaker.Families{IPv4: true}},
			},
			warn: "mesh peer ghost skipped: the Node has no BGP address",
		},
		{
			name: "IPv6-only nodes mesh over IPv6",
			in: Input{NodeName: "host-1", Nodes: []*api.Node{
				node("host-1", "", "2001:db8::11/64", nil), node("host-2", "", "2001:db8::12/64", nil),
			}},
			want: []speaker.Peer{
				{Address: ip("2001:db8::12"), ASN: 64512, Type: speaker.PeerTypeMesh, SourceAddress: ip("2001:db8::11"),
					GracefulRestart: gr, Families: speaker.Families{IPv6: true}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Compute(tc.in)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if diff := cmp.Diff(tc.want, d.Peers, netOpts); diff != "" {
				t.Errorf("peers differ (-want +got):\n%s", diff)
			}
			checkWarning(t, d.Warnings, tc.warn)
		})
	}
}

func intp(i int) *int { return &i }

func checkWarning(t *testing.T, warnings []string, want string) {
	t.Helper()
	if want == "" {
		if len(warnings) != 0 {
			t.Errorf("unexpected warnings: %q", warnings)
		}
		return
	}
	for _, w := range warnings {
		if strings.Contains(w, want) {
			return
		}
	}
	t.Errorf("no warning containing %q in %q", want, warnings)
}

// TestRouteReflectorTopology: one BGPPeer "every node peers with the reflectors", mesh off.
func TestRouteReflectorTopology(t *testing.T) {
	nodes := []*api.Node{
		node("rr-1", "192.0.2.1", "", map[string]string{"rr": "true"}, rr("224.0.0.1")),
		node("rr-2", "192.0.2.2", "", map[string]string{"rr": "true"}, rr("224.0.0.1")),
		node("host-1", "192.0.2.11", "", nil),
		node("host-2", "192.0.2.12", "", nil),
	}
	peers := []*api.BGPPeer{peer("to-rr", api.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "rr == 'true'"})}
	cfgs := []*api.BGPConfiguration{bgpConfig("default", meshOff)}
	base := speaker.Peer{ASN: 64512, GracefulRestart: gr, Families: speaker.Families{IPv4: true}}
	with := func(addr, src string, typ speaker.PeerType, client bool) speaker.Peer {
		p := base
		p.Address, p.SourceAddress, p.Type = ip(addr), ip(src), typ
		p.Passive = p.Address.Less(p.SourceAddress)
		if client {
			p.RouteReflectorClient, p.RRClusterID = true, "224.0.0.1"
		}
		return p
	}
	tests := []struct {
		node string
		want []speaker.Peer
	}{
		{node: "host-1", want: []speaker.Peer{
			with("192.0.2.1", "192.0.2.11", speaker.PeerTypeReflector, false),
			with("192.0.2.2", "192.0.2.11", speaker.PeerTypeReflector, false),
		}},
		{node: "rr-1", want: []speaker.Peer{
			// Same cluster: plain iBGP between the reflectors.
			with("192.0.2.2", "192.0.2.1", speaker.PeerTypeNode, false),
			with("192.0.2.11", "192.0.2.1", speaker.PeerTypeRRClient, true),
			with("192.0.2.12", "192.0.2.1", speaker.PeerTypeRRClient, true),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.node, func(t *testing.T) {
			d, err := Compute(Input{NodeName: tc.node, Nodes: nodes, Peers: peers, Configs: cfgs})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, d.Peers, netOpts); diff != "" {
				t.Errorf("peers differ (-want +got):\n%s", diff)
			}
			checkWarning(t, d.Warnings, "")
		})
	}
}

// TestReflectionFollowsLocalAS: whether a session is iBGP, and so may reflect, is decided by the
// AS it presents (localASNumber), not the node's own.
func TestReflectionFollowsLocalAS(t *testing.T) {
	nodes := []*api.Node{
		node("rr-1", "192.0.2.1", "", map[string]string{"rr": "true"}, rr("224.0.0.1")),
		node("host-1", "192.0.2.11", "", nil, func(b *api.NodeBGPSpec) { b.ASNumber = asn(65011) }),
	}
	cfgs := []*api.BGPConfiguration{bgpConfig("default", meshOff)}
	for _, tc := range []struct {
		name     string
		local    *api.ASNumber
		wantType speaker.PeerType
	}{
		{"own AS differs: eBGP, no reflection", nil, speaker.PeerTypeNode},
		{"local AS equal to the peer's: iBGP, a client", asn(65011), speaker.PeerTypeRRClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers := []*api.BGPPeer{peer("to-hosts", api.BGPPeerSpec{NodeSelector: "rr == 'true'", PeerSelector: "!has(rr)", LocalASNumber: tc.local})}
			d, err := Compute(Input{NodeName: "rr-1", Nodes: nodes, Peers: peers, Configs: cfgs})
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Peers) != 1 || d.Peers[0].Type != tc.wantType || d.Peers[0].RouteReflectorClient != (tc.wantType == speaker.PeerTypeRRClient) {
				t.Errorf("peers %+v, want one of type %s", d.Peers, tc.wantType)
			}
		})
	}
}

func TestPasswords(t *testing.T) {
	ref := &api.BGPPassword{SecretKeyRef: &api.SecretKeySelector{Name: "bgp", Key: "tor"}}
	nodes := threeNodes()[:1]
	peers := []*api.BGPPeer{peer("tor", api.BGPPeerSpec{PeerIP: "192.0.2.1", ASNumber: 65000, Password: ref})}
	tests := []struct {
		name     string
		fn       PasswordFunc
		wantPass string
		wantPeer bool
		warn     string
	}{
		{name: "resolved", fn: func(r *api.BGPPassword) (string, error) {
			if r != ref {
				return "", errors.New("wrong reference")
			}
			return "s3cret", nil
		}, wantPass: "s3cret", wantPeer: true},
		{name: "reader fails", fn: func(*api.BGPPassword) (string, error) { return "", errors.New("no such file") },
			warn: "read password: no such file"},
		{name: "no reader", warn: "no password reader"},
	}
	// secretKeyRef.optional: a secret that does not exist means a session without a password (as
	// Kubernetes treats an optional secret); one that exists but cannot be read still skips it.
	optional := true
	optRef := &api.BGPPassword{SecretKeyRef: &api.SecretKeySelector{Name: "bgp", Key: "tor", Optional: &optional}}
	optPeers := []*api.BGPPeer{peer("tor", api.BGPPeerSpec{PeerIP: "192.0.2.1", ASNumber: 65000, Password: optRef})}
	missing := func(*api.BGPPassword) (string, error) {
		return "", fmt.Errorf("read bgp password: %w", &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist})
	}
	tests = append(tests, []struct {
		name     string
		fn       PasswordFunc
		wantPass string
		wantPeer bool
		warn     string
	}{
		{name: "optional and missing", fn: missing, wantPeer: true, warn: "optional password secret bgp/tor does not exist: session without a password"},
		{name: "optional, present", fn: func(*api.BGPPassword) (string, error) { return "s3cret", nil }, wantPass: "s3cret", wantPeer: true},
		{name: "optional but unreadable", fn: func(*api.BGPPassword) (string, error) { return "", errors.New("permission denied") },
			warn: "read password: permission denied"},
	}...)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := peers
			if i >= 3 {
				ps = optPeers
			}
			d, err := Compute(Input{NodeName: "host-1", Nodes: nodes, Peers: ps, Password: tc.fn})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(d.Peers) == 1; got != tc.wantPeer {
				t.Fatalf("peer configured = %v, want %v (%+v)", got, tc.wantPeer, d.Peers)
			}
			if tc.wantPeer && d.Peers[0].Password != tc.wantPass {
				t.Errorf("password %q, want %q", d.Peers[0].Password, tc.wantPass)
			}
			checkWarning(t, d.Warnings, tc.warn)
		})
	}
}

func TestAdvertised(t *testing.T) {
	me := node("host-1", "192.0.2.11/24", "2001:db8::11/64", nil)
	pools := []*api.IPPool{
		pool("default", "198.18.0.0/16", false),
		pool("private", "198.19.0.0/16", true),
		pool("v6", "2001:db8:1000::/48", false),
	}
	tests := []struct {
		name string
		in   Input
		want map[netip.Prefix]speaker.Advert
		warn string
	}{
		{
			name: "blocks and borrowed addresses; disableBGPExport never advertised",
			in: Input{Blocks: []netip.Prefix{pfx("198.18.0.0/26"), pfx("198.19.0.0/26"), pfx("2001:db8:1000::/122")},
				Borrowed: []netip.Addr{ip("198.18.1.5"), ip("198.19.1.5"), ip("198.18.0.7")}},
			want: map[netip.Prefix]speaker.Advert{
				pfx("198.18.0.0/26"):       {},
				pfx("2001:db8:1000::/122"): {},
				pfx("198.18.1.5/32"):       {},
			},
		},
		{
			name: "block outside every pool is not advertised",
			in:   Input{Blocks: []netip.Prefix{pfx("198.51.100.0/26")}},
			want: map[netip.Prefix]speaker.Advert{},
			warn: "198.51.100.0/26 not advertised: it is in no IP pool",
		},
		{
			name: "service ranges with named, literal and large communities",
			in: Input{Blocks: []netip.Prefix{pfx("198.18.0.0/26")}, Configs: []*api.BGPConfiguration{bgpConfig("default", func(s *api.BGPConfigurationSpec) {
				s.ServiceClusterIPs = []api.ServiceIPBlock{{CIDR: "198.18.128.0/20"}}
				s.ServiceExternalIPs = []api.ServiceIPBlock{{CIDR: "203.0.113.0/28"}}
				s.Communities = []api.Community{{Name: "no-export-ish", Value: "65000:100"}}
				s.PrefixAdvertisements = []api.PrefixAdvertisement{
					{CIDR: "198.18.128.0/20", Communities: []string{"no-export-ish", "65000:7"}},
					{CIDR: "203.0.113.0/24", Communities: []string{"65000:1:2"}},
				}
			})}},
			want: map[netip.Prefix]speaker.Advert{
				pfx("198.18.0.0/26"):   {},
				pfx("198.18.128.0/20"): {Communities: []speaker.Community{65000<<16 | 7, 65000<<16 | 100}},
				pfx("203.0.113.0/28"):  {},
			},
			warn: "large communities are not supported",
		},
		{
			name: "a bare service address is one host",
			in: Input{Configs: []*api.BGPConfiguration{bgpConfig("default", func(s *api.BGPConfigurationSpec) {
				s.ServiceExternalIPs = []api.ServiceIPBlock{{CIDR: "203.0.113.9"}, {CIDR: "2001:db8:ff::9"}}
				s.ServiceLoadBalancerIPs = []api.ServiceIPBlock{{CIDR: "203.0.113.77/24"}}
			})}},
			want: map[netip.Prefix]speaker.Advert{
				pfx("203.0.113.9/32"): {}, pfx("2001:db8:ff::9/128"): {}, pfx("203.0.113.0/24"): {},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.NodeName, tc.in.Nodes, tc.in.Pools = "host-1", []*api.Node{me}, pools
			d, err := Compute(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, d.Advertised, netOpts); diff != "" {
				t.Errorf("advertised differ (-want +got):\n%s", diff)
			}
			checkWarning(t, d.Warnings, tc.warn)
		})
	}
}

func TestGlobal(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want speaker.Global
	}{
		{
			name: "defaults",
			in:   Input{NodeName: "host-1", Nodes: threeNodes()[:1]},
			want: speaker.Global{ASN: 64512, RouterID: ip("192.0.2.11"), ListenPort: 179,
				LocalAddresses: []netip.Addr{ip("192.0.2.11")}, GracefulRestart: gr},
		},
		{
			name: "node AS beats cluster AS; node config overrides port and binds to node IPs",
			in: Input{NodeName: "host-1",
				Nodes: []*api.Node{node("host-1", "192.0.2.11/24", "2001:db8::11/64", nil, func(b *api.NodeBGPSpec) { b.ASNumber = asn(65011) })},
				Configs: []*api.BGPConfiguration{
					bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.ASNumber = asn(65000); s.ListenPort = 179 }),
					bgpConfig("node.host-1", func(s *api.BGPConfigurationSpec) { s.ListenPort = 1179; s.BindMode = "NodeIP" }),
					bgpConfig("node.host-2", func(s *api.BGPConfigurationSpec) { s.ListenPort = 2179 }),
				}},
			want: speaker.Global{ASN: 65011, RouterID: ip("192.0.2.11"), ListenPort: 1179,
				ListenAddresses: []netip.Addr{ip("192.0.2.11"), ip("2001:db8::11")},
				LocalAddresses:  []netip.Addr{ip("192.0.2.11"), ip("2001:db8::11")}, GracefulRestart: gr},
		},
		{
			name: "cluster AS and IPv6-only router ID derived from the name",
			in: Input{NodeName: "host-6", Nodes: []*api.Node{node("host-6", "", "2001:db8::6", nil)},
				Configs: []*api.BGPConfiguration{bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.ASNumber = asn(65000) })}},
			want: speaker.Global{ASN: 65000, RouterID: routerID(self{name: "host-6"}), ListenPort: 179,
				LocalAddresses: []netip.Addr{ip("2001:db8::6")}, GracefulRestart: gr},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Compute(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, d.Global, netOpts); diff != "" {
				t.Errorf("global differs (-want +got):\n%s", diff)
			}
			if !d.Global.RouterID.Is4() {
				t.Errorf("router ID %v is not IPv4", d.Global.RouterID)
			}
		})
	}
}

func TestComputeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{name: "no node name", in: Input{Nodes: threeNodes()}, want: "node name is empty"},
		{name: "node missing", in: Input{NodeName: "host-9", Nodes: threeNodes()}, want: "host-9 not found"},
		{name: "node without addresses", in: Input{NodeName: "host-1", Nodes: []*api.Node{node("host-1", "", "", nil)}}, want: "no BGP address"},
		{name: "bad address", in: Input{NodeName: "host-1", Nodes: []*api.Node{node("host-1", "2001:db8::1", "", nil)}}, want: "not an IPv4 address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compute(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compute error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseCommunity(t *testing.T) {
	tests := []struct {
		in      string
		want    speaker.Community
		wantErr bool
	}{
		{in: "65000:100", want: 65000<<16 | 100},
		{in: " 0:0 ", want: 0},
		{in: "65535:65535", want: 0xffffffff},
		{in: "65536:1", wantErr: true},
		{in: "1:2:3", wantErr: true},
		{in: "100", wantErr: true},
		{in: "a:b", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseCommunity(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseCommunity(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParsePeerIP(t *testing.T) {
	tests := []struct {
		in       string
		want     netip.Addr
		wantPort uint16
		wantErr  bool
	}{
		{in: "192.0.2.1", want: ip("192.0.2.1")},
		{in: "192.0.2.1:1179", want: ip("192.0.2.1"), wantPort: 1179},
		{in: "2001:db8::1", want: ip("2001:db8::1")},
		{in: "[2001:db8::1]:179", want: ip("2001:db8::1"), wantPort: 179},
		{in: "::ffff:192.0.2.1", want: ip("192.0.2.1")},
		{in: "", wantErr: true},
		{in: "192.0.2.1:0", wantErr: true},
		{in: "fe80::1%eth0", wantErr: true},
		{in: "host.example", wantErr: true},
	}
	for _, tc := range tests {
		got, port, err := parsePeerIP(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want || port != tc.wantPort {
			t.Errorf("parsePeerIP(%q) = %v, %d, %v; want %v, %d, error %v", tc.in, got, port, err, tc.want, tc.wantPort, tc.wantErr)
		}
	}
}

func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{"65000:100", "1:2:3", "", ":", "65536:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommunity(s)
		if err != nil {
			return
		}
		// Whatever parses must print back to the same value.
		again, err := ParseCommunity(formatCommunity(c))
		if err != nil || again != c {
			t.Fatalf("round trip of %q: %d -> %q -> %d, %v", s, c, formatCommunity(c), again, err)
		}
	})
}

func formatCommunity(c speaker.Community) string {
	return strings.Join([]string{itoa(uint32(c) >> 16), itoa(uint32(c) & 0xffff)}, ":")
}

func itoa(v uint32) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}

func FuzzParsePeerIP(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "[2001:db8::1]:179", "1.2.3.4:65535", "[::1]:0", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, port, err := parsePeerIP(s)
		if err != nil {
			return
		}
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("parsePeerIP(%q) returned unusable address %v", s, a)
		}
		if port == 0 {
			return
		}
		// An address with a port must be reproducible from its parts.
		a2, p2, err := parsePeerIP(netip.AddrPortFrom(a, port).String())
		if err != nil || a2 != a || p2 != port {
			t.Fatalf("round trip of %q: %v %d -> %v %d %v", s, a, port, a2, p2, err)
		}
	})
}

func TestPeerFilters(t *testing.T) {
	i32 := func(n int32) *int32 { return &n }
	tor := api.BGPFilter{Metadata: api.ObjectMeta{Name: "tor"}, Spec: api.BGPFilterSpec{
		ImportV4: []api.BGPFilterRule{
			{Action: api.BGPFilterReject, MatchOperator: api.BGPFilterEqual, CIDR: "0.0.0.0/0"},
			{Action: api.BGPFilterAccept, MatchOperator: api.BGPFilterIn, CIDR: "10.0.0.0/8", PrefixLength: &api.BGPFilterPrefixLength{Min: i32(16), Max: i32(24)}},
		},
		ExportV4: []api.BGPFilterRule{{Action: api.BGPFilterReject, MatchOperator: api.BGPFilterNotIn, CIDR: "198.18.0.0/16"}},
		ExportV6: []api.BGPFilterRule{{Action: api.BGPFilterReject, Source: api.BGPFilterSourceRemotePeers}},
	}}
	more := api.BGPFilter{Metadata: api.ObjectMeta{Name: "more"}, Spec: api.BGPFilterSpec{
		ImportV6: []api.BGPFilterRule{
			{Action: api.BGPFilterReject, MatchOperator: api.BGPFilterNotEqual, CIDR: "2001:db8::/32"},
			// Never written through validation; a damaged store must not make it match everything.
			{Action: api.BGPFilterAccept, MatchOperator: api.BGPFilterIn, CIDR: "garbage"},
		},
	}}
	in := Input{NodeName: "host-1", Nodes: threeNodes()[:1], Filters: []*api.BGPFilter{&tor, &more},
		Peers: []*api.BGPPeer{
			peer("tor", api.BGPPeerSpec{PeerIP: "192.0.2.1", ASNumber: 65000, Filters: []string{"more", "missing", "tor"}}),
			peer("plain", api.BGPPeerSpec{PeerIP: "192.0.2.2", ASNumber: 65000}),
		}}
	d, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &speaker.Filters{
		Import: []speaker.FilterRule{
			{Filter: "more", Family: 6, Prefix: pfx("2001:db8::/32"), Exact: true, Negate: true, MinLen: 32, MaxLen: 128},
			{Filter: "tor", Family: 4, Prefix: pfx("0.0.0.0/0"), Exact: true, MinLen: 0, MaxLen: 32},
			{Filter: "tor", Family: 4, Accept: true, Prefix: pfx("10.0.0.0/8"), MinLen: 16, MaxLen: 24},
		},
		Export: []speaker.FilterRule{
			{Filter: "tor", Family: 4, Prefix: pfx("198.18.0.0/16"), Negate: true, MinLen: 16, MaxLen: 32},
			{Filter: "tor", Family: 6, RemoteOnly: true},
		},
	}
	if len(d.Peers) != 2 {
		t.Fatalf("peers: %+v", d.Peers)
	}
	if diff := cmp.Diff(want, d.Peers[0].Filters, netOpts); diff != "" {
		t.Errorf("filters of the tor peer (-want +got):\n%s", diff)
	}
	if d.Peers[1].Filters != nil {
		t.Errorf("a peer naming no filter got %+v", d.Peers[1].Filters)
	}
	for _, w := range []string{`BGPFilter "missing" does not exist`, `BGPFilter more: rule with cidr "garbage" left out`} {
		if !strings.Contains(strings.Join(d.Warnings, "\n"), w) {
			t.Errorf("no warning %q: %v", w, d.Warnings)
		}
	}
}

func TestLogLevel(t *testing.T) {
	tests := []struct {
		name    string
		configs []*api.BGPConfiguration
		want    string
	}{
		{name: "none", want: ""},
		{name: "default", configs: []*api.BGPConfiguration{bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.LogSeverityScreen = "Debug" })}, want: "Debug"},
		{name: "node over default", configs: []*api.BGPConfiguration{
			bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.LogSeverityScreen = "Info" }),
			bgpConfig("node.host-1", func(s *api.BGPConfigurationSpec) { s.LogSeverityScreen = "Warning" }),
			bgpConfig("node.host-2", func(s *api.BGPConfigurationSpec) { s.LogSeverityScreen = "Error" }),
		}, want: "Warning"},
		{name: "node without one inherits", configs: []*api.BGPConfiguration{
			bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.LogSeverityScreen = "Debug" }),
			bgpConfig("node.host-1", func(s *api.BGPConfigurationSpec) { s.ListenPort = 1179 }),
		}, want: "Debug"},
	}
	for _, tt := range tests {
		d, err := Compute(Input{NodeName: "host-1", Nodes: threeNodes()[:1], Configs: tt.configs})
		if err != nil {
			t.Fatal(err)
		}
		if d.LogLevel != tt.want {
			t.Errorf("%s: LogLevel %q, want %q", tt.name, d.LogLevel, tt.want)
		}
	}
}

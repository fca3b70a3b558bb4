// Package speaker owns this host's BGP speaker: an embedded GoBGP v3 server, its peer sessions,
// the prefixes this host advertises and the coalesced view of best paths learned from peers.
// It must never touch the kernel (routes are handed to a RouteSink), never read the datastore
// (the caller computes peers and prefixes, see package bgp/config) and never start a gRPC
// listener except on an explicitly requested loopback debug address.
package speaker

import (
	"net/netip"
	"time"
)

// PeerType labels why a peer exists; it is reported in status and does not change the session.
type PeerType string

// Peer types as shown by `terracectl node status`.
const (
	PeerTypeMesh      PeerType = "mesh"      // node-to-node full mesh (iBGP)
	PeerTypeGlobal    PeerType = "global"    // a BGPPeer that applies to every node
	PeerTypeNode      PeerType = "node"      // a BGPPeer for this node (node or nodeSelector)
	PeerTypeRRClient  PeerType = "rrclient"  // this node reflects routes to that peer
	PeerTypeReflector PeerType = "reflector" // that peer is our route reflector
)

// Families selects the address families negotiated on a session. IPv6 must be listed explicitly
// to carry IPv6 prefixes over an IPv4 session: GoBGP otherwise negotiates only the family of the
// neighbour's address.
type Families struct {
	IPv4 bool
	IPv6 bool
}

// GracefulRestart configures RFC 4724 graceful restart for one session.
type GracefulRestart struct {
	Enabled bool
	// RestartTime is the time (seconds) peers should keep our routes while we restart; 0 = 120.
	RestartTime uint32
	// NotificationEnabled enables RFC 8538 (graceful restart also after a NOTIFICATION).
	NotificationEnabled bool
}

// Peer is one desired BGP session. Peer is comparable: two equal values describe the same
// session, which is how SetPeers decides that a session must not be touched.
type Peer struct {
	Address netip.Addr
	// Port is the peer's TCP port; 0 means 179.
	Port uint16
	ASN  uint32
	// LocalASN overrides Global.ASN for this session; 0 means Global.ASN.
	LocalASN uint32
	Type     PeerType

	KeepaliveSeconds uint32 // 0 = GoBGP default (30)
	HoldSeconds      uint32 // 0 = GoBGP default (90)
	// MultihopTTL > 0 enables eBGP multihop with that TTL.
	MultihopTTL uint8
	// SourceAddress is the local address the session is bound to (zero = kernel's choice).
	SourceAddress netip.Addr
	// Password is the TCP MD5 secret, read by the caller from a node-local file. Never logged.
	Password        string
	GracefulRestart GracefulRestart
	// RouteReflectorClient makes this host a route reflector for the peer, in cluster RRClusterID.
	RouteReflectorClient bool
	RRClusterID          string
	// NextHop says which next hop routes passed on to this peer (reflected, or sent by a filter's
	// Accept rule) carry; this host's own routes carry its session address whatever it says.
	NextHop NextHopMode
	// Passive only accepts the peer's connection and never dials it.
	Passive  bool
	Families Families
	// IPv6NextHop is the next hop of this host's IPv6 routes on a session over IPv4 that carries
	// IPv6 too (and of IPv6 routes it reflects with next-hop-self there): BGP would give them the
	// session's IPv4 address, which no IPv6 route can use.
	IPv6NextHop netip.Addr
	// Filters (nil: none) are applied by the speaker's global import and export policies.
	Filters *Filters
}

// sessionKey is the part of Peer whose change requires the session to be re-created; fields
// outside it (Type, NextHop, Filters, IPv6NextHop) change status or policy only.
func (p Peer) sessionKey() Peer {
	p.Type = ""
	p.NextHop = NextHopAuto
	p.Filters = nil
	p.IPv6NextHop = netip.Addr{}
	return p
}

// NextHopMode is Calico's BGPPeer nextHopMode.
type NextHopMode uint8

const (
	// NextHopAuto leaves the next hop to BGP: kept towards iBGP peers, this host's towards eBGP ones.
	NextHopAuto NextHopMode = iota
	// NextHopSelf sends this host's session address (BIRD's "next hop self").
	NextHopSelf
	// NextHopKeep sends the next hop the route came with, to eBGP peers too ("next hop keep").
	NextHopKeep
)

// Filters are the BGPFilter rules a peer applies, in order, to the routes it sends us (Import)
// and the routes we send it (Export): the first rule that matches a route accepts or rejects it;
// a route no rule matches gets the speaker's own treatment. Filters is read-only once given to
// the speaker (Peer holds a pointer to keep Peer comparable).
type Filters struct {
	Import, Export []FilterRule
}

// FilterRule is one BGPFilter rule.
type FilterRule struct {
	// Filter names the BGPFilter the rule comes from (for logs and policy names).
	Filter string
	// Family is 4 or 6: the rule only ever matches routes of that family.
	Family int
	Accept bool
	// Prefix is what the rule compares routes with; the zero value matches every route.
	Prefix netip.Prefix
	// Exact matches Prefix itself only (Equal); otherwise routes inside Prefix whose length is
	// within MinLen..MaxLen (In). Negate inverts the match (NotEqual, NotIn).
	Exact          bool
	Negate         bool
	MinLen, MaxLen int
	// RemoteOnly (export only) matches only routes learned from BGP peers, not this host's own.
	RemoteOnly bool
}

// Global configures the speaker itself.
type Global struct {
	ASN      uint32
	RouterID netip.Addr // must be an IPv4 address (BGP identifier)
	// ListenPort: 0 means 179, -1 means do not listen (outbound sessions only).
	ListenPort      int32
	ListenAddresses []netip.Addr
	// LocalAddresses are this host's own addresses; learned next hops among them are skipped.
	// RouterID, ListenAddresses and every peer's SourceAddress are added automatically.
	LocalAddresses []netip.Addr
	// GracefulRestart (when Enabled) is the default for peers that do not enable it themselves.
	GracefulRestart GracefulRestart
}

// Advert is what this host advertises for one prefix.
type Advert struct {
	// NextHop is the advertised next hop; the zero value lets GoBGP use the session's local address.
	NextHop     netip.Addr
	Communities []Community
}

// Community is a standard BGP community AA:NN packed as AA<<16|NN.
type Community uint32

// RouteSink receives the learned routes: every prefix for which peers have a best path, with the
// ECMP set of next hops (this host's own addresses removed). A call with full set carries the
// complete table, replacing everything delivered before (the first call is always one); any other
// call carries only the prefixes that changed since the previous call, a prefix with no next hops
// being gone. The map is owned by the sink afterwards; the next-hop slices may be shared between
// calls and must not be modified. Calls are serialised and debounced: a slow sink only delays the
// next call, which then carries every change made meanwhile.
type RouteSink interface {
	UpdateLearnedRoutes(changes map[netip.Prefix][]netip.Addr, full bool)
}

// ApplyRouteChanges applies one RouteSink delivery to table (a full one replaces it) and returns
// the table: what a sink that wants the complete state keeps.
func ApplyRouteChanges(table, changes map[netip.Prefix][]netip.Addr, full bool) map[netip.Prefix][]netip.Addr {
	if full || table == nil {
		table = make(map[netip.Prefix][]netip.Addr, len(changes))
	}
	for pfx, nhs := range changes {
		if len(nhs) == 0 {
			delete(table, pfx)
		} else {
			table[pfx] = nhs
		}
	}
	return table
}

// PeerStatus describes one configured session.
type PeerStatus struct {
	Address netip.Addr    `json:"address"`
	Type    PeerType      `json:"type"`
	ASN     uint32        `json:"asn"`
	State   string        `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Uptime  time.Duration `json:"uptime"`
	// EstablishedAt is when the current session came up (zero when not established); it only
	// changes when the session was reset.
	EstablishedAt time.Time `json:"establishedAt,omitzero"`
	Received      uint64    `json:"received"`
	Accepted      uint64    `json:"accepted"`
	Advertised    uint64    `json:"advertised"`
	LastError     string    `json:"lastError,omitempty"`
}

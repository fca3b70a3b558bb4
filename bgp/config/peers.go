package config

import (
	"cmp"
	"errors"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/selector"
)

// peers fills Desired.Peers. Explicit BGPPeers (node-scoped before global ones) are computed
// before the mesh, so an explicit peer wins over a mesh session to the same address.
func (c *computation) peers() {
	seen := map[netip.Addr]string{}
	add := func(p speaker.Peer, source string) {
		if c.isSelf(p.Address) {
			return
		}
		if first, dup := seen[p.Address]; dup {
			if first != source {
				c.warnf("peer %v from %s ignored: already configured by %s", p.Address, source, first)
			}
			return
		}
		seen[p.Address] = source
		c.d.Peers = append(c.d.Peers, p)
	}

	bps := slices.Clone(c.in.Peers)
	bps = slices.DeleteFunc(bps, func(p *api.BGPPeer) bool { return p == nil })
	slices.SortFunc(bps, func(a, b *api.BGPPeer) int {
		an, bn := isNodeScoped(a), isNodeScoped(b)
		if an != bn {
			if an {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Metadata.Name, b.Metadata.Name)
	})
	for _, bp := range bps {
		c.bgpPeer(bp, add)
	}

	if meshEnabled(c.cfg) {
		for _, n := range c.otherNodes() {
			p, ok := c.nodeSession(n, "mesh")
			if !ok {
				continue
			}
			p.Type = speaker.PeerTypeMesh
			p.GracefulRestart = c.meshRestart()
			if ref := c.cfg.NodeMeshPassword; ref != nil {
				pw, err := c.password(ref)
				if err != nil {
					c.warnf("mesh peer %s (%v) skipped: %v", n.Metadata.Name, p.Address, err)
					continue
				}
				p.Password = pw
			}
			add(p, "node-to-node mesh")
		}
	}
	slices.SortFunc(c.d.Peers, func(a, b speaker.Peer) int { return a.Address.Compare(b.Address) })
}

func isNodeScoped(p *api.BGPPeer) bool { return p.Spec.Node != "" || p.Spec.NodeSelector != "" }

func (c *computation) isSelf(a netip.Addr) bool {
	return a == c.me.v4 || a == c.me.v6 || containsAddr(c.d.Global.LocalAddresses, a)
}

func (c *computation) otherNodes() []*api.Node {
	var out []*api.Node
	for _, n := range c.in.Nodes {
		if n != nil && n.Metadata.Name != c.me.name {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *api.Node) int { return cmp.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}

func (c *computation) meshRestart() speaker.GracefulRestart {
	gr := speaker.GracefulRestart{Enabled: true, RestartTime: defaultRestartTime, NotificationEnabled: true}
	if d := c.cfg.NodeMeshMaxRestartTime; d != nil && d.Duration > 0 {
		gr.RestartTime = uint32(d.Seconds())
	}
	return gr
}

// password resolves ref. A secretKeyRef marked optional that does not exist gives no password
// (as Kubernetes treats an optional secret), with a warning; any other failure is an error.
func (c *computation) password(ref *api.BGPPassword) (string, error) {
	if c.in.Password == nil {
		return "", errPasswordUnavailable
	}
	pw, err := c.in.Password(ref)
	if sk := ref.SecretKeyRef; err != nil && sk != nil && sk.Optional != nil && *sk.Optional && errors.Is(err, fs.ErrNotExist) {
		c.warnf("optional password secret %s/%s does not exist: session without a password", sk.Name, sk.Key)
		return "", nil
	}
	return pw, err
}

// nodeSession is the session to another Terrace node: over IPv4 when both have IPv4 (carrying
// IPv6 too when both have IPv6), else over IPv6. Only the lower address dials, the other side
// listens: two GoBGP speakers that both dial can keep missing each other after a reset.
func (c *computation) nodeSession(n *api.Node, source string) (speaker.Peer, bool) {
	v4, v6, err := nodeAddrs(n)
	if err != nil {
		c.warnf("%s peer %s skipped: %v", source, n.Metadata.Name, err)
		return speaker.Peer{}, false
	}
	// The other node's own view of the configuration (its node.<name> BGPConfiguration may set
	// the port it listens on), not this node's.
	ncfg := mergeConfigs(c.in.Configs, n.Metadata.Name)
	p := speaker.Peer{ASN: nodeASN(n, ncfg)}
	if port := ncfg.ListenPort; port != 0 && port != api.DefaultListenPort {
		p.Port = uint16(port)
	}
	switch {
	case c.me.v4.IsValid() && v4.IsValid():
		p.Address, p.SourceAddress = v4, c.me.v4
		p.Families = speaker.Families{IPv4: true, IPv6: c.me.v6.IsValid() && v6.IsValid()}
		if p.Families.IPv6 {
			p.IPv6NextHop = c.me.v6
		}
	case c.me.v6.IsValid() && v6.IsValid():
		p.Address, p.SourceAddress = v6, c.me.v6
		p.Families = speaker.Families{IPv6: true}
	case v4.IsValid() || v6.IsValid():
		c.warnf("%s peer %s skipped: no address family in common with this node", source, n.Metadata.Name)
		return speaker.Peer{}, false
	default:
		// Said, not just skipped: a node that never registered an address is a node that other
		// hosts cannot reach, which is worth an operator's look.
		c.warnf("%s peer %s skipped: the Node has no BGP address (spec.bgp.ipv4Address/ipv6Address)", source, n.Metadata.Name)
		return speaker.Peer{}, false
	}
	if p.Address == p.SourceAddress {
		c.warnf("%s peer %s skipped: it has this node's address %v", source, n.Metadata.Name, p.Address)
		return speaker.Peer{}, false
	}
	p.Passive = p.Address.Less(p.SourceAddress)
	return p, true
}

// appliesHere reports whether a BGPPeer is meant for this node.
func (c *computation) appliesHere(bp *api.BGPPeer) (bool, error) {
	switch {
	case bp.Spec.Node != "":
		return bp.Spec.Node == c.me.name, nil
	case bp.Spec.NodeSelector != "":
		sel, err := selector.Parse(bp.Spec.NodeSelector)
		if err != nil {
			return false, err
		}
		return sel.Evaluate(c.me.node.Metadata.Labels), nil
	}
	return true, nil
}

func (c *computation) bgpPeer(bp *api.BGPPeer, add func(speaker.Peer, string)) {
	name := "BGPPeer " + bp.Metadata.Name
	ok, err := c.appliesHere(bp)
	if err != nil {
		c.warnf("%s skipped: bad nodeSelector: %v", name, err)
		return
	}
	c.reversePeer(bp, add)
	if !ok {
		return
	}
	typ := speaker.PeerTypeGlobal
	if isNodeScoped(bp) {
		typ = speaker.PeerTypeNode
	}
	var pw string
	if bp.Spec.Password != nil {
		if pw, err = c.password(bp.Spec.Password); err != nil {
			c.warnf("%s skipped: read password: %v", name, err)
			return
		}
	}
	finish := func(p speaker.Peer, peerNode *api.Node) {
		p.Type = typ
		p.Password = pw
		c.applyPeerSpec(&p, bp, name)
		c.reflection(&p, peerNode)
		add(p, name)
	}

	if bp.Spec.PeerSelector != "" {
		sel, err := selector.Parse(bp.Spec.PeerSelector)
		if err != nil {
			c.warnf("%s skipped: bad peerSelector: %v", name, err)
			return
		}
		for _, n := range c.otherNodes() {
			if !sel.Evaluate(n.Metadata.Labels) {
				continue
			}
			if p, ok := c.nodeSession(n, name); ok {
				finish(p, n)
			}
		}
		return
	}

	addr, port, err := parsePeerIP(bp.Spec.PeerIP)
	if err != nil {
		c.warnf("%s skipped: %v", name, err)
		return
	}
	if bp.Spec.ASNumber == 0 {
		c.warnf("%s skipped: asNumber is required with peerIP", name)
		return
	}
	p := speaker.Peer{Address: addr, Port: port, ASN: uint32(bp.Spec.ASNumber)}
	p.Families = speaker.Families{IPv4: addr.Is4(), IPv6: addr.Is6()}
	src := c.me.v4
	if addr.Is6() {
		src = c.me.v6
	}
	if !src.IsValid() {
		c.warnf("%s skipped: this node has no address in the family of %v", name, addr)
		return
	}
	p.SourceAddress = src
	finish(p, c.nodeByAddr(addr))
}

// reversePeer makes peerSelector sessions symmetric, as Calico does: when this node is selected
// by a BGPPeer's peerSelector, it peers back with the nodes that BGPPeer applies to. That is
// what lets one BGPPeer (all nodes -> nodes labelled route-reflector) build an RR topology.
func (c *computation) reversePeer(bp *api.BGPPeer, add func(speaker.Peer, string)) {
	if bp.Spec.PeerSelector == "" || strings.EqualFold(bp.Spec.ReversePeering, "Manual") {
		return
	}
	// Same source name as the forward direction: both directions may yield the same session.
	name := "BGPPeer " + bp.Metadata.Name
	sel, err := selector.Parse(bp.Spec.PeerSelector)
	if err != nil || !sel.Evaluate(c.me.node.Metadata.Labels) {
		return
	}
	typ := speaker.PeerTypeGlobal
	if isNodeScoped(bp) {
		typ = speaker.PeerTypeNode
	}
	var pw string
	if bp.Spec.Password != nil {
		if pw, err = c.password(bp.Spec.Password); err != nil {
			c.warnf("%s skipped: read password: %v", name, err)
			return
		}
	}
	var scope *selector.Selector
	if bp.Spec.Node == "" && bp.Spec.NodeSelector != "" {
		if scope, err = selector.Parse(bp.Spec.NodeSelector); err != nil {
			return
		}
	}
	for _, n := range c.otherNodes() {
		switch {
		case bp.Spec.Node != "" && n.Metadata.Name != bp.Spec.Node:
			continue
		case scope != nil && !scope.Evaluate(n.Metadata.Labels):
			continue
		}
		p, ok := c.nodeSession(n, name)
		if !ok {
			continue
		}
		p.Type, p.Password = typ, pw
		c.applyPeerSpec(&p, bp, name)
		c.reflection(&p, n)
		add(p, name)
	}
}

// applyPeerSpec copies the per-session knobs of a BGPPeer.
func (c *computation) applyPeerSpec(p *speaker.Peer, bp *api.BGPPeer, name string) {
	s := bp.Spec
	if strings.EqualFold(s.SourceAddress, api.SourceAddressNone) {
		p.SourceAddress = netip.Addr{}
	}
	if s.KeepaliveTime != nil && s.KeepaliveTime.Duration > 0 {
		p.KeepaliveSeconds = uint32(max(1, s.KeepaliveTime.Seconds()))
	}
	if s.HoldTime != nil && s.HoldTime.Duration > 0 {
		p.HoldSeconds = uint32(max(3, s.HoldTime.Seconds()))
	}
	if s.EBGPMultihopTTL != nil && *s.EBGPMultihopTTL > 0 {
		p.MultihopTTL = uint8(min(255, *s.EBGPMultihopTTL))
	}
	if s.LocalASNumber != nil {
		p.LocalASN = uint32(*s.LocalASNumber)
	}
	switch {
	case s.KeepOriginalNextHop || strings.EqualFold(s.NextHopMode, api.NextHopKeep):
		p.NextHop = speaker.NextHopKeep
	case strings.EqualFold(s.NextHopMode, api.NextHopSelf):
		p.NextHop = speaker.NextHopSelf
	}
	p.GracefulRestart = speaker.GracefulRestart{Enabled: true, RestartTime: defaultRestartTime, NotificationEnabled: true}
	if s.MaxRestartTime != nil && s.MaxRestartTime.Duration > 0 {
		p.GracefulRestart.RestartTime = uint32(s.MaxRestartTime.Seconds())
	}
	if strings.EqualFold(s.RestartMode, api.RestartLongLivedGraceful) {
		c.warnf("%s: long-lived graceful restart is not supported, using graceful restart", name)
	}
	p.Filters = c.filters(s.Filters, name)
}

// filters turns the BGPFilters a peer names, in its order, into the speaker's rules. A filter that
// does not exist is skipped with a warning: failing the whole peer for it would take routing down
// over a typo, and the rest of its filters still apply.
func (c *computation) filters(names []string, peer string) *speaker.Filters {
	if len(names) == 0 {
		return nil
	}
	f := &speaker.Filters{}
	for _, n := range names {
		i := slices.IndexFunc(c.in.Filters, func(bf *api.BGPFilter) bool { return bf != nil && bf.Metadata.Name == n })
		if i < 0 {
			c.warnf("%s: BGPFilter %q does not exist; its rules are not applied", peer, n)
			continue
		}
		spec := c.in.Filters[i].Spec
		f.Import = append(f.Import, c.filterRules(n, 4, spec.ImportV4)...)
		f.Import = append(f.Import, c.filterRules(n, 6, spec.ImportV6)...)
		f.Export = append(f.Export, c.filterRules(n, 4, spec.ExportV4)...)
		f.Export = append(f.Export, c.filterRules(n, 6, spec.ExportV6)...)
	}
	return f
}

// filterRules converts BGPFilter rules of one family. A rule whose cidr does not read (it was
// validated when written, so only a damaged store gets here) is left out with a warning rather
// than turned into a rule that matches every route.
func (c *computation) filterRules(name string, family int, rules []api.BGPFilterRule) []speaker.FilterRule {
	out := make([]speaker.FilterRule, 0, len(rules))
	maxLen := 32
	if family == 6 {
		maxLen = 128
	}
	for _, r := range rules {
		fr := speaker.FilterRule{Filter: name, Family: family, Accept: r.Action == api.BGPFilterAccept,
			RemoteOnly: r.Source == api.BGPFilterSourceRemotePeers}
		if r.CIDR != "" {
			p, err := netip.ParsePrefix(r.CIDR)
			if err != nil {
				c.warnf("BGPFilter %s: rule with cidr %q left out: %v", name, r.CIDR, err)
				continue
			}
			fr.Prefix = p.Masked()
			fr.Exact = r.MatchOperator == api.BGPFilterEqual || r.MatchOperator == api.BGPFilterNotEqual
			fr.Negate = r.MatchOperator == api.BGPFilterNotEqual || r.MatchOperator == api.BGPFilterNotIn
			fr.MinLen, fr.MaxLen = fr.Prefix.Bits(), maxLen
			if pl := r.PrefixLength; pl != nil {
				if pl.Min != nil {
					fr.MinLen = int(*pl.Min)
				}
				if pl.Max != nil {
					fr.MaxLen = int(*pl.Max)
				}
			}
		}
		out = append(out, fr)
	}
	return out
}

// reflection decides the route-reflector role of a session to another node: a node with a
// routeReflectorClusterID reflects for iBGP peers outside its cluster; a node without one is a
// client of peers that have one.
func (c *computation) reflection(p *speaker.Peer, peerNode *api.Node) {
	local := c.me.asn
	if p.LocalASN != 0 {
		local = p.LocalASN // the AS this session presents decides whether it is iBGP
	}
	if peerNode == nil || p.ASN != local {
		return
	}
	var theirs string
	if peerNode.Spec.BGP != nil {
		theirs = peerNode.Spec.BGP.RouteReflectorClusterID
	}
	switch {
	case c.me.clusterID != "" && theirs != c.me.clusterID:
		p.RouteReflectorClient = true
		p.RRClusterID = c.me.clusterID
		p.Type = speaker.PeerTypeRRClient
	case c.me.clusterID == "" && theirs != "":
		p.Type = speaker.PeerTypeReflector
	}
}

func (c *computation) nodeByAddr(a netip.Addr) *api.Node {
	for _, n := range c.otherNodes() {
		v4, v6, err := nodeAddrs(n)
		if err == nil && (v4 == a || v6 == a) {
			return n
		}
	}
	return nil
}

// parsePeerIP accepts "192.0.2.1", "192.0.2.1:1179", "2001:db8::1" and "[2001:db8::1]:1179".
func parsePeerIP(s string) (netip.Addr, uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Addr{}, 0, errNoPeerIP
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, 0, &peerIPError{s}
		}
		return a.Unmap(), 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return netip.Addr{}, 0, &peerIPError{s}
	}
	return ap.Addr().Unmap(), ap.Port(), nil
}

package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
)

const (
	exportPolicy   = "terrace-export"
	importPolicy   = "terrace-import"
	nhsNeighbors   = "terrace-next-hop-self"
	ibgpNeighbors  = "terrace-ibgp"
	defaultRestart = 120
	// restartDeferral bounds how long a restarted speaker waits for peers' End-of-RIB (seconds).
	restartDeferral = 30
)

// SetPeers makes the configured sessions equal to desired: new peers are added, missing ones
// deleted, and a peer whose session parameters changed is re-created. Peers whose session
// parameters did not change are not touched, so their sessions stay up. Failures for one peer
// do not stop the others; they are joined in the returned error.
func (s *Speaker) SetPeers(ctx context.Context, desired []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return errors.New("set peers: speaker not started")
	}
	want := make(map[netip.Addr]Peer, len(desired))
	var errs []error
	for _, p := range desired {
		p.Address = p.Address.Unmap()
		if !p.Address.IsValid() {
			errs = append(errs, errors.New("set peers: peer without address"))
			continue
		}
		if _, dup := want[p.Address]; dup {
			errs = append(errs, fmt.Errorf("set peers: duplicate peer %v", p.Address))
			continue
		}
		want[p.Address] = p
	}
	localRestart := s.restarting && s.firstPeers
	s.firstPeers = false

	for addr, old := range s.peers {
		if p, ok := want[addr]; ok && p.sessionKey() == old.sessionKey() {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %v: %w", addr, err))
			continue
		}
		if old.Password != "" && s.global.ListenPort >= 0 {
			port := uint16(s.global.ListenPort)
			if port == 0 {
				port = 179
			}
			if err := clearListenerMD5(port, addr); err != nil {
				errs = append(errs, err)
			}
		}
		delete(s.peers, addr)
		// A re-created session starts with nothing sent: no withdrawal or reset is owed to it.
		delete(s.exportFilters, addr)
		s.forgetAdvertised()
		s.log.Info("bgp peer removed", "peer", addr, "type", old.Type)
	}
	for addr, p := range want {
		if old, ok := s.peers[addr]; ok {
			// Still configured: either unchanged, or only labels / export policy changed, or its
			// deletion failed above (then the old session stays and the error is reported).
			if old.sessionKey() == p.sessionKey() {
				s.peers[addr] = p
			}
			continue
		}
		s.glog.forget(addr.String())
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.toAPIPeer(p, localRestart)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %v: %w", addr, err))
			continue
		}
		s.peers[addr] = p
		s.forgetAdvertised()
		if p.Password != "" && s.global.ListenPort >= 0 && (&net.ListenConfig{}).MultipathTCP() {
			// The session is configured (outbound connections carry MD5) but the listener cannot
			// verify it: say so instead of leaving a silently half-working session.
			errs = append(errs, fmt.Errorf("peer %v: TCP MD5 cannot be set on the listener while Go listeners use MPTCP; build with //go:debug multipathtcp=0", addr))
		}
		s.log.Info("bgp peer configured", "peer", addr, "asn", p.ASN, "type", p.Type,
			"md5", p.Password != "", "gracefulRestart", s.gracefulRestart(p).Enabled)
	}
	s.refreshLocal()
	policy := s.policyKey
	if err := s.applyPolicy(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.policyKey != policy {
		s.forgetAdvertised()
	}
	return errors.Join(errs...)
}

// gracefulRestart is the peer's GR configuration, defaulting to the global one.
func (s *Speaker) gracefulRestart(p Peer) GracefulRestart {
	if p.GracefulRestart.Enabled {
		return p.GracefulRestart
	}
	return s.global.GracefulRestart
}

func (s *Speaker) localASN(p Peer) uint32 {
	if p.LocalASN != 0 {
		return p.LocalASN
	}
	return s.global.ASN
}

func (s *Speaker) toAPIPeer(p Peer, localRestart bool) *api.Peer {
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
			Description:     string(p.Type),
		},
		Transport: &api.Transport{PassiveMode: p.Passive},
		Timers: &api.Timers{Config: &api.TimersConfig{
			KeepaliveInterval: uint64(p.KeepaliveSeconds),
			HoldTime:          uint64(p.HoldSeconds),
			// A refused or unreachable peer is retried every few seconds rather than GoBGP's 120 s.
			ConnectRetry: 5,
		}},
	}
	if p.Port != 0 {
		ap.Transport.RemotePort = uint32(p.Port)
	}
	if p.SourceAddress.IsValid() {
		ap.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.MultihopTTL > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.MultihopTTL)}
	}
	if p.RouteReflectorClient {
		cluster := p.RRClusterID
		if cluster == "" {
			cluster = s.global.RouterID.String()
		}
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: cluster}
	}
	gr := s.gracefulRestart(p)
	if gr.Enabled {
		rt := gr.RestartTime
		if rt == 0 {
			rt = defaultRestart
		}
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:             true,
			RestartTime:         rt,
			NotificationEnabled: gr.NotificationEnabled,
			LocalRestarting:     localRestart,
			// While restarting GoBGP holds our routes back until every GR peer sent End-of-RIB;
			// one dead peer would otherwise keep them back for GoBGP's default of 360 s.
			DeferralTime: restartDeferral,
		}
	}
	fams := p.Families
	if !fams.IPv4 && !fams.IPv6 {
		fams = Families{IPv4: p.Address.Is4(), IPv6: p.Address.Is6()}
	}
	add := func(afi api.Family_Afi) {
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: gr.Enabled}},
		})
	}
	if fams.IPv4 {
		add(api.Family_AFI_IP)
	}
	if fams.IPv6 {
		add(api.Family_AFI_IP6)
	}
	return ap
}

// applyPolicy installs the global export policy, and the global import policy once a peer has
// import filters. The host is not a transit router: it exports what it originates, and, only
// when it reflects for iBGP clients, iBGP-learned routes to iBGP peers (optionally with
// next-hop-self). Routes from external peers are never re-exported. Peers' BGPFilter rules come
// first in both directions (GoBGP applies per-neighbour policies only in route-server mode, so
// each rule is a statement of the global policy limited to its peer).
func (s *Speaker) applyPolicy(ctx context.Context) (retErr error) {
	var nhs, ibgp []string
	reflector := false
	// Peers over IPv4 carrying IPv6, by the IPv6 next hop their IPv6 routes need.
	v6nh := map[netip.Addr][]string{}
	for _, p := range s.peers {
		if p.Address.Is4() && p.Families.IPv6 && p.IPv6NextHop.Is6() {
			v6nh[p.IPv6NextHop] = append(v6nh[p.IPv6NextHop], hostPrefix(p.Address))
		}
		if p.RouteReflectorClient {
			reflector = true
		}
		if s.localASN(p) == p.ASN {
			ibgp = append(ibgp, hostPrefix(p.Address))
			if p.NextHop == NextHopSelf {
				nhs = append(nhs, hostPrefix(p.Address))
			}
		}
	}
	if !reflector {
		nhs, ibgp = nil, nil
	}
	slices.Sort(nhs)
	slices.Sort(ibgp)
	filtered := slices.SortedFunc(maps.Values(s.peers), func(a, b Peer) int { return a.Address.Compare(b.Address) })
	filtered = slices.DeleteFunc(filtered, func(p Peer) bool { return p.Filters == nil })
	ebgp := func(p Peer) bool { return s.localASN(p) != p.ASN }
	exportSets, exportFilters := filterStatements("export", filtered, ebgp)
	importSets, importFilters := filterStatements("import", filtered, ebgp)
	v6Sets, v6Local, v6Reflect := ipv6NextHopStatements(v6nh, nhs)
	exportKey := fmt.Sprintf("%v|%s|%s|%s|%s", reflector, strings.Join(nhs, ","), strings.Join(ibgp, ","),
		statementsKey(exportSets, exportFilters), statementsKey(v6Sets, append(slices.Clone(v6Local), v6Reflect...)))
	importKey := statementsKey(importSets, importFilters)
	exportFilterMap := make(map[netip.Addr]*Filters, len(s.peers))
	for addr, p := range s.peers {
		exportFilterMap[addr] = p.Filters
	}
	if s.policyKey != "" && exportKey == s.exportKey && importKey == s.importKey {
		s.exportFilters = exportFilterMap // new peers, same policy
		return nil
	}
	exportChanged, importChanged := exportKey != s.exportKey, importKey != s.importKey
	// GoBGP v3 never withdraws what it sent before and a changed export policy now refuses: its
	// soft reset out only re-sends what is accepted. So this host's own routes that a peer's new
	// rules refuse are withdrawn while the old policy is still in force (the withdrawal reaches
	// every peer that had them) and advertised again under the new one. Routes learned from
	// peers cannot be taken back that way: the peers owed such a withdrawal are reset below.
	var resetPeers []netip.Addr
	var toWithdraw []netip.Prefix
	if exportChanged {
		resetPeers, toWithdraw = s.refusedRemote(exportFilterMap, ibgp), s.newlyRefused(exportFilterMap)
	}
	refused, err := s.withdrawLocal(ctx, toWithdraw)
	// Advertised again under whatever policy is in force when this returns: the new one, or,
	// if installing it failed, the old one (and the change is retried with the next call).
	defer func() { retErr = errors.Join(retErr, s.readvertise(ctx, refused)) }()
	if err != nil {
		return err
	}
	local := &api.Statement{
		Name:       "terrace-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}
	// The IPv6 next hop of local routes is set first and decides nothing, so a peer's filters
	// and the local statement still accept or refuse them.
	stmts := append(append(v6Local, exportFilters...), local)
	stmts = append(stmts, v6Reflect...)
	sets := append(append(exportSets, importSets...), v6Sets...)
	// An empty neighbour set matches every neighbour in GoBGP, so a statement is only added
	// together with a non-empty set.
	if len(nhs) > 0 {
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: nhsNeighbors, List: nhs})
		stmts = append(stmts, &api.Statement{
			Name: "terrace-reflect-next-hop-self",
			Conditions: &api.Conditions{
				RouteType:   api.Conditions_ROUTE_TYPE_INTERNAL,
				NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: nhsNeighbors},
			},
			Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT, Nexthop: &api.NexthopAction{Self: true}},
		})
	}
	if len(ibgp) > 0 {
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: ibgpNeighbors, List: ibgp})
		stmts = append(stmts, &api.Statement{
			Name: "terrace-reflect",
			Conditions: &api.Conditions{
				RouteType:   api.Conditions_ROUTE_TYPE_INTERNAL,
				NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: ibgpNeighbors},
			},
			Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT},
		})
	}
	policies := []*api.Policy{{Name: exportPolicy, Statements: stmts}}
	// The import policy exists only once a peer has had import rules: every learned path goes
	// through it, which costs at 100k routes. Its first statement keeps this host's own paths
	// (a global import policy also sees them).
	needImport := s.importAssigned || len(importFilters) > 0
	if needImport {
		policies = append(policies, &api.Policy{Name: importPolicy, Statements: append([]*api.Statement{{
			Name:       "terrace-import-local",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
		}}, importFilters...)})
	}
	if err := s.srv.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: policies}); err != nil {
		return fmt.Errorf("set bgp policies: %w", err)
	}
	// At once: peers are without these routes until then (a few of this host's own prefixes).
	err = s.readvertise(ctx, refused)
	refused = nil
	if err != nil {
		return err
	}
	if s.policyKey == "" {
		if err := s.assignGlobal(ctx, api.PolicyDirection_EXPORT, exportPolicy, api.RouteAction_REJECT); err != nil {
			return err
		}
	} else if len(s.peers) > 0 && exportChanged {
		// A policy change does not re-evaluate what was already sent; a soft reset out re-sends
		// what the policy now accepts, without taking sessions down (what it now refuses was
		// withdrawn above).
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
			return fmt.Errorf("re-send routes after policy change: %w", err)
		}
		// Routes learned from peers cannot be withdrawn and put back like our own: a peer that
		// an Accept rule sent some of them, and whose rules no longer do, is reset.
		for _, addr := range resetPeers {
			s.log.Warn("bgp session reset: its export rules no longer accept routes it was sent from other peers", "peer", addr)
			if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Communication: "export filter changed"}); err != nil {
				return fmt.Errorf("reset peer %v after its export rules changed: %w", addr, err)
			}
		}
	}
	resetIn := s.importAssigned && importChanged && len(s.peers) > 0
	s.exportFilters = exportFilterMap
	if needImport && !s.importAssigned {
		if err := s.assignGlobal(ctx, api.PolicyDirection_IMPORT, importPolicy, api.RouteAction_ACCEPT); err != nil {
			return err
		}
		s.importAssigned, resetIn = true, len(s.peers) > 0
	}
	if resetIn {
		// Paths already received are re-run through the changed import policy from the
		// Adj-RIB-In GoBGP keeps; sessions stay up.
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_IN}); err != nil {
			return fmt.Errorf("re-apply import policy: %w", err)
		}
	}
	s.policyKey, s.exportKey, s.importKey = exportKey+"||"+importKey, exportKey, importKey
	s.log.Debug("bgp policies set", "reflector", reflector, "nextHopSelf", nhs,
		"exportFilterStatements", len(exportFilters), "importFilterStatements", len(importFilters))
	return nil
}

// assignGlobal makes policy the global one for direction, with def for routes no statement decides.
func (s *Speaker) assignGlobal(ctx context.Context, dir api.PolicyDirection, policy string, def api.RouteAction) error {
	err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: dir, Policies: []*api.Policy{{Name: policy}}, DefaultAction: def,
	}})
	if err != nil {
		return fmt.Errorf("assign %s policy: %w", strings.ToLower(dir.String()), err)
	}
	return nil
}

// filterStatements turns the peers' filter rules of one direction into statements of the global
// policy, in peer order then rule order, each limited to its peer by a neighbour set (which, for
// export, GoBGP matches against the peer a route is sent to, and for import the peer it came
// from), with the defined sets they use. An export Accept ends evaluation before the policy's own
// statements, so it sets the peer's next hop mode itself, and, for IPv6 routes to a peer over IPv4,
// the IPv6 next hop wherever BGP would put the session's IPv4 address (ebgp tells where).
func filterStatements(dir string, peers []Peer, ebgp func(Peer) bool) ([]*api.DefinedSet, []*api.Statement) {
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	for _, p := range peers {
		rules := p.Filters.Import
		if dir == "export" {
			rules = p.Filters.Export
		}
		if len(rules) == 0 {
			continue
		}
		base := "terrace-" + dir + "-" + p.Address.String()
		peerSet := base + "-peer"
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: peerSet, List: []string{hostPrefix(p.Address)}})
		for i, r := range rules {
			name := fmt.Sprintf("%s-%d-%s", base, i, r.Filter)
			afi := api.Family_AFI_IP
			if r.Family == 6 {
				afi = api.Family_AFI_IP6
			}
			cond := func() *api.Conditions {
				c := &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: peerSet},
					AfiSafiIn:   []*api.Family{{Afi: afi, Safi: api.Family_SAFI_UNICAST}},
				}
				if r.Prefix.IsValid() {
					c.PrefixSet = &api.MatchSet{Type: api.MatchSet_ANY, Name: name}
					if r.Negate {
						c.PrefixSet.Type = api.MatchSet_INVERT
					}
				}
				return c
			}
			if r.Prefix.IsValid() {
				lo, hi := r.Prefix.Bits(), r.Prefix.Bits()
				if !r.Exact {
					lo, hi = r.MinLen, r.MaxLen
				}
				sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name, Prefixes: []*api.Prefix{{
					IpPrefix: r.Prefix.String(), MaskLengthMin: uint32(lo), MaskLengthMax: uint32(hi),
				}}})
			}
			// IPv6 routes to a peer over IPv4: BGP's "self" there is the session's IPv4 address, and
			// so is "unchanged" for this host's own routes (which carry no next hop of their own).
			v6OverV4 := dir == "export" && r.Family == 6 && p.Address.Is4() && p.Families.IPv6 && p.IPv6NextHop.Is6()
			action := func(rt api.Conditions_RouteType) *api.Actions {
				if !r.Accept {
					return &api.Actions{RouteAction: api.RouteAction_REJECT}
				}
				a := &api.Actions{RouteAction: api.RouteAction_ACCEPT}
				switch {
				case dir != "export":
				case v6OverV4 && p.NextHop == NextHopKeep && rt != api.Conditions_ROUTE_TYPE_LOCAL:
					a.Nexthop = &api.NexthopAction{Unchanged: true}
				case v6OverV4 && (p.NextHop != NextHopAuto || rt == api.Conditions_ROUTE_TYPE_LOCAL || ebgp(p)):
					a.Nexthop = &api.NexthopAction{Address: p.IPv6NextHop.String()}
				case v6OverV4:
				case p.NextHop == NextHopSelf:
					a.Nexthop = &api.NexthopAction{Self: true}
				case p.NextHop == NextHopKeep:
					a.Nexthop = &api.NexthopAction{Unchanged: true}
				}
				return a
			}
			typed := func(rt api.Conditions_RouteType) *api.Statement {
				c := cond()
				c.RouteType = rt
				return &api.Statement{Name: name + "-" + strings.ToLower(rt.String()), Conditions: c, Actions: action(rt)}
			}
			switch {
			case r.RemoteOnly:
				// Learned from peers: iBGP or eBGP, which GoBGP tells apart as two route types.
				stmts = append(stmts, typed(api.Conditions_ROUTE_TYPE_INTERNAL), typed(api.Conditions_ROUTE_TYPE_EXTERNAL))
			case v6OverV4 && r.Accept:
				// This host's own routes need another next hop than those learned from peers.
				stmts = append(stmts, typed(api.Conditions_ROUTE_TYPE_LOCAL), typed(api.Conditions_ROUTE_TYPE_INTERNAL), typed(api.Conditions_ROUTE_TYPE_EXTERNAL))
			default:
				stmts = append(stmts, &api.Statement{Name: name, Conditions: cond(), Actions: action(api.Conditions_ROUTE_TYPE_NONE)})
			}
		}
	}
	return sets, stmts
}

// ipv6NextHopStatements give IPv6 routes sent over IPv4 sessions an IPv6 next hop instead of
// BGP's choice, the session's IPv4 address, which the receiving host cannot use as an IPv6
// gateway: this host's own (local) routes, by statements that only set it (no route action, so
// the statements after them still decide), and routes it reflects to peers that get
// next-hop-self (nhs), by statements that accept them ahead of the next-hop-self one.
func ipv6NextHopStatements(v6nh map[netip.Addr][]string, nhs []string) (sets []*api.DefinedSet, local, reflect []*api.Statement) {
	ipv6 := []*api.Family{{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}}
	for i, nh := range slices.SortedFunc(maps.Keys(v6nh), netip.Addr.Compare) {
		peers := slices.Sorted(slices.Values(v6nh[nh]))
		set := fmt.Sprintf("terrace-v6-over-v4-%d", i)
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: set, List: peers})
		local = append(local, &api.Statement{
			Name: set + "-local",
			Conditions: &api.Conditions{
				RouteType: api.Conditions_ROUTE_TYPE_LOCAL, AfiSafiIn: ipv6,
				NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set},
			},
			Actions: &api.Actions{RouteAction: api.RouteAction_NONE, Nexthop: &api.NexthopAction{Address: nh.String()}},
		})
		var self []string
		for _, p := range peers {
			if slices.Contains(nhs, p) {
				self = append(self, p)
			}
		}
		if len(self) > 0 {
			sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: set + "-self", List: self})
			reflect = append(reflect, &api.Statement{
				Name: set + "-reflect-next-hop-self",
				Conditions: &api.Conditions{
					RouteType: api.Conditions_ROUTE_TYPE_INTERNAL, AfiSafiIn: ipv6,
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set + "-self"},
				},
				Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT, Nexthop: &api.NexthopAction{Address: nh.String()}},
			})
		}
	}
	return sets, local, reflect
}

// statementsKey identifies a list of statements and their sets, to tell whether policy changed.
func statementsKey(sets []*api.DefinedSet, stmts []*api.Statement) string {
	var b strings.Builder
	for _, d := range sets {
		fmt.Fprintf(&b, "%s=%v%v;", d.Name, d.List, prefixesKey(d.Prefixes))
	}
	for _, st := range stmts {
		fmt.Fprintf(&b, "%s:%v:%v:%v:%v:%v:%v:%v:%v;", st.Name, st.Conditions.GetNeighborSet().GetName(), st.Conditions.GetPrefixSet().GetType(),
			st.Conditions.GetRouteType(), st.Conditions.GetAfiSafiIn(), st.Actions.GetRouteAction(), st.Actions.GetNexthop().GetSelf(),
			st.Actions.GetNexthop().GetUnchanged(), st.Actions.GetNexthop().GetAddress())
	}
	return b.String()
}

func prefixesKey(ps []*api.Prefix) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s/%d-%d", p.IpPrefix, p.MaskLengthMin, p.MaskLengthMax)
	}
	return b.String()
}

func hostPrefix(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// newlyRefused lists this host's own advertised prefixes that a peer's export rules accepted
// before (in s.exportFilters) and refuse now (in next). Peers new to the policy have sent nothing.
func (s *Speaker) newlyRefused(next map[netip.Addr]*Filters) []netip.Prefix {
	var out []netip.Prefix
	for p := range s.advertised {
		for addr, f := range next {
			old, known := s.exportFilters[addr]
			if known && exportsLocal(old, p) && !exportsLocal(f, p) {
				out = append(out, p)
				break
			}
		}
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// refusedRemote lists the peers to which the old filters (s.exportFilters) sent routes learned
// from other peers by an Accept rule, and the new ones (next) do not, nor does the policy's own
// reflection (ibgp: the peers reflected to, which get iBGP-learned routes anyway, so only routes
// from eBGP peers count for them). A route's source is told by its next hops.
func (s *Speaker) refusedRemote(next map[netip.Addr]*Filters, ibgp []string) []netip.Addr {
	var learned map[netip.Prefix][]netip.Addr
	var out []netip.Addr
	external := func(hops []netip.Addr) bool {
		for _, h := range hops {
			if p, ok := s.peers[h]; ok && s.localASN(p) != p.ASN {
				return true
			}
		}
		return false
	}
	for addr, f := range next {
		old := s.exportFilters[addr]
		if old == nil {
			continue
		}
		reflected := slices.Contains(ibgp, hostPrefix(addr))
		if learned == nil {
			if s.learned == nil {
				return nil
			}
			learned = s.learned.snapshot()
		}
		for p, hops := range learned {
			// GoBGP never sends a peer back what it learned from that peer.
			if slices.Contains(hops, addr) || (reflected && !external(hops)) {
				continue
			}
			if acceptsRemote(old, p) && !acceptsRemote(f, p) {
				out = append(out, addr)
				break
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// acceptsRemote tells whether filters f send a route learned from a peer: only an Accept rule
// does (the export policy's own statements do not, outside reflection).
func acceptsRemote(f *Filters, p netip.Prefix) bool {
	accept, matched := f.decide(p, false)
	return matched && accept
}

// exportsLocal tells whether filters f let this host's own prefix p out: no match (or no
// filters) lets it out, as the export policy's own statements accept every local route.
func exportsLocal(f *Filters, p netip.Prefix) bool {
	accept, matched := f.decide(p, true)
	return accept || !matched
}

// decide is the export rules' verdict on p: the first rule of p's family that matches (a
// RemoteOnly rule never matches a local route) accepts or rejects it.
func (f *Filters) decide(p netip.Prefix, local bool) (accept, matched bool) {
	if f == nil {
		return false, false
	}
	fam := 4
	if p.Addr().Is6() {
		fam = 6
	}
	for _, r := range f.Export {
		if r.Family == fam && !(local && r.RemoteOnly) && r.matches(p) {
			return r.Accept, true
		}
	}
	return false, false
}

// matches is GoBGP's prefix-set match as filterStatements configures it: Prefix exactly, or
// a prefix inside Prefix with a length in MinLen..MaxLen; Negate inverts; no Prefix matches all.
func (r FilterRule) matches(p netip.Prefix) bool {
	if !r.Prefix.IsValid() {
		return true
	}
	var m bool
	if r.Exact {
		m = p == r.Prefix
	} else {
		m = p.Bits() >= r.Prefix.Bits() && r.Prefix.Contains(p.Addr()) && p.Bits() >= r.MinLen && p.Bits() <= r.MaxLen
	}
	return m != r.Negate
}

// withdrawLocal withdraws this host's own paths for prefixes and returns what it withdrew, which
// leaves s.advertised until readvertise puts it back; whatever is not put back (an error in
// between) is advertised again by the next SetAdvertised, which diffs against s.advertised.
func (s *Speaker) withdrawLocal(ctx context.Context, prefixes []netip.Prefix) (map[netip.Prefix]Advert, error) {
	out := map[netip.Prefix]Advert{}
	var errs []error
	for _, p := range prefixes {
		a := s.advertised[p]
		if err := s.withdrawPath(ctx, p, a); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v before an export policy change: %w", p, err))
			continue
		}
		out[p] = a
		delete(s.advertised, p)
	}
	if len(out) > 0 {
		s.forgetAdvertised()
	}
	return out, errors.Join(errs...)
}

// readvertise advertises again what withdrawLocal withdrew.
func (s *Speaker) readvertise(ctx context.Context, withdrawn map[netip.Prefix]Advert) error {
	var errs []error
	for _, p := range slices.SortedFunc(maps.Keys(withdrawn), comparePrefix) {
		a := withdrawn[p]
		if err := s.addPath(ctx, p, a); err != nil {
			errs = append(errs, fmt.Errorf("advertise %v after an export policy change: %w", p, err))
			continue
		}
		s.advertised[p] = a
	}
	if len(withdrawn) > 0 {
		s.forgetAdvertised()
	}
	return errors.Join(errs...)
}

package speaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
)

const (
	exportPolicy   = "terrace-export"
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
		delete(s.peers, addr)
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

// applyPolicy installs the global export policy. The host is not a transit router: it exports
// what it originates, and, only when it reflects for iBGP clients, iBGP-learned routes to iBGP
// peers (optionally with next-hop-self). Routes from external peers are never re-exported.
func (s *Speaker) applyPolicy(ctx context.Context) error {
	var nhs, ibgp []string
	reflector := false
	for _, p := range s.peers {
		if p.RouteReflectorClient {
			reflector = true
		}
		if s.localASN(p) == p.ASN {
			ibgp = append(ibgp, hostPrefix(p.Address))
			if p.NextHopSelf {
				nhs = append(nhs, hostPrefix(p.Address))
			}
		}
	}
	if !reflector {
		nhs, ibgp = nil, nil
	}
	slices.Sort(nhs)
	slices.Sort(ibgp)
	key := fmt.Sprintf("%v|%s|%s", reflector, strings.Join(nhs, ","), strings.Join(ibgp, ","))
	if key == s.policyKey {
		return nil
	}
	stmts := []*api.Statement{{
		Name:       "terrace-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}}
	var sets []*api.DefinedSet
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
	pol := &api.Policy{Name: exportPolicy, Statements: stmts}
	if err := s.srv.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: []*api.Policy{pol}}); err != nil {
		return fmt.Errorf("set export policy: %w", err)
	}
	if s.policyKey == "" {
		err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     api.PolicyDirection_EXPORT,
			Policies:      []*api.Policy{{Name: exportPolicy}},
			DefaultAction: api.RouteAction_REJECT,
		}})
		if err != nil {
			return fmt.Errorf("assign export policy: %w", err)
		}
	} else if len(s.peers) > 0 {
		// A policy change does not re-evaluate what was already sent; a soft reset out does,
		// without taking sessions down.
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
			return fmt.Errorf("re-send routes after policy change: %w", err)
		}
	}
	s.policyKey = key
	s.log.Debug("bgp export policy set", "reflector", reflector, "nextHopSelf", nhs)
	return nil
}

func hostPrefix(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}

package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// PeerStatus reports every configured session, sorted by address, with the prefixes advertised to
// each counted now.
func (s *Speaker) PeerStatus(ctx context.Context) ([]PeerStatus, error) {
	return s.peerStatus(ctx, 0)
}

// PeerStatusCached is PeerStatus with advertised counts up to maxAge old. GoBGP counts what it
// advertises to a peer by running the peer's export over its whole table, on the goroutine that
// also takes in updates: with 100k routes learned that is over 100 ms during which no update is
// processed, too dear for a status refreshed every few seconds. Counts are renewed at once when
// a session comes up or goes down, or the peers or this host's own advertisement change; on a
// route reflector the reflected routes' share follows what is learned and may be maxAge old.
// Everything else is current.
func (s *Speaker) PeerStatusCached(ctx context.Context, maxAge time.Duration) ([]PeerStatus, error) {
	return s.peerStatus(ctx, maxAge)
}

func (s *Speaker) peerStatus(ctx context.Context, maxAge time.Duration) ([]PeerStatus, error) {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return nil, errors.New("peer status: speaker not started")
	}
	srv := s.srv
	peers := make(map[netip.Addr]Peer, len(s.peers))
	for a, p := range s.peers {
		peers[a] = p
	}
	s.mu.Unlock()

	list := func(advertised bool) (map[netip.Addr]*api.Peer, error) {
		if advertised {
			s.advCounts.Add(1)
		}
		got := map[netip.Addr]*api.Peer{}
		err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: advertised}, func(p *api.Peer) {
			if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
				got[a.Unmap()] = p
			}
		})
		if err != nil {
			return nil, fmt.Errorf("list peers: %w", err)
		}
		return got, nil
	}
	s.advMu.Lock()
	defer s.advMu.Unlock()
	gen := s.advGen.Load()
	count := maxAge <= 0 || s.adv == nil || s.advAtGen != gen || time.Since(s.advAt) >= maxAge
	got, err := list(count)
	if err != nil {
		return nil, err
	}
	if !count && s.advStale(got) {
		// A session came up (or went down) since the last count: what it was sent is news.
		count = true
		if got, err = list(true); err != nil {
			return nil, err
		}
	}
	if count {
		// A change during the count bumps the generation again, so its result is not reused.
		s.advAt, s.advAtGen, s.adv = time.Now(), gen, map[netip.Addr]advCount{}
	}
	out := make([]PeerStatus, 0, len(peers))
	now := time.Now()
	for addr, p := range peers {
		st := PeerStatus{Address: addr, Type: p.Type, ASN: p.ASN, State: "unknown", LastError: s.glog.lastErrorOf(addr.String())}
		if ap, ok := got[addr]; ok {
			state := ap.GetState().GetSessionState()
			st.State = strings.ToLower(state.String())
			if state == api.PeerState_ESTABLISHED {
				if up := ap.GetTimers().GetState().GetUptime(); up != nil {
					st.EstablishedAt = up.AsTime()
					st.Uptime = now.Sub(st.EstablishedAt).Truncate(time.Second)
				}
			}
			for _, af := range ap.GetAfiSafis() {
				st.Received += af.GetState().GetReceived()
				st.Accepted += af.GetState().GetAccepted()
				st.Advertised += af.GetState().GetAdvertised()
			}
			if count {
				s.adv[addr] = advCount{n: st.Advertised, since: st.EstablishedAt}
			} else {
				st.Advertised = s.adv[addr].n
			}
		}
		if st.State != "established" && st.LastError == "" && p.Password != "" {
			// With TCP MD5 the kernel drops segments whose signature does not match, so a wrong
			// password on either side never produces an error message, only silence.
			st.LastError = "not established; TCP MD5 is configured for this peer: a password mismatch shows only as unanswered connections"
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out, nil
}

// advCount is the prefixes advertised to a peer when last counted, and the start of the session
// they were counted on (zero: not established then).
type advCount struct {
	n     uint64
	since time.Time
}

// advStale reports whether a session is established now that was not, or not the same one, when
// advertised prefixes were last counted. Called with advMu held.
func (s *Speaker) advStale(got map[netip.Addr]*api.Peer) bool {
	for addr, ap := range got {
		var since time.Time
		if ap.GetState().GetSessionState() == api.PeerState_ESTABLISHED {
			if up := ap.GetTimers().GetState().GetUptime(); up != nil {
				since = up.AsTime()
			}
		}
		if !since.Equal(s.adv[addr].since) {
			return true
		}
	}
	return false
}

// forgetAdvertised makes the next status count advertised prefixes again: what this host offers
// or whom it offers it to has changed.
// It never waits for a count in progress: callers hold s.mu.
func (s *Speaker) forgetAdvertised() { s.advGen.Add(1) }

// PeersSynced reports whether every configured peer has sent its whole table and all of it has
// reached the sink: each session is established, negotiated graceful restart (the only way a peer
// says it is done: RFC 4724's End-of-RIB, which GoBGP sends and expects only then), and its
// End-of-RIB for every such family arrived on this session and was followed by a delivery. Only
// markers the peer sent count: GoBGP also marks End-of-RIB received, without one, at the open of
// a session on which both sides are restarting. No peers, or one without graceful restart, is
// false: only a timer can tell then.
func (s *Speaker) PeersSynced(ctx context.Context) (bool, error) {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return false, errors.New("peers synced: speaker not started")
	}
	srv, l := s.srv, s.learned
	want := make(map[netip.Addr]bool, len(s.peers))
	for a := range s.peers {
		want[a] = false
	}
	s.mu.Unlock()
	if len(want) == 0 {
		return false, nil
	}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		a = a.Unmap()
		if _, ok := want[a]; ok {
			want[a] = sentAll(p, a, l)
		}
	})
	if err != nil {
		return false, fmt.Errorf("peers synced: list peers: %w", err)
	}
	for _, done := range want {
		if !done {
			return false, nil
		}
	}
	return true, nil
}

// sentAll reports whether an established peer's End-of-RIB has arrived, on this session, for every
// family both sides restart gracefully, and there is at least one.
func sentAll(p *api.Peer, addr netip.Addr, l *learnedRoutes) bool {
	if p.GetState().GetSessionState() != api.PeerState_ESTABLISHED {
		return false
	}
	up := p.GetTimers().GetState().GetUptime()
	if up == nil {
		return false
	}
	// GoBGP keeps the session's start to the second; a marker of the previous session in that
	// same second would count, which needs a session to end and another to start within it.
	since := up.AsTime().Truncate(time.Second)
	gr := 0
	for _, af := range p.GetAfiSafis() {
		st := af.GetMpGracefulRestart().GetState()
		if !st.GetEnabled() || !st.GetReceived() {
			continue
		}
		gr++
		if !l.endOfRIBHandedOn(addr, familyKey(af.GetConfig().GetFamily()), since) {
			return false
		}
	}
	return gr > 0
}

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

// PeerStatus reports every configured session, sorted by address.
func (s *Speaker) PeerStatus(ctx context.Context) ([]PeerStatus, error) {
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

	got := map[netip.Addr]*api.Peer{}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			got[a.Unmap()] = p
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
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

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/terracenet/terrace/bgp/speaker"
)

// Status is the agent's report, published to terrace-node's status board under the component
// "bgp" (its fields become ComponentStatus.Details) and read back by `terracectl node status`.
type Status struct {
	State      string               `json:"state"` // starting, waiting (no speaker: see Detail), running, degraded (running, last change not applied)
	Detail     string               `json:"detail,omitempty"`
	ASN        uint32               `json:"asn,omitempty"`
	RouterID   string               `json:"routerID,omitempty"`
	Restarting bool                 `json:"restarting,omitempty"`
	Peers      []speaker.PeerStatus `json:"peers"`
	Advertised int                  `json:"advertised"`
	Routes     RouteStats           `json:"routes"`
	Warnings   []string             `json:"warnings,omitempty"`
}

// Details renders s as the generic map a node.ComponentStatus carries.
func (s Status) Details() map[string]any {
	return map[string]any{
		"asn": s.ASN, "routerID": s.RouterID, "restarting": s.Restarting, "peers": s.Peers,
		"advertised": s.Advertised, "routes": s.Routes, "warnings": s.Warnings,
	}
}

// StatusFromDetails reads a Status back from ComponentStatus.Details as decoded from JSON.
func StatusFromDetails(state, detail string, details map[string]any) (Status, error) {
	b, err := json.Marshal(details)
	if err != nil {
		return Status{}, fmt.Errorf("encode bgp status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return Status{}, fmt.Errorf("decode bgp status: %w", err)
	}
	s.State, s.Detail = state, detail
	return s, nil
}

// Status reports the agent's current state.
func (a *Agent) Status(ctx context.Context) Status {
	a.mu.Lock()
	sp, g, lastErr, adv := a.sp, a.global, a.lastErr, a.advert
	ws := slices.Clone(a.warnings)
	a.mu.Unlock()
	st := Status{Advertised: adv, Routes: a.prog.Stats(), Warnings: ws, Peers: []speaker.PeerStatus{}}
	switch {
	case sp == nil && lastErr != "":
		st.State, st.Detail = "waiting", lastErr
	case sp == nil:
		st.State, st.Detail = "starting", "waiting for the datastore"
	case lastErr != "":
		st.State, st.Detail = "degraded", lastErr
	default:
		st.State = "running"
	}
	if sp != nil {
		st.ASN, st.RouterID, st.Restarting = g.ASN, g.RouterID.String(), sp.Restarting()
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if ps, err := sp.PeerStatusCached(ctx, advertisedMaxAge); err == nil {
			st.Peers = ps
		}
	}
	return st
}

// advertisedMaxAge bounds how old the published advertised counts may be while nothing changes;
// a new session, a changed peer or a changed advertisement is counted at the next publish.
const advertisedMaxAge = 30 * time.Second

func (a *Agent) publish(state string) {
	if a.cfg.Publish == nil {
		return
	}
	st := a.Status(context.Background())
	if state != "" {
		st.State = state
	}
	a.cfg.Publish(st)
}

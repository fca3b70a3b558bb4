package speaker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

func TestGobgpLoggerRecordsPeerErrors(t *testing.T) {
	badAS := bgp.NewMessageError(bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_PEER_AS, nil, "as number mismatch")
	tests := []struct {
		name    string
		calls   func(g *gobgpLogger)
		peer    string
		want    string
		notWant string
		absent  bool
	}{
		{
			name: "sent notification names the BGP error",
			calls: func(g *gobgpLogger) {
				g.Warn("sent notification", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Data": badAS})
			},
			peer: "192.0.2.1", want: "bad peer as",
		},
		{
			name: "received notification with code and subcode",
			calls: func(g *gobgpLogger) {
				g.Warn("received notification", log.Fields{"Topic": "Peer", "Key": "192.0.2.1",
					"Code": uint8(bgp.BGP_ERROR_CEASE), "Subcode": uint8(bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN), "Communicated-Reason": "maintenance"})
			},
			peer: "192.0.2.1", want: "administrative shutdown) (maintenance)",
		},
		{
			name: "routine idle-hold message does not hide the real error",
			calls: func(g *gobgpLogger) {
				g.Warn("sent notification", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Data": badAS})
				g.Warn("Closed an accepted connection", log.Fields{"Topic": "Peer", "Key": "192.0.2.1"})
			},
			peer: "192.0.2.1", want: "bad peer as",
		},
		{
			name: "peer down keeps its reason",
			calls: func(g *gobgpLogger) {
				g.Info("Peer Down", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Reason": "hold-timer-expired"})
			},
			peer: "192.0.2.1", want: "session down: hold-timer-expired",
		},
		{
			name: "graceful-restart peer down keeps the cause logged just before",
			calls: func(g *gobgpLogger) {
				g.Warn("hold timer expired", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "State": "BGP_FSM_ESTABLISHED"})
				g.Info("Peer Down", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Reason": "graceful-restart"})
			},
			peer: "192.0.2.1", want: "routes kept for graceful restart: hold timer expired",
		},
		{
			name: "sent notification logged with code and subcode",
			calls: func(g *gobgpLogger) {
				g.Warn("hold timer expired", log.Fields{"Topic": "Peer", "Key": "192.0.2.1"})
				g.Warn("sent notification", log.Fields{"Topic": "Peer", "Key": "192.0.2.1",
					"Code": uint8(bgp.BGP_ERROR_HOLD_TIMER_EXPIRED), "Subcode": uint8(0), "Data": []byte{}})
				g.Info("Peer Down", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Reason": "graceful-restart"})
			},
			peer: "192.0.2.1", want: "routes kept for graceful restart: sent notification: code 4(hold timer expired)",
		},
		{
			name: "graceful-restart peer down does not blame an old error",
			calls: func(g *gobgpLogger) {
				g.Warn("sent notification", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Data": badAS})
				g.now = func() time.Time { return time.Now().Add(time.Hour) }
				g.Info("Peer Down", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Reason": "graceful-restart"})
			},
			peer: "192.0.2.1", want: "session down, routes kept for graceful restart", notWant: "bad peer as",
		},
		{
			name: "the end of a deconfigured session is not an error",
			calls: func(g *gobgpLogger) {
				g.Info("Peer Down", log.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Reason": "dying"})
			},
			peer: "192.0.2.1", absent: true,
		},
		{
			name: "other topics are not peer errors",
			calls: func(g *gobgpLogger) {
				g.Error("failed", log.Fields{"Topic": "Server", "Key": "192.0.2.1", "Error": "x"})
			},
			peer: "192.0.2.1", absent: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			g := newGobgpLogger(slog.New(slog.NewTextHandler(&buf, nil)))
			tc.calls(g)
			got := g.lastErrorOf(tc.peer)
			if tc.absent {
				if got != "" {
					t.Errorf("recorded %q, want nothing", got)
				}
				return
			}
			if !strings.Contains(strings.ToLower(got), strings.ToLower(tc.want)) {
				t.Errorf("last error %q, want it to contain %q", got, tc.want)
			}
			if tc.notWant != "" && strings.Contains(strings.ToLower(got), tc.notWant) {
				t.Errorf("last error %q names %q, which is not the cause", got, tc.notWant)
			}
			if buf.Len() == 0 {
				t.Error("nothing was logged")
			}
		})
	}
}

package agent

import (
	"context"
	"log/slog"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/internal/linkwatch"
	"github.com/terracenet/terrace/internal/routewatch"
)

// SubscribeUnderlay reports every state change of an interface of the caller's network namespace
// other than workload interfaces (trc…), by name: what Config.UnderlayEvents wants. Events are
// coalesced (the channel holds one); it closes when ctx is done.
func SubscribeUnderlay(ctx context.Context, log *slog.Logger) (<-chan string, error) {
	return linkwatch.Subscribe(ctx, nil, 1, func(name string, msgType uint16) bool {
		return (msgType == unix.RTM_NEWLINK || msgType == unix.RTM_DELLINK) && !strings.HasPrefix(name, "trc")
	}, log)
}

// SubscribeUnderlayRoutes signals changes of the main table's routes other than Terrace's own
// (protocols 80 and 81, filtered in the kernel, so 100k learned routes going in cost nothing) and
// other than link-local ones (every pod's veth brings an fe80::/64 route with it, and no next hop
// resolves through one): what Config.UnderlayRoutes wants.
func SubscribeUnderlayRoutes(ctx context.Context, log *slog.Logger) (<-chan struct{}, error) {
	return routewatch.Subscribe(ctx, []uint8{uint8(routes.ProtocolTerrace), uint8(routes.ProtocolTerraceBGP)}, underlayRoute, log)
}

func underlayRoute(c routewatch.Change) bool {
	if c.Nexthop {
		return true // routes through a nexthop object change with it, without a message
	}
	a := c.Dst.Addr()
	return !c.Dst.IsValid() || c.Dst.Bits() == 0 || !(a.IsLinkLocalUnicast() || a.IsMulticast())
}

package felix

import (
	"context"
	"log/slog"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/internal/linkwatch"
)

// SubscribeLinks reports the names of workload-side interfaces (trc…) that appear or change in
// the namespace ns (nil: the caller's), so routes and settings of a re-created veth are restored
// at once instead of at the next resync. The channel closes when ctx is done. Events are dropped
// rather than queued without bound when the agent is busy: the pending poll and resync cover them.
func SubscribeLinks(ctx context.Context, ns *netns.NsHandle, log *slog.Logger) (<-chan string, error) {
	return linkwatch.Subscribe(ctx, ns, 256, func(name string, msgType uint16) bool {
		return msgType == unix.RTM_NEWLINK && strings.HasPrefix(name, "trc")
	}, log)
}

package agent

import (
	"context"
	"log/slog"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/internal/linkwatch"
)

// SubscribeUnderlay reports every state change of an interface of the caller's network namespace
// other than workload interfaces (trc…), by name: what Config.UnderlayEvents wants. Events are
// coalesced (the channel holds one); it closes when ctx is done.
func SubscribeUnderlay(ctx context.Context, log *slog.Logger) (<-chan string, error) {
	return linkwatch.Subscribe(ctx, nil, 1, func(name string, msgType uint16) bool {
		return (msgType == unix.RTM_NEWLINK || msgType == unix.RTM_DELLINK) && !strings.HasPrefix(name, "trc")
	}, log)
}

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SubscribeUnderlay reports, on the returned channel, every state change of an interface of the
// caller's network namespace other than workload interfaces (trc…): what Config.UnderlayEvents
// wants. Events are coalesced (the channel holds one); it closes when ctx is done.
func SubscribeUnderlay(ctx context.Context, log *slog.Logger) (<-chan struct{}, error) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			log.Warn("link subscription error; the route resync repairs what was missed", "err", err)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				if u.Attrs() == nil || strings.HasPrefix(u.Attrs().Name, "trc") {
					continue
				}
				if u.Header.Type != unix.RTM_NEWLINK && u.Header.Type != unix.RTM_DELLINK {
					continue
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}

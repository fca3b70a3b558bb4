package felix

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SubscribeLinks reports the names of workload-side interfaces (trc…) that appear or change in
// the namespace ns (nil: the caller's), so routes and settings of a re-created veth are restored
// at once instead of at the next resync. The channel closes when ctx is done. Events are dropped
// rather than queued without bound when the agent is busy: the pending poll and resync cover them.
func SubscribeLinks(ctx context.Context, ns *netns.NsHandle, log *slog.Logger) (<-chan string, error) {
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: ns,
		ErrorCallback: func(err error) {
			log.Warn("link subscription error; relying on the pending poll and resync", "err", err)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	out := make(chan string, 256)
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
				if u.Header.Type != unix.RTM_NEWLINK || u.Attrs() == nil || !strings.HasPrefix(u.Attrs().Name, "trc") {
					continue
				}
				select {
				case out <- u.Attrs().Name:
				default:
				}
			}
		}
	}()
	return out, nil
}

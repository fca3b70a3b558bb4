// Package linkwatch reports network interfaces changing in a namespace, filtered by the caller:
// felix follows workload interfaces with it, the bgp agent the host's others. It owns one netlink
// link subscription per call and must never change anything or import anything of Terrace's.
package linkwatch

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Subscribe sends the name of every interface of namespace ns (nil: the caller's) for which keep
// says yes, given the interface's name and the message type (unix.RTM_NEWLINK or RTM_DELLINK).
// Names are dropped rather than queued without bound when the reader is busy (the channel holds
// buf): callers must have another way to catch up, a poll or a resync. The channel closes when
// ctx is done, and also when the subscription fails (a receive error, such as ENOBUFS under a
// burst of link events; logged), after which only the caller's poll and resync catch changes.
func Subscribe(ctx context.Context, ns *netns.NsHandle, buf int, keep func(name string, msgType uint16) bool, log *slog.Logger) (<-chan string, error) {
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: ns,
		ErrorCallback: func(err error) {
			if ctx.Err() != nil {
				return // the socket closed because we are stopping
			}
			log.Warn("link subscription error; relying on the poll and resync", "err", err)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	out := make(chan string, buf)
	go func() {
		defer close(out)
		defer close(done)
		// netlink's receiver may be blocked sending to updates when we stop: drained, it sees
		// done and exits instead of waiting for ever.
		defer func() {
			go func() {
				for range updates {
				}
			}()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				if u.Attrs() == nil || !keep(u.Attrs().Name, u.Header.Type) {
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

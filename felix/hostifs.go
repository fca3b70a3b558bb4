package felix

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// hostIfsRelist is how often WatchHostInterfaces lists the addresses again without an event: a
// renamed interface keeps its addresses and sends no address event.
const hostIfsRelist = 30 * time.Second

// WatchHostInterfaces reports the addresses of every interface in the namespace ns (nil: the
// caller's), by interface name, at once and whenever they change, for the calculator to place
// HostEndpoints given by expectedIPs alone. Only the latest snapshot is kept for a busy reader.
// The channel closes when ctx is done.
func WatchHostInterfaces(ctx context.Context, ns *netns.NsHandle, log *slog.Logger) (<-chan map[string][]netip.Addr, error) {
	var h *netlink.Handle
	var err error
	if ns != nil {
		h, err = netlink.NewHandleAt(*ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink for host interfaces: %w", err)
	}
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	err = netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		Namespace: ns,
		ErrorCallback: func(err error) {
			log.Warn("address subscription error; relying on the periodic listing", "err", err)
		},
	})
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("subscribe to address updates: %w", err)
	}
	out := make(chan map[string][]netip.Addr, 1)
	go func() {
		defer close(out)
		defer close(done)
		defer h.Close()
		// netlink's receiver may be blocked sending to updates when we stop (felix rebuilds its
		// dataplane, and so this watch, on some FelixConfiguration changes): drained, it sees
		// done and exits, closing updates, instead of waiting for ever.
		defer func() {
			if updates != nil {
				go func(c <-chan netlink.AddrUpdate) {
					for range c {
					}
				}(updates)
			}
		}()
		relist := time.NewTicker(hostIfsRelist)
		defer relist.Stop()
		var last map[string][]netip.Addr
		publish := func() {
			cur, err := listHostInterfaces(h)
			if err != nil {
				log.Warn("list host interfaces", "err", err)
				return
			}
			if last != nil && maps.EqualFunc(cur, last, slices.Equal) {
				return
			}
			last = cur
			// Replace an unread snapshot rather than block: only the newest matters.
			select {
			case <-out:
			default:
			}
			out <- cur
		}
		publish()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-updates:
				if !ok {
					updates = nil
					continue
				}
				// A burst (an interface with several addresses coming up) costs one listing.
				for drained := false; !drained; {
					select {
					case <-updates:
					default:
						drained = true
					}
				}
				publish()
			case <-relist.C:
				publish()
			}
		}
	}()
	return out, nil
}

// listHostInterfaces returns every interface's addresses, sorted, by name.
func listHostInterfaces(h *netlink.Handle) (map[string][]netip.Addr, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	out := make(map[string][]netip.Addr, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		out[l.Attrs().Name] = nil
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		name, ok := names[a.LinkIndex]
		if !ok || a.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[name] = append(out[name], ip.Unmap())
		}
	}
	for _, as := range out {
		slices.SortFunc(as, netip.Addr.Compare)
	}
	return out, nil
}

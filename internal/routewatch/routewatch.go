// Package routewatch reports that routes of the main table changed, made by anyone but the
// caller: the bgp agent resolves learned next hops through the underlay's routes, and must follow
// them as BIRD follows recursive next hops. It owns one netlink route subscription per call,
// filtered in the kernel, and must never change anything or import anything of Terrace's.
package routewatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Offsets of the rtmsg fields the filter reads, after the 16-byte nlmsghdr.
const (
	offTable    = unix.SizeofNlMsghdr + 4
	offProtocol = unix.SizeofNlMsghdr + 5
)

// offTypeLow is where the low byte of nlmsg_type (host order) lies; every type the filter tells
// apart is below 256.
var offTypeLow = func() uint32 {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return 4
	}
	return 5
}()

// program is the socket filter: keep a nexthop object's message, and a route message of the main
// table whose protocol is not one of ignore; drop every other. The kernel sends each notification
// in a buffer of its own, so the filter sees one message at a time; dropped ones never fill the
// socket's buffer, which is what keeps a burst of the caller's own routes (100k learned at once)
// from overrunning it.
func program(ignore []uint8) []unix.SockFilter {
	n := len(ignore)
	// 0 ld type; 1-2 jeq nexthop → accept; 3 ld table; 4 jeq main; 5 ld protocol;
	// 6..6+n-1 jeq ignored; 6+n accept; 7+n drop.
	accept, drop := uint8(n+6), uint8(n+7)
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: offTypeLow},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.RTM_NEWNEXTHOP, Jt: accept - 2},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.RTM_DELNEXTHOP, Jt: accept - 3},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: offTable},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.RT_TABLE_MAIN, Jt: 0, Jf: drop - 5},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: offProtocol},
	}
	for i, p := range ignore {
		at := uint8(6 + i)
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(p), Jt: drop - at - 1})
	}
	return append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	)
}

// Change is what a route message passing the kernel filter says, for the caller's keep function.
// A nexthop object's message (FRR's underlays, `ip nexthop`) is a Change with Nexthop set and
// nothing else: deleting one changes the routes using it without any route message.
type Change struct {
	Nexthop bool
	Deleted bool
	Dst     netip.Prefix // the zero Prefix: no destination attribute (a default route)
	OIF     int          // the route's outgoing interface (RTA_OIF), 0 if absent
}

// parse reads the route messages in one datagram; anything malformed ends it (what came before
// is kept). A netlink error or done message carries no route and is skipped.
func parse(b []byte) []Change {
	var out []Change
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		n := int(ne.Uint32(b[0:4]))
		typ := ne.Uint16(b[4:6])
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return out
		}
		msg := b[unix.SizeofNlMsghdr:n]
		if adv := (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1); adv < len(b) {
			b = b[adv:]
		} else {
			b = nil
		}
		if typ == unix.RTM_NEWNEXTHOP || typ == unix.RTM_DELNEXTHOP {
			out = append(out, Change{Nexthop: true, Deleted: typ == unix.RTM_DELNEXTHOP})
			continue
		}
		if (typ != unix.RTM_NEWROUTE && typ != unix.RTM_DELROUTE) || len(msg) < unix.SizeofRtMsg {
			continue
		}
		c := Change{Deleted: typ == unix.RTM_DELROUTE}
		family, dstLen := msg[0], int(msg[1])
		attrs := msg[unix.SizeofRtMsg:]
		for len(attrs) >= unix.SizeofRtAttr {
			l := int(ne.Uint16(attrs[0:2]))
			if l < unix.SizeofRtAttr || l > len(attrs) {
				break
			}
			v := attrs[unix.SizeofRtAttr:l]
			switch ne.Uint16(attrs[2:4]) {
			case unix.RTA_DST:
				if a, ok := netip.AddrFromSlice(v); ok && (family == unix.AF_INET) == a.Is4() && dstLen <= a.BitLen() {
					c.Dst = netip.PrefixFrom(a, dstLen)
				}
			case unix.RTA_OIF:
				if len(v) == 4 {
					c.OIF = int(ne.Uint32(v))
				}
			}
			adv := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
			if adv >= len(attrs) {
				break
			}
			attrs = attrs[adv:]
		}
		out = append(out, c)
	}
	return out
}

// Subscribe signals whenever a route of the main table of the caller's network namespace (the
// calling thread's, when the socket is made) changes, IPv4 or IPv6, unless its protocol is one of
// ignore or keep (nil: keep all) says no to it. Signals coalesce: the channel holds one, and a reader sees at least one signal after
// any change. An overrun of the socket's buffer signals too (something may have changed). The
// channel closes when ctx is done, or when receiving fails otherwise (logged).
func Subscribe(ctx context.Context, ignore []uint8, keep func(Change) bool, log *slog.Logger) (<-chan struct{}, error) {
	if len(ignore) > 200 {
		return nil, fmt.Errorf("subscribe to route changes: %d protocols to ignore, at most 200", len(ignore))
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("subscribe to route changes: open netlink socket: %w", err)
	}
	prog := program(ignore)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("subscribe to route changes: attach filter: %w", err)
	}
	// A larger buffer makes overruns rarer; they are harmless (a signal), only wasteful.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("subscribe to route changes: bind: %w", err)
	}
	// Nexthop objects' group is above the bind mask's 32. A kernel without them (before 5.3)
	// refuses; routes are still followed.
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.RTNLGRP_NEXTHOP); err != nil {
		log.Debug("no nexthop object notifications", "err", err)
	}
	// Through the runtime's poller, so that closing the file ends a pending read.
	f := os.NewFile(uintptr(fd), "netlink-route-watch")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	go func() {
		defer close(out)
		defer stop()
		defer f.Close()
		buf := make([]byte, 64<<10)
		for {
			var n int
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
				return !errors.Is(rerr, unix.EAGAIN)
			})
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				log.Warn("route subscription closed; underlay route changes are followed at the resync only", "err", err)
				return
			case errors.Is(rerr, unix.ENOBUFS):
				signal()
			case rerr != nil:
				log.Warn("route subscription failed; underlay route changes are followed at the resync only", "err", rerr)
				return
			case n > 0:
				if keep == nil {
					signal()
					continue
				}
				for _, c := range parse(buf[:n]) {
					if keep(c) {
						signal()
						break
					}
				}
			}
		}
	}()
	return out, nil
}

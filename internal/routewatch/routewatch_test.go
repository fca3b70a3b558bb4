package routewatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/internal/nstest"
)

// run interprets the few classic BPF instructions program emits over one message.
func run(t *testing.T, prog []unix.SockFilter, msg []byte) uint32 {
	t.Helper()
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_B | unix.BPF_ABS:
			if int(ins.K) >= len(msg) {
				return 0 // the kernel drops a message too short to read
			}
			a = uint32(msg[ins.K])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if a == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			t.Fatalf("instruction %d: unexpected code %#x", pc, ins.Code)
		}
	}
	t.Fatal("program ran off its end")
	return 0
}

func routeMsg(typ uint16, table, protocol uint8) []byte {
	m := make([]byte, unix.SizeofNlMsghdr+unix.SizeofRtMsg)
	binary.NativeEndian.PutUint16(m[4:6], typ)
	m[offTable], m[offProtocol] = table, protocol
	return m
}

func TestProgram(t *testing.T) {
	for _, ignore := range [][]uint8{nil, {81}, {80, 81}, {2, 80, 81, 186}} {
		t.Run(fmt.Sprint(ignore), func(t *testing.T) {
			prog := program(ignore)
			for _, tc := range []struct {
				table, proto uint8
			}{{unix.RT_TABLE_MAIN, unix.RTPROT_BOOT}, {unix.RT_TABLE_MAIN, unix.RTPROT_KERNEL}, {unix.RT_TABLE_MAIN, 80},
				{unix.RT_TABLE_MAIN, 81}, {unix.RT_TABLE_MAIN, 186}, {unix.RT_TABLE_LOCAL, unix.RTPROT_KERNEL}, {100, unix.RTPROT_STATIC}, {0, 81}} {
				want := tc.table == unix.RT_TABLE_MAIN
				for _, p := range ignore {
					want = want && tc.proto != p
				}
				for _, typ := range []uint16{unix.RTM_NEWROUTE, unix.RTM_DELROUTE} {
					if got := run(t, prog, routeMsg(typ, tc.table, tc.proto)) != 0; got != want {
						t.Errorf("type %d table %d protocol %d: kept = %v, want %v", typ, tc.table, tc.proto, got, want)
					}
				}
				// A nexthop object's message has no table or protocol there: always kept.
				for _, typ := range []uint16{unix.RTM_NEWNEXTHOP, unix.RTM_DELNEXTHOP} {
					if run(t, prog, routeMsg(typ, tc.table, tc.proto)) == 0 {
						t.Errorf("nexthop message type %d (bytes as table %d protocol %d) dropped", typ, tc.table, tc.proto)
					}
				}
			}
			if run(t, prog, make([]byte, 8)) != 0 {
				t.Error("a message too short to hold an rtmsg was kept")
			}
		})
	}
}

// TestSubscribe runs a real subscription in a fresh namespace: routes of ignored protocols, of
// other tables and of the local table (addresses) never signal; a static route added or
// deleted, IPv4 or IPv6, does; the channel closes when the context ends.
func TestSubscribe(t *testing.T) {
	ns := nstest.New(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "under1", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "under0"},
		{"ip", "addr", "add", "2001:db8::1/64", "dev", "under0", "nodad"},
	} {
		nstest.Run(t, ns, c...)
	}
	time.Sleep(100 * time.Millisecond) // the address's own route notifications come first
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var ch <-chan struct{}
	var mu sync.Mutex
	var seen []Change
	keep := func(c Change) bool {
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
		return !c.Dst.Addr().IsLinkLocalUnicast()
	}
	if err := nstest.Do(t, ns, func() (err error) {
		ch, err = Subscribe(ctx, []uint8{80, 81}, keep, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case <-ch:
			t.Errorf("%s signalled", what)
		case <-time.After(300 * time.Millisecond):
		}
	}
	signalled := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no signal within 5 s", what)
		}
		quiet("the same change again (signals coalesce)")
	}
	quiet("nothing")
	for i := range 50 {
		nstest.Run(t, ns, "ip", "route", "add", fmt.Sprintf("198.18.%d.0/24", i), "via", "192.0.2.9", "proto", "81")
	}
	nstest.Run(t, ns, "ip", "route", "add", "198.18.100.0/26", "dev", "under0", "proto", "80")
	nstest.Run(t, ns, "ip", "-6", "route", "add", "2001:db8:1000::/64", "via", "2001:db8::9", "proto", "81")
	nstest.Run(t, ns, "ip", "route", "add", "198.18.101.0/24", "via", "192.0.2.9", "table", "100")
	nstest.Run(t, ns, "ip", "route", "add", "198.18.102.0/24", "via", "192.0.2.9", "table", "1000")
	quiet("routes of protocols 80 and 81 and of other tables")
	// A pod's veth coming up brings an fe80::/64 route of protocol kernel: keep says no.
	nstest.Run(t, ns, "ip", "link", "add", "trc0a1b2c3d4e5", "type", "veth", "peer", "name", "wl0")
	nstest.Run(t, ns, "ip", "link", "set", "trc0a1b2c3d4e5", "up")
	nstest.Run(t, ns, "ip", "link", "set", "wl0", "up")
	quiet("a link-local route the keep function refuses")
	mu.Lock()
	refused := slices.ContainsFunc(seen, func(c Change) bool { return c.Dst == netip.MustParsePrefix("fe80::/64") && !c.Deleted })
	seen = nil
	mu.Unlock()
	if !refused {
		t.Error("keep was never asked about the veth's fe80::/64 route")
	}

	nstest.Run(t, ns, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.9")
	signalled("an IPv4 route added")
	under0 := nstest.Run(t, ns, "cat", "/sys/class/net/under0/ifindex")
	mu.Lock()
	if want := fmt.Sprintf("[{false false 198.51.100.0/24 %s}]", strings.TrimSpace(under0)); fmt.Sprint(seen) != want {
		t.Errorf("keep was asked about %v, want %s", seen, want)
	}
	mu.Unlock()
	nstest.Run(t, ns, "ip", "-6", "route", "add", "default", "via", "2001:db8::9")
	signalled("an IPv6 route added")
	nstest.Run(t, ns, "ip", "route", "del", "198.51.100.0/24")
	signalled("an IPv4 route deleted")
	nstest.Run(t, ns, "ip", "nexthop", "add", "id", "3", "via", "192.0.2.9", "dev", "under0")
	signalled("a nexthop object added")
	nstest.Run(t, ns, "ip", "nexthop", "del", "id", "3")
	signalled("a nexthop object deleted")
	nstest.Run(t, ns, "ip", "link", "set", "under0", "down")
	signalled("a link down (the kernel drops its routes)")

	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			// A last signal may have been queued; the close must follow.
			if _, ok := <-ch; ok {
				t.Error("a second signal after cancel")
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel still open 5 s after cancel")
	}
}

// routeMsgTo is one IPv4 route message as the kernel sends it: header, rtmsg, RTA_DST, RTA_OIF.
func routeMsgTo(typ uint16, dst string, oif uint32) []byte {
	p := netip.MustParsePrefix(dst)
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofRtMsg+8+8)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:4], uint32(len(msg)))
	ne.PutUint16(msg[4:6], typ)
	r := msg[unix.SizeofNlMsghdr:]
	r[0], r[1] = unix.AF_INET, byte(p.Bits())
	a := r[unix.SizeofRtMsg:]
	ne.PutUint16(a[0:2], 8)
	ne.PutUint16(a[2:4], unix.RTA_DST)
	copy(a[4:8], p.Addr().AsSlice())
	ne.PutUint16(a[8:10], 8)
	ne.PutUint16(a[10:12], unix.RTA_OIF)
	ne.PutUint32(a[12:16], oif)
	return msg
}

// FuzzParse: no datagram makes parse panic or read past it, and every change it reports names a
// valid destination or none.
func FuzzParse(f *testing.F) {
	msg := routeMsgTo(unix.RTM_NEWROUTE, "198.51.100.0/24", 7)
	f.Add(msg)
	f.Add(append(slices.Clone(msg), msg...))
	f.Add(msg[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range parse(b) {
			if c.Dst != (netip.Prefix{}) && !c.Dst.IsValid() {
				t.Fatalf("invalid destination %v", c.Dst)
			}
		}
	})
}

func TestParse(t *testing.T) {
	msg := routeMsgTo(unix.RTM_DELROUTE, "198.51.100.0/24", 7)
	want := Change{Deleted: true, Dst: netip.MustParsePrefix("198.51.100.0/24"), OIF: 7}
	if got := parse(msg); len(got) != 1 || got[0] != want {
		t.Errorf("parse = %v, want [%v]", got, want)
	}
	if got := parse(append(slices.Clone(msg), msg...)); len(got) != 2 {
		t.Errorf("two messages parsed as %v", got)
	}
	bad := slices.Clone(msg)
	binary.NativeEndian.PutUint32(bad[0:4], uint32(len(msg)+1))
	if got := parse(bad); len(got) != 0 {
		t.Errorf("a message longer than the datagram parsed as %v", got)
	}
	msg[unix.SizeofNlMsghdr+1] = 33 // longer than an IPv4 address
	if got := parse(msg); len(got) != 1 || got[0].Dst.IsValid() {
		t.Errorf("a /33 IPv4 destination parsed as %v", got)
	}
}

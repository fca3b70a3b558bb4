package routewatch

import (
	"context"
	"fmt"
	"log/slog"
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

func routeMsg(table, protocol uint8) []byte {
	m := make([]byte, unix.SizeofNlMsghdr+unix.SizeofRtMsg)
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
				if got := run(t, prog, routeMsg(tc.table, tc.proto)) != 0; got != want {
					t.Errorf("table %d protocol %d: kept = %v, want %v", tc.table, tc.proto, got, want)
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
	if err := nstest.Do(t, ns, func() (err error) {
		ch, err = Subscribe(ctx, []uint8{80, 81}, slog.New(slog.DiscardHandler))
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

	nstest.Run(t, ns, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.9")
	signalled("an IPv4 route added")
	nstest.Run(t, ns, "ip", "-6", "route", "add", "default", "via", "2001:db8::9")
	signalled("an IPv6 route added")
	nstest.Run(t, ns, "ip", "route", "del", "198.51.100.0/24")
	signalled("an IPv4 route deleted")
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

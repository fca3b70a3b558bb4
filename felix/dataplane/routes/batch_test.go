package routes

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// libraryRouteMessage is the request vishvananda/netlink builds for a route change, assembled
// from its own message types: the reference appendRouteMessage must match byte for byte.
func libraryRouteMessage(op RouteOp, seq uint32) []byte {
	r := op.Route
	// Without NLM_F_ACK: send asks for one acknowledgement per batch, on its last message.
	typ, flags := unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL
	msg := nl.NewRtMsg()
	switch op.Kind {
	case OpReplace:
		flags = unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	case OpDel:
		typ, flags = unix.RTM_DELROUTE, 0
		msg = nl.NewRtDelMsg()
	}
	req := nl.NewNetlinkRequest(typ, flags)
	req.Seq = seq
	fam, dst := netlink.FAMILY_V4, r.Dst.IP.To4()
	if r.Family == netlink.FAMILY_V6 || dst == nil {
		fam, dst = netlink.FAMILY_V6, r.Dst.IP.To16()
	}
	ones, _ := r.Dst.Mask.Size()
	msg.Family, msg.Dst_len, msg.Protocol, msg.Scope = uint8(fam), uint8(ones), uint8(r.Protocol), uint8(r.Scope)
	msg.Flags = uint32(r.Flags)
	if r.Type != 0 {
		msg.Type = uint8(r.Type)
	}
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	msg.Table = unix.RT_TABLE_UNSPEC
	if table < 256 {
		msg.Table = uint8(table)
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst))
	if table >= 256 {
		req.AddData(nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(uint32(table))))
	}
	gw := func(ip net.IP) []byte {
		if fam == netlink.FAMILY_V4 {
			return ip.To4()
		}
		return ip.To16()
	}
	switch {
	case len(r.MultiPath) > 0:
		var buf []byte
		for _, nh := range r.MultiPath {
			rtnh := &nl.RtNexthop{RtNexthop: unix.RtNexthop{Ifindex: int32(nh.LinkIndex), Flags: uint8(nh.Flags)}}
			if nh.Gw != nil {
				rtnh.Children = []nl.NetlinkRequestData{nl.NewRtAttr(unix.RTA_GATEWAY, gw(nh.Gw))}
			}
			buf = append(buf, rtnh.Serialize()...)
		}
		req.AddData(nl.NewRtAttr(unix.RTA_MULTIPATH, buf))
	case r.Gw != nil:
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, gw(r.Gw)))
	}
	if r.Priority > 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_PRIORITY, nl.Uint32Attr(uint32(r.Priority))))
	}
	if r.LinkIndex > 0 && len(r.MultiPath) == 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(r.LinkIndex))))
	}
	return req.Serialize()
}

// testRoute builds a route of the shapes the writer makes from a few numbers.
func testRoute(v6 bool, bits, table, gws, linkIndex int, blackhole, onlink bool) *netlink.Route {
	dst := netip.MustParseAddr("198.18.7.0")
	gw := netip.MustParseAddr("192.0.2.9")
	if v6 {
		dst, gw = netip.MustParseAddr("2001:db8:7::"), netip.MustParseAddr("2001:db8::9")
	}
	r := &netlink.Route{Dst: ipNet(netip.PrefixFrom(dst, min(bits, dst.BitLen())).Masked()), Table: table,
		Protocol: ProtocolTerraceBGP, Family: family(netip.PrefixFrom(dst, 0)), Type: unix.RTN_UNICAST}
	switch {
	case blackhole:
		r.Type = unix.RTN_BLACKHOLE
	case gws == 0:
		r.LinkIndex, r.Scope = linkIndex, netlink.SCOPE_LINK
	case gws == 1:
		r.Gw, r.LinkIndex = net.IP(gw.AsSlice()), linkIndex
		if onlink {
			r.Flags = unix.RTNH_F_ONLINK
		}
	default:
		for i := range gws {
			nh := &netlink.NexthopInfo{Gw: net.IP(gw.AsSlice()), LinkIndex: linkIndex + i}
			if onlink {
				nh.Flags = unix.RTNH_F_ONLINK
			}
			r.MultiPath = append(r.MultiPath, nh)
			gw = gw.Next()
		}
	}
	return r
}

func TestAppendRouteMessageMatchesLibrary(t *testing.T) {
	for _, kind := range []OpKind{OpAdd, OpReplace, OpDel} {
		for _, v6 := range []bool{false, true} {
			for _, c := range []struct {
				bits, table, gws, link int
				blackhole, onlink      bool
				metric                 int
			}{
				{32, 0, 0, 7, false, false, 0}, {26, 254, 0, 7, false, false, 0}, {24, 0, 1, 0, false, false, 0}, {24, 0, 1, 3, false, false, 0},
				{16, 1000, 1, 0, false, false, 0}, {24, 0, 2, 0, false, false, 0}, {24, 0, 3, 5, false, false, 0}, {26, 0, 0, 0, true, false, 0},
				{0, 100, 2, 1, false, false, 0}, {24, 70000, 0, 9, false, false, 0}, {24, 0, 1, 4, false, true, 0}, {26, 0, 2, 4, false, true, 0},
				{24, 0, 1, 0, false, false, 32}, {26, 0, 2, 4, false, false, 32}, {26, 0, 0, 0, true, false, 1024}, {32, 300, 0, 7, false, false, 1 << 31},
			} {
				op := RouteOp{Kind: kind, Route: testRoute(v6, c.bits, c.table, c.gws, c.link, c.blackhole, c.onlink)}
				op.Route.Priority = c.metric
				if kind == OpDel {
					op.Route.Scope = netlink.SCOPE_NOWHERE
					if !c.blackhole {
						op.Route.Type = 0 // as the writer's plan deletes: any type but blackhole
					}
				}
				name := fmt.Sprintf("kind%d/v6=%v/%+v", kind, v6, c)
				got, err := appendRouteMessage([]byte("prefix"), op, 42)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if want := append([]byte("prefix"), libraryRouteMessage(op, 42)...); !bytes.Equal(got, want) {
					t.Errorf("%s:\n got %x\nwant %x", name, got, want)
				}
			}
		}
	}
}

func TestAppendRouteMessageRejects(t *testing.T) {
	for name, op := range map[string]RouteOp{
		"no route":       {Kind: OpAdd},
		"no destination": {Kind: OpAdd, Route: &netlink.Route{}},
		"bad address":    {Kind: OpAdd, Route: &netlink.Route{Dst: &net.IPNet{IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(8, 32)}}},
		"unknown op":     {Kind: OpKind(9), Route: testRoute(false, 24, 0, 1, 0, false, false)},
	} {
		buf, err := appendRouteMessage([]byte("keep"), op, 1)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if string(buf) != "keep" {
			t.Errorf("%s: buffer changed to %q", name, buf)
		}
	}
}

// FuzzAppendRouteMessage: any route of the writer's shapes encodes as the library would.
func FuzzAppendRouteMessage(f *testing.F) {
	f.Add(uint8(0), false, uint8(24), uint32(0), uint8(1), int32(0), false, uint32(1), uint8(1), uint32(0))
	f.Add(uint8(2), true, uint8(64), uint32(300), uint8(3), int32(4), false, uint32(1<<31), uint8(0), uint32(1024))
	f.Add(uint8(2), false, uint8(26), uint32(0), uint8(0), int32(0), true, uint32(7), uint8(6), uint32(32))
	f.Fuzz(func(t *testing.T, kind uint8, v6 bool, bits uint8, table uint32, gws uint8, link int32, blackhole bool, seq uint32, typ uint8, metric uint32) {
		op := RouteOp{Kind: OpKind(kind % 3), Route: testRoute(v6, int(bits%129), int(table), int(gws%4), int(link&0xffff), blackhole, bits&128 != 0)}
		op.Route.Priority = int(metric)
		op.Route.Type = int(typ % 8) // 0 (unset, as the writer's deletes), unicast, blackhole, others
		got, err := appendRouteMessage(nil, op, seq)
		if err != nil {
			t.Fatal(err)
		}
		if want := libraryRouteMessage(op, seq); !bytes.Equal(got, want) {
			t.Fatalf("got %x\nwant %x", got, want)
		}
	})
}

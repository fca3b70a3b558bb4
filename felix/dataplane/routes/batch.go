package routes

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// OpKind is what a RouteOp does to the kernel.
type OpKind int

const (
	OpAdd OpKind = iota // create; EEXIST when the key is taken
	OpReplace
	OpDel
)

// RouteOp is one route change of a batch.
type RouteOp struct {
	Kind  OpKind
	Route *netlink.Route
}

// Batcher applies many route changes at once and reports an error (nil on success) per op, in
// order. The writer uses it when its Netlink also implements it; otherwise it calls RouteAdd,
// RouteReplace and RouteDel one by one.
type Batcher interface {
	RouteBatch(ops []RouteOp) []error
}

// batchSize bounds the messages of one sendmsg: about 10 KB of requests and, with capped
// acknowledgements, 5 KB of answers, well inside the default socket buffers.
const batchSize = 128

// Batched is a netlink handle whose route changes go to the kernel many per system call: at 100k
// routes one request and one acknowledgement per route (plus the getsockname the library does
// per request) cost about half of programming time. Everything else goes through the embedded
// handle. Batched is not safe for concurrent use.
type Batched struct {
	*netlink.Handle
	fd  int
	seq uint32
	rb  []byte // acknowledgements are read into it; kept, as a batch of 100k routes reads 800 times
}

// NewBatched opens a handle and a batching socket in the network namespace ns (netns.None(): the
// caller's).
func NewBatched(ns netns.NsHandle) (*Batched, error) {
	var h *netlink.Handle
	var err error
	if ns == netns.None() {
		h, err = netlink.NewHandle()
	} else {
		h, err = netlink.NewHandleAt(ns)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	fd, err := openRouteSocket(ns)
	if err != nil {
		h.Close()
		return nil, err
	}
	return &Batched{Handle: h, fd: fd}, nil
}

// openRouteSocket opens a NETLINK_ROUTE socket in ns. A socket stays in the namespace it was
// created in, so only its creation needs a thread in ns: a thread of its own, which is thrown
// away rather than reused should it fail to return to its namespace.
func openRouteSocket(ns netns.NsHandle) (int, error) {
	if ns == netns.None() {
		return newRouteSocket()
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("open route socket: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			ch <- result{-1, fmt.Errorf("open route socket: enter namespace: %w", err)}
			return // still locked: the thread ends with this goroutine
		}
		fd, err := newRouteSocket()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func newRouteSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, fmt.Errorf("open route socket: %w", err)
	}
	setup := []error{
		unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}),
		// Acknowledgements without a copy of the request: only the header is needed to match them.
		unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1),
		// A kernel that never answers must not hang the writer.
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}),
	}
	if err := errors.Join(setup...); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("open route socket: %w", err)
	}
	return fd, nil
}

// Close closes the batching socket and the handle.
func (b *Batched) Close() {
	unix.Close(b.fd)
	b.Handle.Close()
}

// RouteBatch implements Batcher.
func (b *Batched) RouteBatch(ops []RouteOp) []error {
	errs := make([]error, len(ops))
	for start := 0; start < len(ops); start += batchSize {
		end := min(start+batchSize, len(ops))
		b.send(ops[start:end], errs[start:end])
	}
	return errs
}

// send writes one batch in one sendmsg and collects an acknowledgement per message.
func (b *Batched) send(ops []RouteOp, errs []error) {
	var buf []byte
	first := b.seq + 1
	for i, op := range ops {
		b.seq++
		msg, err := routeMessage(op, b.seq)
		if err != nil {
			errs[i] = err
			continue
		}
		buf = append(buf, msg...)
	}
	waiting := map[uint32]int{}
	for i := range ops {
		if errs[i] == nil {
			waiting[first+uint32(i)] = i
		}
	}
	if len(waiting) == 0 {
		return
	}
	fail := func(err error) {
		for _, i := range waiting {
			errs[i] = err
		}
	}
	if err := unix.Sendto(b.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(fmt.Errorf("send route batch: %w", err))
		return
	}
	if b.rb == nil {
		b.rb = make([]byte, 64<<10)
	}
	rb := b.rb
	deadline := time.Now().Add(30 * time.Second)
	for len(waiting) > 0 {
		n, _, err := unix.Recvfrom(b.fd, rb, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) && time.Now().Before(deadline) {
				continue
			}
			fail(fmt.Errorf("read route batch acknowledgements: %w", err))
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			fail(fmt.Errorf("parse route batch acknowledgements: %w", err))
			return
		}
		for _, m := range msgs {
			i, ok := waiting[m.Header.Seq]
			if !ok || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue // not ours (a stale answer) or not an acknowledgement
			}
			delete(waiting, m.Header.Seq)
			if code := int32(nl.NativeEndian().Uint32(m.Data[:4])); code != 0 {
				errs[i] = syscall.Errno(-code)
			}
		}
	}
}

// routeMessage serialises one route change as vishvananda/netlink would for the route shapes the
// writer makes: destination, table, protocol, type and scope, and one gateway with an optional
// interface, several gateways (multipath) or an interface alone.
func routeMessage(op RouteOp, seq uint32) ([]byte, error) {
	r := op.Route
	if r == nil || r.Dst == nil {
		return nil, errors.New("batch route: no destination")
	}
	var typ, flags int
	switch op.Kind {
	case OpAdd:
		typ, flags = unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK
	case OpReplace:
		typ, flags = unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK
	case OpDel:
		typ, flags = unix.RTM_DELROUTE, unix.NLM_F_ACK
	default:
		return nil, fmt.Errorf("batch route %s: unknown op %d", r.Dst, op.Kind)
	}
	req := nl.NewNetlinkRequest(typ, flags)
	req.Seq = seq
	fam := r.Family
	dst := r.Dst.IP.To4()
	if fam == netlink.FAMILY_V6 || dst == nil {
		fam, dst = netlink.FAMILY_V6, r.Dst.IP.To16()
	} else {
		fam = netlink.FAMILY_V4
	}
	if dst == nil {
		return nil, fmt.Errorf("batch route %s: bad destination", r.Dst)
	}
	ones, _ := r.Dst.Mask.Size()
	msg := nl.NewRtMsg()
	if op.Kind == OpDel {
		msg = nl.NewRtDelMsg()
	}
	msg.Family = uint8(fam)
	msg.Dst_len = uint8(ones)
	msg.Protocol = uint8(r.Protocol)
	msg.Scope = uint8(r.Scope)
	if r.Type != 0 {
		msg.Type = uint8(r.Type)
	}
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	if table < 256 {
		msg.Table = uint8(table)
	} else {
		msg.Table = unix.RT_TABLE_UNSPEC
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst))
	if table >= 256 {
		req.AddData(nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(uint32(table))))
	}
	gwBytes := func(ip net.IP) []byte {
		if fam == netlink.FAMILY_V4 {
			return ip.To4()
		}
		return ip.To16()
	}
	switch {
	case len(r.MultiPath) > 0:
		var buf []byte
		for _, nh := range r.MultiPath {
			rtnh := &nl.RtNexthop{RtNexthop: unix.RtNexthop{Ifindex: int32(nh.LinkIndex)}}
			if nh.Gw != nil {
				rtnh.Children = []nl.NetlinkRequestData{nl.NewRtAttr(unix.RTA_GATEWAY, gwBytes(nh.Gw))}
			}
			buf = append(buf, rtnh.Serialize()...)
		}
		req.AddData(nl.NewRtAttr(unix.RTA_MULTIPATH, buf))
	case r.Gw != nil:
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, gwBytes(r.Gw)))
	}
	if r.LinkIndex > 0 && len(r.MultiPath) == 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(r.LinkIndex))))
	}
	return req.Serialize(), nil
}

package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
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
	wb  []byte // requests are encoded into it; kept for the same reason
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

// ErrUnanswered marks a request whose outcome is unknown: the batch it was in could not be sent
// whole or its answers could not be read. The kernel may or may not hold the change.
var ErrUnanswered = errors.New("route request unanswered")

// send writes one batch in one sendmsg. Only the batch's last message asks for an
// acknowledgement: the kernel answers a failed request with an error whatever its flags, and
// handles a sendmsg's requests in order, so once the last one is answered every request without
// an error succeeded. An acknowledgement per route cost one socket buffer each, allocated by the
// kernel and read back (a tenth of terrace-node's CPU while 100k routes went in). Requests are
// encoded straight into one buffer and answers parsed in place.
func (b *Batched) send(ops []RouteOp, errs []error) {
	buf := b.wb[:0]
	first := b.seq + 1
	last, lastAt := -1, 0 // the last encoded op and where its message starts
	for i, op := range ops {
		b.seq++
		at := len(buf)
		var err error
		if buf, err = appendRouteMessage(buf, op, b.seq); err != nil {
			errs[i] = err
			continue
		}
		last, lastAt = i, at
	}
	b.wb = buf
	if last < 0 {
		return
	}
	flags := binary.NativeEndian.Uint16(buf[lastAt+6:])
	binary.NativeEndian.PutUint16(buf[lastAt+6:], flags|unix.NLM_F_ACK)
	// answered[i] marks ops[i] answered with an error; an op that failed to encode counts too.
	var answered [batchSize]bool
	for i := range ops {
		answered[i] = errs[i] != nil
	}
	fail := func(err error) {
		// Without every answer, which requests succeeded is unknown: report all that did not
		// fail as failed, so the writer reads the table again rather than trust them.
		err = fmt.Errorf("%w: %w", ErrUnanswered, err)
		for i := range ops {
			if !answered[i] {
				errs[i] = err
			}
		}
	}
	if err := unix.Sendto(b.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(fmt.Errorf("send route batch: %w", err))
		return
	}
	if b.rb == nil {
		b.rb = make([]byte, 64<<10)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !answered[last] {
		// Only the kernel may send to this socket (NETLINK_ROUTE does not let unprivileged
		// processes send unicast), so a plain read is enough: no source address to check.
		n, err := unix.Read(b.fd, b.rb)
		if err != nil {
			if errors.Is(err, unix.EINTR) && time.Now().Before(deadline) {
				continue
			}
			fail(fmt.Errorf("read route batch acknowledgements: %w", err))
			return
		}
		msgs := b.rb[:n]
		for len(msgs) >= unix.NLMSG_HDRLEN {
			ln := int(binary.NativeEndian.Uint32(msgs[0:4]))
			if ln < unix.NLMSG_HDRLEN || ln > len(msgs) {
				fail(fmt.Errorf("parse route batch acknowledgements: message length %d of %d bytes", ln, len(msgs)))
				return
			}
			typ := binary.NativeEndian.Uint16(msgs[4:6])
			seq := binary.NativeEndian.Uint32(msgs[8:12])
			data := msgs[unix.NLMSG_HDRLEN:ln]
			msgs = msgs[min(nlmsgAlign(ln), len(msgs)):]
			i := int(seq - first)
			if typ != unix.NLMSG_ERROR || len(data) < 4 || seq-first >= uint32(len(ops)) || answered[i] {
				continue // not ours (a stale answer) or not an acknowledgement
			}
			code := int32(binary.NativeEndian.Uint32(data[:4]))
			if code != 0 {
				errs[i] = syscall.Errno(-code)
			}
			// A success answers only the request that asked for it (the last); the requests
			// before it that sent nothing back succeeded.
			answered[i] = code != 0 || i == last
		}
	}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func rtaAlign(n int) int   { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// appendRtAttr appends one attribute: length, type, data, padding.
func appendRtAttr(buf []byte, typ uint16, data []byte) []byte {
	n := unix.SizeofRtAttr + len(data)
	buf = binary.NativeEndian.AppendUint16(buf, uint16(n))
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = append(buf, data...)
	return append(buf, make([]byte, rtaAlign(n)-n)...)
}

// appendRouteMessage appends one route change to buf, with the header, rtmsg and attributes
// vishvananda/netlink would send (the test compares it byte for byte with a transcription of the
// library's encoding; the kernel does not mind the attributes' order) for the route shapes the writer makes: destination, table, protocol, type, scope and
// metric, and one gateway with an optional interface, several gateways (multipath) or an interface
// alone. On error buf is returned unchanged.
func appendRouteMessage(buf []byte, op RouteOp, seq uint32) ([]byte, error) {
	r := op.Route
	if r == nil || r.Dst == nil {
		return buf, errors.New("batch route: no destination")
	}
	var typ, flags uint16
	switch op.Kind {
	case OpAdd:
		typ, flags = unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL
	case OpReplace:
		typ, flags = unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE
	case OpDel:
		typ, flags = unix.RTM_DELROUTE, 0
	default:
		return buf, fmt.Errorf("batch route %s: unknown op %d", r.Dst, op.Kind)
	}
	fam := r.Family
	dst := r.Dst.IP.To4()
	if fam == netlink.FAMILY_V6 || dst == nil {
		fam, dst = netlink.FAMILY_V6, r.Dst.IP.To16()
	} else {
		fam = netlink.FAMILY_V4
	}
	if dst == nil {
		return buf, fmt.Errorf("batch route %s: bad destination", r.Dst)
	}
	gwBytes := func(ip net.IP) []byte {
		if fam == netlink.FAMILY_V4 {
			return ip.To4()
		}
		return ip.To16()
	}
	ones, _ := r.Dst.Mask.Size()
	// The library's new-route message starts as unicast, its delete message as type 0, which the
	// kernel reads as "any type": a delete must not ask for unicast, or a protocol-81 unreachable
	// route would never match (ESRCH, read as already gone) and stay.
	rtype := uint8(unix.RTN_UNICAST)
	if op.Kind == OpDel {
		rtype = 0
	}
	if r.Type != 0 {
		rtype = uint8(r.Type)
	}
	table := r.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	msgTable := uint8(unix.RT_TABLE_UNSPEC)
	if table < 256 {
		msgTable = uint8(table)
	}
	start := len(buf)
	ne := binary.NativeEndian
	// nlmsghdr; its length is filled in at the end.
	buf = ne.AppendUint32(buf, 0)
	buf = ne.AppendUint16(buf, typ)
	buf = ne.AppendUint16(buf, unix.NLM_F_REQUEST|flags)
	buf = ne.AppendUint32(buf, seq)
	buf = ne.AppendUint32(buf, 0)
	// rtmsg
	buf = append(buf, uint8(fam), uint8(ones), 0, 0, msgTable, uint8(r.Protocol), uint8(r.Scope), rtype)
	buf = ne.AppendUint32(buf, uint32(r.Flags)) // rtm_flags: RTNH_F_ONLINK for an onlink gateway
	buf = appendRtAttr(buf, unix.RTA_DST, dst)
	if table >= 256 {
		buf = appendRtAttr(buf, unix.RTA_TABLE, ne.AppendUint32(nil, uint32(table)))
	}
	switch {
	case len(r.MultiPath) > 0:
		var nhs []byte
		for _, nh := range r.MultiPath {
			n := unix.SizeofRtNexthop
			var gw []byte
			if nh.Gw != nil {
				gw = gwBytes(nh.Gw)
				n += rtaAlign(unix.SizeofRtAttr + len(gw))
			}
			// rtnexthop: length, flags, hops, ifindex; then the gateway attribute.
			nhs = ne.AppendUint16(nhs, uint16(n))
			nhs = append(nhs, uint8(nh.Flags), 0) // rtnh_flags (RTNH_F_ONLINK), rtnh_hops
			nhs = ne.AppendUint32(nhs, uint32(int32(nh.LinkIndex)))
			if nh.Gw != nil {
				nhs = appendRtAttr(nhs, unix.RTA_GATEWAY, gw)
			}
		}
		buf = appendRtAttr(buf, unix.RTA_MULTIPATH, nhs)
	case r.Gw != nil:
		buf = appendRtAttr(buf, unix.RTA_GATEWAY, gwBytes(r.Gw))
	}
	if r.Priority > 0 {
		buf = appendRtAttr(buf, unix.RTA_PRIORITY, ne.AppendUint32(nil, uint32(r.Priority)))
	}
	if r.LinkIndex > 0 && len(r.MultiPath) == 0 {
		buf = appendRtAttr(buf, unix.RTA_OIF, ne.AppendUint32(nil, uint32(r.LinkIndex)))
	}
	ne.PutUint32(buf[start:start+4], uint32(len(buf)-start))
	return buf, nil
}

package fastpath

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The object `make bpf` builds from bpf/fastpath.c; committed so a build needs no clang.
//
//go:embed bpf/fastpath_bpfel.o
var object []byte

// Names in the object. Programs and maps carry Terrace's trc_ prefix so bpftool shows whose
// they are.
const (
	progFromWorkload = "trc_fp_from_wl"
	progToWorkload   = "trc_fp_to_wl"
	mapWorkloads     = "trc_fp_wl4"
	mapWorkloads6    = "trc_fp_wl6"
	mapOut           = "trc_fp_out"
	mapStats         = "trc_fp_stats"
)

// BPF is the real Kernel: the programs and maps loaded once, attached with tcx links that die
// with this process (nothing is pinned), so a stopped terrace-node leaves forwarding to the
// kernel and its iptables rules alone.
type BPF struct {
	ns       *netns.NsHandle
	nl       *netlink.Handle
	coll     *ebpf.Collection
	from, to *ebpf.Program
	wl, wl6  *ebpf.Map
	out      *ebpf.Map
	stats    *ebpf.Map
}

// LoadBPF loads the fast path for the namespace ns (nil: this process's). It fails where the
// kernel lacks what the fast path needs: BTF, the conntrack kfuncs (Linux 6.0), tcx (6.6).
func LoadBPF(ns *netns.NsHandle) (_ *BPF, err error) {
	b := &BPF{ns: ns}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if ns != nil {
		b.nl, err = netlink.NewHandleAt(*ns)
	} else {
		b.nl, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("load fast path: open netlink: %w", err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, fmt.Errorf("load fast path: read object: %w", err)
	}
	err = inNS(ns, func() error {
		// The namespace's own conntrack timeouts: a fast-pathed packet refreshes its entry as
		// conntrack would.
		if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_max"); errors.Is(err, os.ErrNotExist) {
			// A modular kernel before the first conntrack rule: the kfuncs and the sysctls
			// come with the module. Best effort; the reads below say if it failed.
			_ = exec.Command("modprobe", "nf_conntrack").Run()
		}
		for v, sysctl := range map[string]string{
			"tcp_established_timeout_ms": "nf_conntrack_tcp_timeout_established",
			"udp_stream_timeout_ms":      "nf_conntrack_udp_timeout_stream",
			"udp_timeout_ms":             "nf_conntrack_udp_timeout",
		} {
			secs, err := readSysctl("/proc/sys/net/netfilter/" + sysctl)
			if err != nil {
				return err
			}
			if err := spec.Variables[v].Set(uint32(min(secs, 4_000_000) * 1000)); err != nil {
				return fmt.Errorf("set %s: %w", v, err)
			}
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				return fmt.Errorf("the kernel refused the program: %v", verr.Cause)
			}
			return err
		}
		b.coll = coll
		b.from, b.to = coll.Programs[progFromWorkload], coll.Programs[progToWorkload]
		b.wl, b.wl6, b.out, b.stats = coll.Maps[mapWorkloads], coll.Maps[mapWorkloads6], coll.Maps[mapOut], coll.Maps[mapStats]
		// tcx came with Linux 6.6: find out now, on the loopback device every namespace has,
		// rather than at the first pod.
		lo, err := b.nl.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Attrs().Index, Program: b.to, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("attach a tcx program: %w", err)
		}
		return l.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("load fast path: %w", err)
	}
	return b, nil
}

func readSysctl(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read conntrack timeout: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}

// inNS runs fn on a thread in ns: tcx resolves an ifindex, and /proc/sys/net reads, in the
// calling thread's namespace.
func inNS(ns *netns.NsHandle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get namespace: %w", err)
			return // the thread stays locked and dies with the goroutine
		}
		defer orig.Close()
		if err := netns.Set(*ns); err != nil {
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("leave namespace: %w", serr))
			return // a thread left in the wrong namespace must not be reused
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// LinkByName implements Kernel.
func (b *BPF) LinkByName(name string) (Link, error) {
	l, err := b.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return Link{}, ErrNoLink
		}
		return Link{}, fmt.Errorf("find interface %s: %w", name, err)
	}
	return Link{Index: l.Attrs().Index, Ethernet: l.Attrs().EncapType == "ether"}, nil
}

// Liberal implements Kernel.
func (b *BPF) Liberal() (bool, error) {
	var v uint64
	err := inNS(b.ns, func() (err error) {
		v, err = readSysctl("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
		return err
	})
	return v == 1, err
}

// Attach implements Kernel. A host interface is also one the program may send packets out of,
// for as long as it is attached.
func (b *BPF) Attach(ifindex int, role Role) (Attachment, error) {
	prog := b.to
	if role == RoleWorkload {
		prog = b.from
	}
	var out *ebpf.Map
	if role == RoleHost {
		out = b.out
		if err := out.Put(uint32(ifindex), uint32(1)); err != nil {
			return nil, fmt.Errorf("put ifindex %d in %s: %w", ifindex, mapOut, err)
		}
	}
	var l link.Link
	err := inNS(b.ns, func() (err error) {
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
		return err
	})
	if err != nil {
		if out != nil {
			_ = out.Delete(uint32(ifindex))
		}
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", prog.String(), ifindex, err)
	}
	return tcxAttachment{l: l, ifindex: ifindex, out: out}, nil
}

type tcxAttachment struct {
	l       link.Link
	ifindex int
	out     *ebpf.Map // the egress map the ifindex is in, for a host interface
}

// Live says whether the link still holds its device: a deleted interface leaves it defunct.
func (a tcxAttachment) Live() bool {
	info, err := a.l.Info()
	if err != nil {
		return false
	}
	tcx := info.TCX()
	return tcx != nil && int(tcx.Ifindex) == a.ifindex
}

func (a tcxAttachment) Close() error {
	var errs []error
	if a.out != nil {
		if err := a.out.Delete(uint32(a.ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete ifindex %d from %s: %w", a.ifindex, mapOut, err))
		}
	}
	return errors.Join(append(errs, a.l.Close())...)
}

// mapOf picks the map and key for an address.
func (b *BPF) mapOf(addr netip.Addr) (*ebpf.Map, string, any) {
	if addr.Is4() {
		return b.wl, mapWorkloads, addr.As4()
	}
	return b.wl6, mapWorkloads6, addr.As16()
}

// PutWorkload implements Kernel.
func (b *BPF) PutWorkload(addr netip.Addr, ifindex int) error {
	m, name, key := b.mapOf(addr)
	if err := m.Put(key, uint32(ifindex)); err != nil {
		return fmt.Errorf("put %s in %s: %w", addr, name, err)
	}
	return nil
}

// DeleteWorkload implements Kernel.
func (b *BPF) DeleteWorkload(addr netip.Addr) error {
	m, name, key := b.mapOf(addr)
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s from %s: %w", addr, name, err)
	}
	return nil
}

// Workloads implements Kernel: both maps.
func (b *BPF) Workloads() (map[netip.Addr]int, error) {
	out := map[netip.Addr]int{}
	var v uint32
	var k4 [4]byte
	it := b.wl.Iterate()
	for it.Next(&k4, &v) {
		out[netip.AddrFrom4(k4)] = int(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", mapWorkloads, err)
	}
	var k6 [16]byte
	it = b.wl6.Iterate()
	for it.Next(&k6, &v) {
		out[netip.AddrFrom16(k6)] = int(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", mapWorkloads6, err)
	}
	return out, nil
}

// Stats implements Kernel: the per-CPU counters summed.
func (b *BPF) Stats() (Stats, error) {
	var s Stats
	fields := []*uint64{&s.Forwarded, &s.NotEstablished, &s.NotEligible, &s.Spoofed}
	for i, f := range fields {
		var per []uint64
		if err := b.stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("read %s: %w", mapStats, err)
		}
		for _, v := range per {
			*f += v
		}
	}
	return s, nil
}

// Close releases the programs and maps; links already closed by their owner stay closed.
func (b *BPF) Close() error {
	if b.coll != nil {
		b.coll.Close()
	}
	if b.nl != nil {
		b.nl.Close()
	}
	return nil
}

// Package fastpath owns Terrace's forwarding fast path: a tc (tcx) ingress program on each
// workload's host-side interface and on the host's own interfaces that forwards packets of
// flows conntrack already holds as established (so iptables has accepted them) straight to
// the device the kernel's route names, past the IP stack and netfilter. Felix decides which
// interfaces carry it and which addresses belong to which workload; the kernel's conntrack,
// routes and neighbours decide each packet.
//
// It must never decide policy: a packet it is not sure the kernel would forward unchanged as
// ESTABLISHED (no entry, unanswered, NAT, a TCP flag that changes state, TTL, options,
// fragments, MTU, a route or neighbour not resolved) goes on to the kernel as before. It never
// drops and never pins: its links close with the process, leaving forwarding to the kernel.
// IPv6 is not fast-pathed.
package fastpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/terracenet/terrace/felix/dataplane/sysctl"
)

// Role says which program an interface carries.
type Role int

const (
	// RoleWorkload: the host side of a workload's veth; packets from the pod, source checked.
	RoleWorkload Role = iota + 1
	// RoleHost: the host's own interfaces; packets for local workloads.
	RoleHost
)

func (r Role) String() string {
	switch r {
	case RoleWorkload:
		return "workload"
	case RoleHost:
		return "host"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ErrNoLink is Kernel.LinkIndex's answer for an interface that does not exist (yet).
var ErrNoLink = errors.New("no such interface")

// Attachment is one program attached to one interface.
type Attachment interface {
	Live() bool // still attached to the interface it was made for
	Close() error
}

// Stats are the program's counters since it was loaded.
type Stats struct {
	Forwarded      uint64 // sent on by the fast path
	NotEstablished uint64 // left to the kernel: no entry, or not (yet) answered or established
	NotEligible    uint64 // left to the kernel: NAT, TCP control, TTL, options, fragments, MTU, route
	Spoofed        uint64 // left to the kernel (which drops them): a workload's foreign source
}

// Kernel is the narrow interface to the BPF objects and links (*BPF); tests use a recording fake.
type Kernel interface {
	LinkIndex(name string) (int, error)
	Attach(ifindex int, role Role) (Attachment, error)
	PutWorkload(addr netip.Addr, ifindex int) error
	DeleteWorkload(addr netip.Addr) error
	Workloads() (map[netip.Addr]int, error)
	Stats() (Stats, error)
}

type attachment struct {
	role    Role
	ifindex int
	a       Attachment
}

// Writer holds the desired fast path (workload addresses and the interfaces to attach to) and
// what it put in the kernel, and applies the difference. Not safe for concurrent use, except
// Stats.
type Writer struct {
	k   Kernel
	log *slog.Logger

	workloads map[netip.Addr]string // desired: IPv4 address -> host-side interface
	hostIfs   map[string]bool       // desired: the host's own interfaces

	index    map[string]int // interface indexes looked up; dropped by DeviceChanged
	pending  map[string]bool
	attached map[string]attachment
	entries  map[netip.Addr]int // the kernel map as last written or read
}

// New returns a writer over k.
func New(k Kernel, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		k: k, log: log,
		workloads: map[netip.Addr]string{}, hostIfs: map[string]bool{},
		index: map[string]int{}, pending: map[string]bool{},
		attached: map[string]attachment{}, entries: map[netip.Addr]int{},
	}
}

// SetWorkload says a local workload's IPv4 address is routed to its interface dev. Other
// addresses are ignored: IPv6 is not fast-pathed.
func (w *Writer) SetWorkload(addr netip.Addr, dev string) {
	if addr = addr.Unmap(); addr.Is4() {
		w.workloads[addr] = dev
	}
}

// DeleteWorkload forgets an address set with SetWorkload.
func (w *Writer) DeleteWorkload(addr netip.Addr) { delete(w.workloads, addr.Unmap()) }

// SetHostInterfaces replaces the set of the host's own interfaces that carry the program for
// traffic towards local workloads.
func (w *Writer) SetHostInterfaces(names []string) {
	w.hostIfs = map[string]bool{}
	for _, n := range names {
		w.hostIfs[n] = true
	}
}

// HostInterfaces picks, from a namespace's interfaces and their addresses, those that may
// bring traffic for local workloads: up with an IPv4 address that is not loopback or link-local,
// and not a workload's (named with workloadPrefix).
func HostInterfaces(ifs map[string][]netip.Addr, workloadPrefix string) []string {
	var out []string
	for name, addrs := range ifs {
		if name == "lo" || strings.HasPrefix(name, workloadPrefix) {
			continue
		}
		if slices.ContainsFunc(addrs, func(a netip.Addr) bool {
			return a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast()
		}) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// DeviceChanged says dev may have been created or re-created: its index is looked up again.
func (w *Writer) DeviceChanged(dev string) { delete(w.index, dev) }

// Pending lists interfaces the fast path wants that do not exist yet.
func (w *Writer) Pending() []string { return slices.Sorted(maps.Keys(w.pending)) }

// Stats reads the program's counters.
func (w *Writer) Stats() (Stats, error) { return w.k.Stats() }

func (w *Writer) wanted() map[string]Role {
	want := make(map[string]Role, len(w.hostIfs)+len(w.workloads))
	for n := range w.hostIfs {
		want[n] = RoleHost
	}
	for _, dev := range w.workloads {
		want[dev] = RoleWorkload
	}
	return want
}

// Apply brings the kernel to the desired state: links to interfaces no longer wanted are
// closed first, then missing ones are made and the address map is brought in line. Independent
// failures are joined; what failed is tried again at the next Apply.
func (w *Writer) Apply(ctx context.Context) error {
	var errs []error
	want := w.wanted()
	for name, at := range w.attached {
		if want[name] != at.role {
			errs = append(errs, w.detach(name))
		}
	}
	clear(w.pending)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if ctx.Err() != nil {
			return errors.Join(append(errs, ctx.Err())...)
		}
		idx, ok := w.index[name]
		if !ok {
			i, err := w.k.LinkIndex(name)
			switch {
			case errors.Is(err, ErrNoLink):
				w.pending[name] = true
				if _, had := w.attached[name]; had {
					errs = append(errs, w.detach(name))
				}
				continue
			case err != nil:
				errs = append(errs, err)
				continue
			}
			idx = i
			w.index[name] = idx
		}
		if at, had := w.attached[name]; had {
			if at.ifindex == idx && at.a.Live() {
				continue
			}
			// Re-created under the same name: the old link is defunct.
			errs = append(errs, w.detach(name))
		}
		a, err := w.k.Attach(idx, want[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("attach fast path to %s: %w", name, err))
			delete(w.index, name)
			continue
		}
		w.attached[name] = attachment{role: want[name], ifindex: idx, a: a}
		w.log.Debug("fast path attached", "interface", name, "ifindex", idx, "role", want[name].String())
	}
	errs = append(errs, w.applyEntries())
	return errors.Join(errs...)
}

func (w *Writer) detach(name string) error {
	at := w.attached[name]
	delete(w.attached, name)
	if err := at.a.Close(); err != nil {
		return fmt.Errorf("detach fast path from %s: %w", name, err)
	}
	w.log.Debug("fast path detached", "interface", name)
	return nil
}

// applyEntries writes the address map: an address whose interface is not attached (missing,
// or failed) has no entry, so no packet is sent to or accepted from an interface the fast path
// does not watch.
func (w *Writer) applyEntries() error {
	desired := map[netip.Addr]int{}
	for addr, dev := range w.workloads {
		if at, ok := w.attached[dev]; ok && at.role == RoleWorkload {
			desired[addr] = at.ifindex
		}
	}
	var errs []error
	for addr := range w.entries {
		if _, ok := desired[addr]; ok {
			continue
		}
		if err := w.k.DeleteWorkload(addr); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.entries, addr)
	}
	for _, addr := range slices.SortedFunc(maps.Keys(desired), netip.Addr.Compare) {
		idx := desired[addr]
		if cur, ok := w.entries[addr]; ok && cur == idx {
			continue
		}
		if err := w.k.PutWorkload(addr, idx); err != nil {
			errs = append(errs, err)
			continue
		}
		w.entries[addr] = idx
	}
	return errors.Join(errs...)
}

// Resync reads the address map back from the kernel, looks every interface up again (links of
// re-created interfaces are remade) and applies.
func (w *Writer) Resync(ctx context.Context) error {
	got, err := w.k.Workloads()
	if err != nil {
		return fmt.Errorf("resync fast path: %w", err)
	}
	w.entries = got
	clear(w.index)
	return w.Apply(ctx)
}

// Close detaches every link.
func (w *Writer) Close() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(w.attached)) {
		errs = append(errs, w.detach(name))
	}
	return errors.Join(errs...)
}

// Sysctls are the namespace settings the fast path needs. Conntrack never sees the packets it
// forwards, so its idea of a TCP connection's windows falls behind; the FIN or RST that comes
// through the kernel afterwards would be judged out of window, marked INVALID and dropped by
// policy. Liberal tracking is what the kernel's own flowtable sets on each flow it offloads.
func Sysctls() []sysctl.Setting {
	return []sysctl.Setting{{Path: "net/netfilter/nf_conntrack_tcp_be_liberal", Value: "1"}}
}

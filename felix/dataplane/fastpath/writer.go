// Package fastpath owns Terrace's forwarding fast path: a tc (tcx) ingress program on each
// workload's host-side interface and on the host's own interfaces that forwards packets of
// flows conntrack already holds as established (so iptables has accepted them) straight to
// the device the kernel's route names, past the IP stack and netfilter. Felix decides which
// interfaces carry it and which addresses belong to which workload; the kernel's conntrack,
// routes and neighbours decide each packet.
//
// It must never decide policy: a packet it is not sure the kernel would forward unchanged as
// ESTABLISHED (no entry, unanswered, NAT, a TCP flag that changes state, TTL, options,
// fragments, extension headers, MTU, a route or neighbour not resolved) goes on to the kernel as
// before. It never pins: its links close with the process, leaving forwarding to the kernel.
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
	"sync"

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

// Link is what the writer needs to know of an interface.
type Link struct {
	Index    int
	Ethernet bool // the program reads an Ethernet header: other link types never carry it
}

// Kernel is the narrow interface to the BPF objects and links (*BPF); tests use a recording fake.
// Attach may be called from several goroutines at once.
type Kernel interface {
	LinkByName(name string) (Link, error)
	Attach(ifindex int, role Role) (Attachment, error)
	PutWorkload(addr netip.Addr, ifindex int) error
	DeleteWorkload(addr netip.Addr) error
	Workloads() (map[netip.Addr]int, error)
	Stats() (Stats, error)
	// Liberal says whether conntrack is liberal about TCP windows (see Sysctls).
	Liberal() (bool, error)
}

type attachment struct {
	role    Role
	ifindex int
	a       Attachment
}

// attachWorkers bounds the attaches in flight: each tcx attach waits about 9 ms for an RCU grace
// period here, which concurrent attaches share (a node starting with a thousand pods).
const attachWorkers = 32

// Writer holds the desired fast path (workload addresses and the interfaces to attach to) and
// what it put in the kernel, and applies the difference. The setters may be called while Apply
// runs (felix applies the fast path off its loop, so a thousand attaches never delay policy);
// Apply and Resync must not run concurrently with each other.
type Writer struct {
	k   Kernel
	log *slog.Logger

	mu        sync.Mutex
	workloads map[netip.Addr]string // desired: address -> host-side interface
	hostIfs   map[string]bool       // desired: the host's own interfaces
	changed   map[string]bool       // interfaces to look up again (DeviceChanged)
	pending   []string              // as of the last Apply

	// Apply's own.
	index    map[string]Link // interfaces looked up
	attached map[string]attachment
	entries  map[netip.Addr]int // the kernel map as last written or read
	skipped  map[string]bool    // host interfaces that are not Ethernet (logged once)
}

// New returns a writer over k.
func New(k Kernel, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		k: k, log: log,
		workloads: map[netip.Addr]string{}, hostIfs: map[string]bool{}, changed: map[string]bool{},
		index: map[string]Link{}, attached: map[string]attachment{}, entries: map[netip.Addr]int{},
		skipped: map[string]bool{},
	}
}

// SetWorkload says a local workload's address (IPv4 or IPv6) is routed to its interface dev.
func (w *Writer) SetWorkload(addr netip.Addr, dev string) {
	if addr = addr.Unmap(); addr.IsValid() && addr.Zone() == "" {
		w.mu.Lock()
		w.workloads[addr] = dev
		w.mu.Unlock()
	}
}

// DeleteWorkload forgets an address set with SetWorkload.
func (w *Writer) DeleteWorkload(addr netip.Addr) {
	w.mu.Lock()
	delete(w.workloads, addr.Unmap())
	w.mu.Unlock()
}

// SetHostInterfaces replaces the set of the host's own interfaces that carry the program for
// traffic towards local workloads.
func (w *Writer) SetHostInterfaces(names []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hostIfs = map[string]bool{}
	for _, n := range names {
		w.hostIfs[n] = true
	}
}

// HostInterfaces picks, from a namespace's interfaces and their addresses, those that may
// bring traffic for local workloads: with an address that is not loopback or link-local (IPv4,
// or global IPv6), and not a workload's (named with workloadPrefix). Apply skips those that are
// not Ethernet.
func HostInterfaces(ifs map[string][]netip.Addr, workloadPrefix string) []string {
	var out []string
	for name, addrs := range ifs {
		if name == "lo" || strings.HasPrefix(name, workloadPrefix) {
			continue
		}
		if slices.ContainsFunc(addrs, func(a netip.Addr) bool {
			return (a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast()) || (a.Is6() && a.IsGlobalUnicast())
		}) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// DeviceChanged says dev may have been created or re-created: its index is looked up again.
func (w *Writer) DeviceChanged(dev string) {
	w.mu.Lock()
	w.changed[dev] = true
	w.mu.Unlock()
}

// Pending lists interfaces the fast path wanted at the last Apply that did not exist yet.
func (w *Writer) Pending() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.pending)
}

// Stats reads the program's counters.
func (w *Writer) Stats() (Stats, error) { return w.k.Stats() }

// snapshot copies the desired state and takes the interfaces to look up again.
func (w *Writer) snapshot() (workloads map[netip.Addr]string, want map[string]Role) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for dev := range w.changed {
		delete(w.index, dev)
	}
	clear(w.changed)
	want = make(map[string]Role, len(w.hostIfs)+len(w.workloads))
	for n := range w.hostIfs {
		want[n] = RoleHost
	}
	for _, dev := range w.workloads {
		want[dev] = RoleWorkload
	}
	return maps.Clone(w.workloads), want
}

// Apply brings the kernel to the desired state: links to interfaces no longer wanted are
// closed first, then missing ones are made and the address map is brought in line. Independent
// failures are joined; what failed is tried again at the next Apply.
//
// Nothing new is attached unless conntrack is known to be liberal about TCP windows. What is
// attached stays when it stops being (or cannot be read): the flows the fast path carried have
// windows conntrack no longer knows, and sent back to the kernel every one of their packets would
// be INVALID, not only the last.
func (w *Writer) Apply(ctx context.Context) error {
	workloads, want := w.snapshot()
	var errs []error
	liberal, err := w.k.Liberal()
	if err == nil && !liberal {
		err = errors.New("net.netfilter.nf_conntrack_tcp_be_liberal is not 1")
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("no new fast path links until conntrack is liberal: %w", err))
		maps.DeleteFunc(want, func(name string, _ Role) bool { _, had := w.attached[name]; return !had })
	}
	for name, at := range w.attached {
		if want[name] != at.role {
			errs = append(errs, w.detach(name))
		}
	}
	var pending []string
	type job struct {
		name string
		role Role
		idx  int
	}
	var jobs []job
	for _, name := range slices.Sorted(maps.Keys(want)) {
		l, cached := w.index[name]
		if !cached {
			got, err := w.k.LinkByName(name)
			switch {
			case errors.Is(err, ErrNoLink):
				pending = append(pending, name)
				if _, had := w.attached[name]; had {
					errs = append(errs, w.detach(name))
				}
				continue
			case err != nil:
				errs = append(errs, err)
				continue
			}
			l = got
			w.index[name] = l
		}
		if !l.Ethernet {
			if !w.skipped[name] {
				w.skipped[name] = true
				w.log.Info("fast path not attached: not an Ethernet interface", "interface", name)
			}
			continue
		}
		if at, had := w.attached[name]; had {
			// A cached index means nothing said the interface changed: only one looked up
			// again (DeviceChanged, Resync) is worth asking the kernel whether the link
			// still holds it, which costs a syscall per interface.
			if at.ifindex == l.Index && (cached || at.a.Live()) {
				continue
			}
			// Re-created under the same name: the old link is defunct.
			errs = append(errs, w.detach(name))
			if !liberal {
				continue // a new link, and none is made until conntrack is liberal
			}
		}
		jobs = append(jobs, job{name, want[name], l.Index})
	}
	results := make([]error, len(jobs))
	made := make([]Attachment, len(jobs))
	sem := make(chan struct{}, attachWorkers)
	var wg sync.WaitGroup
	for i, j := range jobs {
		if ctx.Err() != nil {
			results[i] = ctx.Err()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			made[i], results[i] = w.k.Attach(j.idx, j.role)
		})
	}
	wg.Wait()
	for i, j := range jobs {
		if results[i] != nil {
			errs = append(errs, fmt.Errorf("attach fast path to %s: %w", j.name, results[i]))
			delete(w.index, j.name)
			continue
		}
		w.attached[j.name] = attachment{role: j.role, ifindex: j.idx, a: made[i]}
		w.index[j.name] = Link{Index: j.idx, Ethernet: true} // a detach before dropped it
		w.log.Debug("fast path attached", "interface", j.name, "ifindex", j.idx, "role", j.role.String())
	}
	w.mu.Lock()
	w.pending = pending
	w.mu.Unlock()
	errs = append(errs, w.applyEntries(workloads))
	return errors.Join(errs...)
}

func (w *Writer) detach(name string) error {
	at := w.attached[name]
	delete(w.attached, name)
	delete(w.index, name)
	if err := at.a.Close(); err != nil {
		return fmt.Errorf("detach fast path from %s: %w", name, err)
	}
	w.log.Debug("fast path detached", "interface", name)
	return nil
}

// applyEntries writes the address map: an address whose interface is not attached (missing,
// or failed) has no entry, so no packet is sent to or accepted from an interface the fast path
// does not watch.
func (w *Writer) applyEntries(workloads map[netip.Addr]string) error {
	desired := map[netip.Addr]int{}
	for addr, dev := range workloads {
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
	// Interfaces gone for good need not be remembered.
	for name := range w.index {
		if _, ok := w.attached[name]; !ok {
			delete(w.index, name)
		}
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

package routes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// ProtocolTerrace marks routes to local workloads and blackholes for own blocks.
	ProtocolTerrace netlink.RouteProtocol = 80
	// ProtocolTerraceBGP marks routes learned over BGP.
	ProtocolTerraceBGP netlink.RouteProtocol = 81
	// TableMain is the kernel's main routing table.
	TableMain = unix.RT_TABLE_MAIN
)

// Netlink is the slice of *netlink.Handle the writer uses; tests substitute a recording fake.
type Netlink interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	LinkByName(name string) (netlink.Link, error)
}

// Config selects the table, protocol and metric this writer owns.
type Config struct {
	Table    int                   // default main
	Protocol netlink.RouteProtocol // required: 80 or 81 per CONVENTIONS.md
	// Metric is the priority (RTA_PRIORITY) of the routes written. Zero leaves it to the kernel
	// (0 for IPv4, 1024 for IPv6) and takes our protocol's routes at any metric as ours. Another
	// value keys our routes at that metric only, so they never collide with a route another owner
	// put at the kernel's default; our protocol's routes found at another metric (an earlier
	// version's) are leftovers, deleted once the writer holds the prefix at its metric, the
	// others once in sync.
	Metric int
	Logger *slog.Logger
}

// entry is one desired route and what the writer knows the kernel holds for it.
type entry struct {
	t         Target
	installed bool // the kernel holds our route for the prefix as t, through link
	link      int  // t.Dev's index when it was installed
}

// kroute is a route reduced to what the writer compares.
type kroute struct {
	blackhole bool
	linkIndex int   // device routes, or the outgoing interface a gateway route asked for
	gws       []kgw // sorted by address, then interface
}

// kgw is one next hop of a kernel route: a gateway, the interface the route names for it (0
// when it named none) and whether it is onlink.
type kgw struct {
	addr      netip.Addr
	linkIndex int
	onlink    bool
}

func (a kgw) compare(b kgw) int {
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	return a.linkIndex - b.linkIndex
}

// Writer keeps one owner's routes. It is not safe for concurrent use.
type Writer struct {
	nl  Netlink
	cfg Config
	log *slog.Logger

	desired map[netip.Prefix]entry
	// installedN counts the entries marked installed, kept by put and drop (the only writers of
	// desired), so the status needs no walk over 100k entries per pass.
	installedN int
	dirty      map[netip.Prefix]bool
	// actual holds our protocol's routes in our table that no desired entry accounts for as
	// installed: as read (until compared with what is desired), or no longer desired; nil =
	// unknown. A route installed as desired lives in its entry only: at 100k routes a second map
	// of them was a tenth of the live heap and its inserts a few percent of the CPU.
	actual    map[netip.Prefix]kroute
	pending   map[netip.Prefix]bool // waiting for their device to appear
	conflicts map[netip.Prefix]bool // the key is held by a route of another protocol
	// rechecked holds the prefixes whose EEXIST was followed by a fresh read of the kernel;
	// reread asks for one at the end of this Apply.
	rechecked map[netip.Prefix]bool
	reread    bool
	// strays are our protocol's routes in our table at another metric than Config.Metric, as
	// last read: never desired; deleted once we hold the prefix at our metric, or once in sync.
	strays []stray
	inSync bool
	// adopted holds the routes of our protocol found at the first read (a previous run's) and
	// not desired since: only these wait for SetInSync before they may go. A route this writer
	// was asked for in this run and then no longer is goes at once.
	adopted  map[netip.Prefix]bool
	readOnce bool
	scratch  [batchSize]netlink.Route // the routes of the batch being built
}

// New returns a writer for cfg.Protocol in cfg.Table.
func New(nl Netlink, cfg Config) (*Writer, error) {
	if cfg.Protocol == 0 {
		return nil, errors.New("create route writer: protocol is required")
	}
	if cfg.Table == 0 {
		cfg.Table = TableMain
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		nl: nl, cfg: cfg,
		log:       cfg.Logger.With("table", cfg.Table, "protocol", int(cfg.Protocol)),
		desired:   map[netip.Prefix]entry{},
		dirty:     map[netip.Prefix]bool{},
		pending:   map[netip.Prefix]bool{},
		conflicts: map[netip.Prefix]bool{},
		rechecked: map[netip.Prefix]bool{},
	}, nil
}

// Set makes p go to t. The writer may keep t.Gateways as given (when already sorted and
// distinct), and Desired returns it: callers must not modify the slice afterwards.
func (w *Writer) Set(p netip.Prefix, t Target) error {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return fmt.Errorf("set route %s: invalid prefix (IPv4-mapped and zoned addresses are not routes)", p)
	}
	p = p.Masked()
	if err := t.validate(p); err != nil {
		return err
	}
	// Callers hand over sorted, distinct gateways (one, mostly) and may share the slice between
	// prefixes; only another order or duplicates cost a copy, which is never modified later.
	if !strictlySorted(t.Gateways) {
		t.Gateways = slices.Clone(t.Gateways)
		slices.SortFunc(t.Gateways, Gateway.Compare)
		t.Gateways = slices.Compact(t.Gateways)
	}
	for i := 1; i < len(t.Gateways); i++ {
		// The same address twice is two links to one router: each must name its own link, or
		// the kernel's order of the two (by interface) could differ from ours forever.
		if a, b := t.Gateways[i-1], t.Gateways[i]; a.Addr == b.Addr && (a.LinkIndex == 0 || a.LinkIndex == b.LinkIndex) {
			return fmt.Errorf("set route %s: gateway %s twice without an interface of its own for each", p, a.Addr)
		}
	}
	e := entry{t: t}
	if old, ok := w.desired[p]; ok && old.installed {
		if sameTarget(old.t, t) {
			e.installed, e.link = true, old.link
		} else {
			// The kernel keeps the old route until the next Apply replaces it.
			w.noteActual(p, krouteOf(old))
		}
	}
	w.put(p, e)
	w.dirty[p] = true
	if w.adopted != nil {
		delete(w.adopted, p) // asked for in this run: no longer a previous run's leftover
	}
	return nil
}

func strictlySorted(gws []Gateway) bool {
	for i := 1; i < len(gws); i++ {
		if gws[i-1].Compare(gws[i]) >= 0 {
			return false
		}
	}
	return true
}

// Desired returns what p was last Set to, unless it was deleted since.
func (w *Writer) Desired(p netip.Prefix) (Target, bool) {
	e, ok := w.desired[p.Masked()]
	return e.t, ok
}

// Len is the number of desired routes.
func (w *Writer) Len() int { return len(w.desired) }

// Prefixes lists the desired prefixes, in no order.
func (w *Writer) Prefixes() []netip.Prefix {
	return slices.AppendSeq(make([]netip.Prefix, 0, len(w.desired)), maps.Keys(w.desired))
}

// Delete drops p from the desired routes; the kernel route goes with the next Apply (a route
// adopted from a previous run and never asked for in this one only once in sync).
func (w *Writer) Delete(p netip.Prefix) {
	p = p.Masked()
	if e, ok := w.desired[p]; ok && e.installed {
		w.noteActual(p, krouteOf(e))
	}
	w.drop(p)
	w.dirty[p] = true
}

// DeviceChanged re-checks every route through dev on the next Apply: when an interface is deleted
// the kernel drops its routes, and a re-created one has a new index.
func (w *Writer) DeviceChanged(dev string) {
	for p, e := range w.desired {
		if e.t.Dev != dev {
			continue
		}
		w.dirty[p] = true
		_, read := w.actual[p]
		if e.installed || read {
			// Our route may be gone with the device or point at a stale index: an index
			// that never matches forces a RouteReplace, which recreates it either way.
			w.noteActual(p, kroute{linkIndex: -1})
			e.installed = false
			w.put(p, e)
		}
	}
}

// Unsync takes in-sync back: every route of ours in the kernel now is held as one adopted at start
// (kept, even when no longer asked for, until SetInSync or until it is asked for again). For an
// owner that starts learning its routes afresh without restarting, such as a replaced BGP speaker.
func (w *Writer) Unsync() {
	w.inSync = false
	w.adopted = map[netip.Prefix]bool{}
	for p, e := range w.desired {
		if e.installed {
			w.adopted[p] = true
		}
	}
	for p := range w.actual {
		w.adopted[p] = true
	}
}

// SetInSync allows routes of our protocol that nobody asked for to be deleted.
func (w *Writer) SetInSync() { w.inSync, w.adopted = true, nil }

// Pending lists desired routes whose device does not exist yet; they are retried on every Apply.
func (w *Writer) Pending() []netip.Prefix { return sortedPrefixes(w.pending) }

// Conflicts lists desired routes not programmed because a route of another protocol holds the same
// key; Terrace never overrides another owner's route.
func (w *Writer) Conflicts() []netip.Prefix { return sortedPrefixes(w.conflicts) }

// Installed counts the desired routes the kernel holds as desired, as far as the writer knows:
// not those refused, held back by another protocol's route, or waiting for their device.
func (w *Writer) Installed() int { return w.installedN }

// put stores p's entry, keeping installedN.
func (w *Writer) put(p netip.Prefix, e entry) {
	if old, ok := w.desired[p]; ok && old.installed {
		w.installedN--
	}
	if e.installed {
		w.installedN++
	}
	w.desired[p] = e
}

// drop removes p's entry, keeping installedN.
func (w *Writer) drop(p netip.Prefix) {
	if old, ok := w.desired[p]; ok && old.installed {
		w.installedN--
	}
	delete(w.desired, p)
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	out := slices.AppendSeq(make([]netip.Prefix, 0, len(m)), maps.Keys(m))
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Resync lists the kernel's routes of our protocol and repairs any drift.
func (w *Writer) Resync(ctx context.Context) error {
	w.actual = nil
	return w.Apply(ctx)
}

func (w *Writer) read() error {
	filter := &netlink.Route{Table: w.cfg.Table, Protocol: w.cfg.Protocol}
	mask := netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL
	actual := map[netip.Prefix]kroute{}
	var strays []stray
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := w.nl.RouteListFiltered(fam, filter, mask)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			if r.Protocol != w.cfg.Protocol || r.Table != w.cfg.Table {
				continue // a fake or an old kernel may ignore the filter; never act on others' routes
			}
			p, ok := prefixOf(r.Dst, fam)
			if !ok {
				continue
			}
			if w.cfg.Metric != 0 && r.Priority != w.cfg.Metric {
				strays = append(strays, stray{p, r.Priority})
				continue
			}
			actual[p] = fromNetlink(r)
		}
	}
	w.actual, w.strays = actual, strays
	// What the kernel holds is what was just read: every installed entry is compared again.
	for p, e := range w.desired {
		if e.installed {
			e.installed = false
			w.put(p, e)
		}
	}
	if !w.readOnce {
		w.readOnce = true
		if !w.inSync {
			for p := range actual {
				if _, want := w.desired[p]; !want {
					if w.adopted == nil {
						w.adopted = map[netip.Prefix]bool{}
					}
					w.adopted[p] = true
				}
			}
		}
	}
	for p := range w.desired {
		w.dirty[p] = true
	}
	for p := range actual {
		w.dirty[p] = true
	}
	return nil
}

func prefixOf(dst *net.IPNet, fam int) (netip.Prefix, bool) {
	if dst == nil {
		if fam == netlink.FAMILY_V4 {
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		}
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
	}
	a, ok := netip.AddrFromSlice(dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := dst.Mask.Size()
	if fam == netlink.FAMILY_V4 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func gwOf(ip net.IP, linkIndex, flags int) kgw {
	a, _ := netip.AddrFromSlice(ip)
	return kgw{a.Unmap(), linkIndex, flags&unix.RTNH_F_ONLINK != 0}
}

// noteActual records a route of ours the kernel holds for p. With actual unknown (nil: a read
// failed or is due) there is nothing to note: the next Apply reads the table first, and the read
// finds the route.
func (w *Writer) noteActual(p netip.Prefix, k kroute) {
	if w.actual != nil {
		w.actual[p] = k
	}
}

// krouteOf is the kernel route an installed entry stands for.
func krouteOf(e entry) kroute {
	if e.t.Blackhole {
		return kroute{blackhole: true}
	}
	if len(e.t.Gateways) == 0 {
		return kroute{linkIndex: e.link}
	}
	k := kroute{gws: make([]kgw, len(e.t.Gateways))}
	for i, g := range e.t.Gateways {
		k.gws[i] = kgw{g.Addr, g.LinkIndex, g.OnLink}
		if e.t.Dev != "" {
			k.gws[i].linkIndex = e.link
		}
	}
	return k
}

func sameTarget(a, b Target) bool {
	return a.Dev == b.Dev && a.Blackhole == b.Blackhole && slices.Equal(a.Gateways, b.Gateways)
}

func fromNetlink(r netlink.Route) kroute {
	if r.Type == unix.RTN_BLACKHOLE {
		return kroute{blackhole: true}
	}
	var k kroute
	switch {
	case len(r.MultiPath) > 0:
		k.gws = make([]kgw, 0, len(r.MultiPath))
		for _, nh := range r.MultiPath {
			k.gws = append(k.gws, gwOf(nh.Gw, nh.LinkIndex, nh.Flags))
		}
		slices.SortFunc(k.gws, kgw.compare)
	case r.Gw != nil:
		k.gws = []kgw{gwOf(r.Gw, r.LinkIndex, r.Flags)}
	default:
		k.linkIndex = r.LinkIndex
	}
	return k
}

// matches compares a desired target (resolved to linkIndex) with a kernel route. The kernel fills
// in the outgoing interface of gateway routes, so it only counts when the target named one.
func matches(t Target, linkIndex int, k kroute) bool {
	switch {
	case t.Blackhole:
		return k.blackhole
	case k.blackhole:
		return false
	case len(t.Gateways) == 0:
		return len(k.gws) == 0 && k.linkIndex == linkIndex
	}
	if len(k.gws) != len(t.Gateways) {
		return false
	}
	// Both are sorted by address, then interface (t.Gateways distinct, by Set; a gateway repeated
	// on several links names each), so they match pairwise.
	for i, g := range t.Gateways {
		want := g.LinkIndex
		if t.Dev != "" {
			want = linkIndex
		}
		if k.gws[i].addr != g.Addr || k.gws[i].onlink != g.OnLink || (want != 0 && k.gws[i].linkIndex != want) {
			return false
		}
	}
	return true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// toNetlink fills r (reused between batches, so everything in it is overwritten) with the kernel
// route for p.
func (w *Writer) toNetlink(p netip.Prefix, t Target, linkIndex int, r *netlink.Route) *netlink.Route {
	*r = netlink.Route{Dst: ipNet(p), Table: w.cfg.Table, Protocol: w.cfg.Protocol, Family: family(p), Type: unix.RTN_UNICAST,
		Priority: w.cfg.Metric}
	switch {
	case t.Blackhole:
		r.Type = unix.RTN_BLACKHOLE
	case len(t.Gateways) == 0:
		r.LinkIndex = linkIndex
		r.Scope = netlink.SCOPE_LINK
	case len(t.Gateways) == 1:
		g := t.Gateways[0]
		r.Gw = net.IP(g.Addr.AsSlice())
		r.LinkIndex = cmp.Or(g.LinkIndex, linkIndex)
		if g.OnLink {
			r.Flags = unix.RTNH_F_ONLINK
		}
	default:
		for _, g := range t.Gateways {
			nh := &netlink.NexthopInfo{Gw: net.IP(g.Addr.AsSlice()), LinkIndex: cmp.Or(g.LinkIndex, linkIndex)}
			if g.OnLink {
				nh.Flags = unix.RTNH_F_ONLINK
			}
			r.MultiPath = append(r.MultiPath, nh)
		}
	}
	return r
}

// Apply programs the difference between desired and actual routes, many changes per system call
// when the Netlink is also a Batcher. Routes fail independently: the error joins every failure
// and failed prefixes are retried on the next Apply.
func (w *Writer) Apply(ctx context.Context) error {
	err := w.apply(ctx)
	if w.reread {
		// An add met a key held by a route we did not know of. Usually another protocol's, but
		// after a batch's acknowledgements were lost (ENOBUFS) it can be our own add that did
		// succeed: read the table once more (our protocol and table only) and go again, so such a
		// route is recognised and kept in line rather than reported as a conflict.
		w.reread = false
		w.actual = nil
		err = w.apply(ctx)
	}
	return err
}

func (w *Writer) apply(ctx context.Context) error {
	if w.actual == nil {
		if err := w.read(); err != nil {
			return fmt.Errorf("apply routes: %w", err)
		}
	}
	batcher, ok := w.nl.(Batcher)
	if !ok {
		batcher = oneByOne{w.nl}
	}
	links := map[string]int{}
	var errs []error
	var done int
	var queue []queued
	var kept []stray // leftovers for the next Apply: waiting, or their delete failed
	flush := func() {
		if len(queue) == 0 {
			return
		}
		ops := make([]RouteOp, len(queue))
		for i, q := range queue {
			ops[i] = q.op
		}
		for i, err := range batcher.RouteBatch(ops) {
			if queue[i].stray {
				s := stray{queue[i].p, queue[i].op.Route.Priority}
				if keep, err := w.settleStray(s, err); err != nil {
					errs = append(errs, err)
					if keep {
						kept = append(kept, s)
					}
				}
				continue
			}
			settled, err := w.settle(queue[i].p, queue[i].op, queue[i].link, err)
			if err != nil {
				errs = append(errs, err)
			}
			if settled {
				delete(w.dirty, queue[i].p)
				done++
			}
		}
		queue = queue[:0]
	}
	for _, p := range sortedPrefixes(w.dirty) {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		// The batch's routes live in one reused array: at 100k routes a fresh netlink.Route
		// each was half of what Apply allocated.
		settled, op, link, err := w.plan(p, links, &w.scratch[len(queue)])
		switch {
		case err != nil:
			errs = append(errs, err)
		case op != nil:
			queue = append(queue, queued{p: p, op: *op, link: link})
			if len(queue) >= batchSize {
				flush()
			}
		case settled:
			delete(w.dirty, p)
			done++
		}
	}
	// Our routes are in before any leftover goes: a leftover of a prefix we hold now goes at
	// once (at a lower metric it would go on winning IPv4 lookups with an earlier run's next
	// hops), the others once in sync, as routes adopted from an earlier run do.
	flush()
	for _, s := range w.strays {
		if ctx.Err() != nil || (!w.inSync && !w.desired[s.p].installed) {
			kept = append(kept, s)
			continue
		}
		r := &w.scratch[len(queue)]
		*r = netlink.Route{Dst: ipNet(s.p), Table: w.cfg.Table, Protocol: w.cfg.Protocol, Family: family(s.p),
			Scope: netlink.SCOPE_NOWHERE, Priority: s.metric}
		queue = append(queue, queued{p: s.p, op: RouteOp{Kind: OpDel, Route: r}, stray: true})
		if len(queue) >= batchSize {
			flush()
		}
	}
	flush()
	w.strays = kept
	if done > 0 {
		w.log.Debug("routes applied", "changed", done, "dirty", len(w.dirty))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply routes: %w", err)
	}
	return nil
}

// stray is a route of ours at a metric the writer does not use.
type stray struct {
	p      netip.Prefix
	metric int
}

type queued struct {
	p     netip.Prefix
	op    RouteOp
	link  int  // the device index the op's route goes through
	stray bool // the op deletes a leftover at another metric
}

// oneByOne is the Batcher of a Netlink that has no batching: one call per route.
type oneByOne struct{ nl Netlink }

func (o oneByOne) RouteBatch(ops []RouteOp) []error {
	errs := make([]error, len(ops))
	for i, op := range ops {
		switch op.Kind {
		case OpAdd:
			errs[i] = o.nl.RouteAdd(op.Route)
		case OpReplace:
			errs[i] = o.nl.RouteReplace(op.Route)
		case OpDel:
			errs[i] = o.nl.RouteDel(op.Route)
		}
	}
	return errs
}

// plan decides what one prefix needs: nothing (settled reports whether it is in line; false keeps
// it dirty) or the kernel change op.
func (w *Writer) plan(p netip.Prefix, links map[string]int, r *netlink.Route) (settled bool, op *RouteOp, link int, err error) {
	e, want := w.desired[p]
	delete(w.conflicts, p)
	if !want {
		delete(w.pending, p)
		delete(w.rechecked, p)
		have, exists := w.actual[p]
		if !exists {
			return true, nil, 0, nil
		}
		if !w.inSync && w.adopted[p] {
			return false, nil, 0, nil // held until in sync so a restart never removes a live route
		}
		// SCOPE_NOWHERE is the kernel's "any scope" for deletions; the zero value would mean
		// universe, never match a scope-link device route, and come back as ESRCH ("already gone").
		// The metric too: without it the kernel deletes the first of our protocol's routes for p at
		// any metric, which may be a leftover at a lower one rather than ours.
		*r = netlink.Route{Dst: ipNet(p), Table: w.cfg.Table, Protocol: w.cfg.Protocol, Family: family(p), Scope: netlink.SCOPE_NOWHERE,
			Priority: w.cfg.Metric}
		if have.blackhole {
			r.Type = unix.RTN_BLACKHOLE
		}
		return false, &RouteOp{Kind: OpDel, Route: r}, 0, nil
	}
	t := e.t
	linkIndex := 0
	if t.Dev != "" {
		idx, ok := links[t.Dev]
		if !ok {
			l, err := w.nl.LinkByName(t.Dev)
			if err != nil {
				var nf netlink.LinkNotFoundError
				if errors.As(err, &nf) || errors.Is(err, syscall.ENODEV) {
					w.pending[p] = true
					return false, nil, 0, nil
				}
				return false, nil, 0, fmt.Errorf("look up device %s for route %s: %w", t.Dev, p, err)
			}
			idx = l.Attrs().Index
			links[t.Dev] = idx
		}
		linkIndex = idx
	}
	delete(w.pending, p)
	if e.installed && e.link == linkIndex {
		return true, nil, 0, nil
	}
	have, exists := w.actual[p]
	if exists && matches(t, linkIndex, have) {
		// Read from the kernel as desired: from now on the entry accounts for it.
		delete(w.actual, p)
		w.put(p, entry{t: t, installed: true, link: linkIndex})
		return true, nil, 0, nil
	}
	kind := OpAdd
	if exists || e.installed {
		kind = OpReplace
	}
	return false, &RouteOp{Kind: kind, Route: w.toNetlink(p, t, linkIndex, r)}, linkIndex, nil
}

// downDevice reports the kernel refusing a route because its device is down (or went away
// meanwhile): the route waits, as for a device not there yet, and is retried with the pending
// ones, instead of failing the writer (and so its readiness and in-sync) while a pod's veth is
// briefly down.
func downDevice(err error) bool {
	return errors.Is(err, syscall.ENETDOWN) || errors.Is(err, syscall.ENODEV)
}

// settleStray records the outcome of a leftover's delete; keep says whether to try it again at
// the next Apply.
func (w *Writer) settleStray(s stray, err error) (keep bool, _ error) {
	gone := err == nil || errors.Is(err, syscall.ESRCH)
	unanswered := errors.Is(err, ErrUnanswered)
	// The kernel reads an IPv4 delete at metric 0 as "any metric, lowest first": when the
	// leftover was gone already (removed meanwhile, or by an earlier request whose answer was
	// lost), it took our route instead. Reading the table again puts ours back within this
	// Apply. An unanswered delete is read back too, not resent.
	if unanswered || (s.metric == 0 && gone) {
		w.reread = true
	}
	if gone {
		return false, nil
	}
	return !unanswered, fmt.Errorf("delete route %s at metric %d: %w", s.p, s.metric, err)
}

// settle records the outcome of a planned change and reports whether the prefix is in line.
func (w *Writer) settle(p netip.Prefix, op RouteOp, link int, err error) (bool, error) {
	if errors.Is(err, ErrUnanswered) {
		// The kernel may hold the change or not: read the table again at the end of this
		// Apply, so a route that did go in is known (and deleted if it is withdrawn meanwhile).
		w.reread = true
	}
	switch op.Kind {
	case OpDel:
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return false, fmt.Errorf("delete route %s: %w", p, err)
		}
		delete(w.actual, p)
		return true, nil
	case OpReplace:
		if downDevice(err) {
			w.pending[p] = true
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("replace route %s: %w", p, err)
		}
	default:
		if downDevice(err) {
			w.pending[p] = true
			return false, nil
		}
		if errors.Is(err, syscall.EEXIST) {
			// Another protocol's route holds this key: report it, never override it (once the
			// table has been read again since, see Apply).
			w.conflicts[p] = true
			if !w.rechecked[p] {
				w.rechecked[p] = true
				w.reread = true
			}
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("add route %s: %w", p, err)
		}
	}
	delete(w.rechecked, p)
	if op.Kind == OpReplace {
		delete(w.actual, p)
	}
	// plan made the op from the desired entry, which nothing changed since.
	e := w.desired[p]
	e.installed, e.link = true, link
	w.put(p, e)
	return true, nil
}

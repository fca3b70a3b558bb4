package agent

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
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// Netlink is what the route programmer needs from the kernel: the routes writer's calls plus a
// FIB lookup to resolve next hops. *netlink.Handle satisfies it.
type Netlink interface {
	routes.Netlink
	RouteGetWithOptions(dst net.IP, options *netlink.RouteGetOptions) ([]netlink.Route, error)
}

// RouteWriter is the slice of *routes.Writer the programmer drives; tests substitute a recorder.
type RouteWriter interface {
	Set(p netip.Prefix, t routes.Target) error
	Delete(p netip.Prefix)
	// Desired is what p was last Set to, if it was; Len counts such prefixes. The programmer
	// keeps no copy of its own: at 100k routes one more map was a tenth of its CPU.
	Desired(p netip.Prefix) (routes.Target, bool)
	Len() int
	// Prefixes lists the desired prefixes, in no order.
	Prefixes() []netip.Prefix
	// Conflicts are the prefixes another protocol's route keeps out of the kernel; Pending
	// those waiting for their interface (down, or gone).
	Conflicts() []netip.Prefix
	Pending() []netip.Prefix
	// Installed counts the desired routes the kernel holds.
	Installed() int
	Apply(ctx context.Context) error
	Resync(ctx context.Context) error
	SetInSync()
	Unsync()
}

// programmer turns the speaker's learned-route deliveries into kernel routes. The speaker calls
// UpdateLearnedRoutes from its own goroutine; run owns the writer, which is not safe for
// concurrent use.
type programmer struct {
	log *slog.Logger
	w   RouteWriter
	nl  Netlink

	mu          sync.Mutex
	pending     map[netip.Prefix][]netip.Addr // delivered, not yet programmed
	pendingFull bool                          // pending is a whole table
	kickC       chan struct{}
	stats       RouteStats
	applied     bool          // an Apply has happened since start
	retry       bool          // the last pass left routes out (an error or a conflict): apply again at the poll
	retryEvery  time.Duration // the wait before that; doubles while passes keep failing alike
	retryAt     time.Time
	retryWhy    string // what the last pass left out, in short: another outcome starts over at 1 s
	relearn     bool   // the speaker was replaced: hold deletions until in sync again
	// underlay reports that a host interface (not a workload's) changed state: a link that went
	// down took its routes with it, and the kernel says nothing of that.
	underlay <-chan string
	// underlayRoutes signals that a route not of ours changed in the main table: next hops may
	// resolve through other gateways now.
	underlayRoutes <-chan struct{}

	// learnedNow returns every learned route as the speaker holds it now, for the passes that
	// resolve all of them again (a resync, an underlay change). The programmer keeps no copy:
	// every learned prefix is either the writer's (resolved) or in unresolved.
	learnedNow func() map[netip.Prefix][]netip.Addr

	// Owned by run.
	res        *resolver // next-hop resolutions, reused for resolverTTL
	resAt      time.Time
	unresolved map[netip.Prefix][]netip.Addr // learned, next hops not reachable now
	refused    map[netip.Prefix]error        // learned, the route refused by the writer
	lookupKept int                           // routes kept as they were in this pass: a lookup failed
	inSync     bool
}

// RouteStats is the programmer's part of the bgp status.
type RouteStats struct {
	Learned    int `json:"learned"`
	Installed  int `json:"installed"`
	Unresolved int `json:"unresolved"`
	// HeldBack counts routes not installed because another protocol's route holds their key;
	// LinkDown those whose interface is down (the kernel refuses a gateway on a down link), put
	// in when it comes up.
	HeldBack int `json:"heldBack,omitempty"`
	LinkDown int `json:"linkDown,omitempty"`
	// Refused counts learned routes the route writer refused as routes (nothing the resolver
	// gives should be); the first one's error stays in LastError while any remain.
	Refused   int       `json:"refused,omitempty"`
	InSync    bool      `json:"inSync"`
	LastApply time.Time `json:"lastApply,omitzero"`
	LastError string    `json:"lastError,omitempty"`
}

func newProgrammer(w RouteWriter, nl Netlink, learnedNow func() map[netip.Prefix][]netip.Addr, log *slog.Logger) *programmer {
	return &programmer{log: log, w: w, nl: nl, kickC: make(chan struct{}, 1), learnedNow: learnedNow,
		unresolved: map[netip.Prefix][]netip.Addr{}, refused: map[netip.Prefix]error{}}
}

// UpdateLearnedRoutes implements speaker.RouteSink: it only merges the delivery into what is
// pending, so a slow kernel never backs the speaker up.
func (p *programmer) UpdateLearnedRoutes(m map[netip.Prefix][]netip.Addr, full bool) {
	p.mu.Lock()
	switch {
	case full:
		p.pending, p.pendingFull = m, true
	case p.pending == nil:
		p.pending, p.pendingFull = m, false
	default:
		// A withdrawal stays in a pending whole table as a prefix without next hops, which the
		// programming of a whole table counts as absent.
		for pfx, nhs := range m {
			p.pending[pfx] = nhs
		}
	}
	p.mu.Unlock()
	p.kick()
}

// speakerReplaced is called before the speaker is stopped for a new one; the next pass (before any
// delivery of the new speaker) holds the routes in the kernel until in sync again.
func (p *programmer) speakerReplaced() {
	p.mu.Lock()
	p.relearn = true
	p.mu.Unlock()
	p.kick()
}

func (p *programmer) kick() {
	select {
	case p.kickC <- struct{}{}:
	default:
	}
}

func (p *programmer) Stats() RouteStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// run applies deliveries until ctx ends. mayDelete reports whether stale routes of ours may go:
// it is polled every tick until it first says yes.
func (p *programmer) run(ctx context.Context, resync time.Duration, mayDelete func() bool) {
	rt := time.NewTicker(resync)
	defer rt.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	underlayC, routesC := p.underlay, p.underlayRoutes
	underlayChanged, routesChanged := false, false
	var underlayAt, unresolvedAt, routesAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-underlayC:
			if !ok {
				underlayC = nil
				continue
			}
			underlayChanged = true // handled at the next poll, so a flapping link costs one pass a second
		case _, ok := <-routesC:
			if !ok {
				routesC = nil
				continue
			}
			routesChanged = true
		case <-p.kickC:
			p.sync(ctx, false)
		case <-rt.C:
			if err := p.w.Resync(ctx); err != nil {
				p.log.Warn("bgp route resync failed", "err", err)
			}
			// The underlay may have changed: resolve every next hop again.
			p.sync(ctx, true)
		case <-poll.C:
			if underlayChanged {
				// The kernel flushed the routes through a link that went down, and next hops may
				// resolve elsewhere now: read our routes back and program every one again.
				// The pass covers route changes seen so far too (a link flap brings both).
				underlayChanged, underlayAt, unresolvedAt = false, time.Now(), time.Now()
				routesChanged, routesAt = false, time.Now()
				if err := p.w.Resync(ctx); err != nil {
					p.log.Warn("bgp route resync after an underlay change failed", "err", err)
				}
				p.sync(ctx, true)
				continue
			}
			if routesChanged && time.Since(routesAt) >= underlayRoutesEvery {
				// Resolve every learned next hop again, after reading our routes back: an address
				// removed from an underlay interface takes our routes through it with it, and
				// the kernel says nothing of those. A daemon churning its routes costs one pass
				// per underlayRoutesEvery.
				routesChanged, routesAt, unresolvedAt = false, time.Now(), time.Now()
				p.log.Debug("underlay routes changed: resolving learned next hops again")
				if err := p.w.Resync(ctx); err != nil {
					p.log.Warn("bgp route resync after an underlay route change failed", "err", err)
				}
				p.sync(ctx, true)
				continue
			}
			// Next hops unreachable a moment ago (a link just back, its routes not yet) are
			// tried again: every second for a while after an underlay change, else every 10 s.
			every := unresolvedRetry
			if time.Since(underlayAt) < 30*time.Second {
				every = time.Second
			}
			if len(p.unresolved) > 0 && time.Since(unresolvedAt) >= every {
				unresolvedAt = time.Now()
				p.resolveAgain(ctx)
			}
			if p.retry && !time.Now().Before(p.retryAt) {
				// A route refused or held back by another protocol's goes in at the next try
				// (record's back-off), not at the resync.
				p.sync(ctx, false)
			}
			if !p.inSync && p.appliedOnce() && mayDelete() {
				p.inSync = true
				p.w.SetInSync()
				p.log.Info("bgp routes in sync: stale routes of protocol 81 may now be removed")
				p.sync(ctx, false)
			}
		}
	}
}

func (p *programmer) appliedOnce() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// sync programs what was delivered since the last sync; the difference goes to the writer, which
// applies it in one batch. Only changed prefixes are resolved and set again, so one changed route
// costs the same with 100k learned; unless all is set (after a resync: the underlay may have
// moved), when every learned prefix is resolved again.
// resolverTTL is how long next-hop resolutions are reused between programming passes. A next hop
// behind the underlay's routing (a mesh peer in another rack) is resolved against a listing of
// the whole main table, our own routes included: with 100k learned routes that listing, done on
// every pass, cost more than the pass. An underlay change reaches routes changed later within
// this time, and every route at the next resync.
const resolverTTL = 5 * time.Second

func (p *programmer) sync(ctx context.Context, all bool) {
	p.mu.Lock()
	changes, full := p.pending, p.pendingFull
	p.pending, p.pendingFull = nil, false
	relearn := p.relearn
	p.relearn = false
	p.mu.Unlock()
	if relearn {
		// A new speaker starts with an empty table and learns everything again: what is in the
		// kernel stays, as after a restart of terrace-node, until it is in sync again.
		p.inSync = false
		p.w.Unsync()
		p.log.Info("bgp speaker replaced: routes of protocol 81 are kept until it has learned them again")
	}
	start := time.Now()

	if all || p.res == nil || time.Since(p.resAt) >= resolverTTL {
		p.res, p.resAt = newResolver(p.nl), time.Now()
	}
	r := p.res
	defer r.endPass()
	var errs []error
	if full {
		// What the whole table lacks is gone. Collected first: forget changes the writer.
		var gone []netip.Prefix
		for _, pfx := range p.w.Prefixes() {
			if len(changes[pfx]) == 0 {
				gone = append(gone, pfx)
			}
		}
		for pfx := range p.unresolved {
			if len(changes[pfx]) == 0 {
				gone = append(gone, pfx)
			}
		}
		for pfx := range p.refused {
			if len(changes[pfx]) == 0 {
				gone = append(gone, pfx)
			}
		}
		for _, pfx := range gone {
			p.forget(pfx)
		}
	}
	for pfx, nhs := range changes {
		if len(nhs) == 0 {
			p.forget(pfx)
			continue
		}
		// An unchanged prefix of a whole table costs a cached resolution and a comparison with
		// what the writer has: program sets nothing for it.
		errs = append(errs, p.program(r, pfx, nhs)...)
	}
	if all && p.learnedNow != nil {
		// The speaker may be ahead of the deliveries: what it learned since is programmed now
		// (and again, unchanged, when its delivery comes); what it dropped since goes with
		// that delivery.
		for pfx, nhs := range p.learnedNow() {
			errs = append(errs, p.program(r, pfx, nhs)...)
		}
	}
	if err := p.w.Apply(ctx); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err != nil {
		p.log.Warn("programming bgp routes failed; retried on the next change or resync", "err", brief(err))
	}
	if len(p.unresolved) > 0 {
		p.log.Debug("learned routes without a reachable next hop", "count", len(p.unresolved))
	}
	p.noteLookupKept()
	p.log.Debug("bgp routes programmed", "changes", len(changes), "whole", full, "all", all,
		"learned", p.w.Len()+len(p.unresolved), "installed", p.w.Len(), "took", time.Since(start))
	p.record(err)
}

// record publishes the outcome of an apply: the status, and whether the next poll must apply
// again (an error, or routes another protocol's route holds back).
func (p *programmer) record(err error) {
	conflicts := p.w.Conflicts()
	p.retry = err != nil || len(conflicts) > 0
	if p.retry {
		// A route the kernel keeps refusing is asked again after 1, 2, 4 … 30 s, not every
		// second for ever. Anything new left out (another error, another count) starts over at
		// 1 s, so a standing refusal never slows down a fresh one. Routes only held back by
		// another protocol's route at our metric are asked at least every 5 s: that route's
		// removal is nothing the programmer hears of.
		why := fmt.Sprint(len(conflicts), conflicts[:min(len(conflicts), briefLines)])
		if err != nil {
			why += brief(err)
		}
		if why != p.retryWhy {
			p.retryEvery = 0
		}
		limit := retryMax
		if err == nil {
			limit = conflictRetryMax
		}
		p.retryEvery = min(max(2*p.retryEvery, retryFirst), limit)
		p.retryAt, p.retryWhy = time.Now().Add(p.retryEvery), why
	} else {
		p.retryEvery, p.retryWhy = 0, ""
	}
	p.mu.Lock()
	p.applied = true
	p.stats = RouteStats{Learned: p.w.Len() + len(p.unresolved) + len(p.refused), Installed: p.w.Installed(),
		Unresolved: len(p.unresolved), HeldBack: len(conflicts), LinkDown: len(p.w.Pending()), Refused: len(p.refused),
		InSync: p.inSync, LastApply: time.Now()}
	if err != nil {
		p.stats.LastError = brief(err)
	} else if len(p.refused) > 0 {
		// Refusals stay until the prefix changes: a pass that had nothing to do must not hide them.
		first := slices.MinFunc(slices.Collect(maps.Keys(p.refused)), func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
		})
		p.stats.LastError = fmt.Sprintf("%d learned routes refused, first: %v", len(p.refused), p.refused[first])
	}
	p.mu.Unlock()
}

// briefLines is how many of a pass's errors (one line each, one per failing route) the log and
// the status show; with thousands failing, one line each would make every retry's log line
// megabytes long.
const briefLines = 3

// brief shortens a joined error to its first briefLines lines and a count of the rest.
func brief(err error) string {
	lines := strings.Split(err.Error(), "\n")
	if len(lines) <= briefLines {
		return err.Error()
	}
	return strings.Join(lines[:briefLines], "; ") + fmt.Sprintf("; and %d more", len(lines)-briefLines)
}

// noteLookupKept says, once per pass, how many routes kept their gateways because a next-hop
// lookup failed.
func (p *programmer) noteLookupKept() {
	if p.lookupKept > 0 {
		p.log.Warn("next-hop lookups failed; routes kept as they were until the next pass", "routes", p.lookupKept)
		p.lookupKept = 0
	}
}

// retryFirst and retryMax bound the wait before a pass that left routes out is tried again.
const (
	retryFirst       = time.Second
	retryMax         = 30 * time.Second
	conflictRetryMax = 5 * time.Second
)

// underlayRoutesEvery is the least time between two passes that resolve every learned route
// again because the underlay's routes changed: the first change after a quiet spell is followed
// at the next poll (within a second), a stream of them every 2 s.
const underlayRoutesEvery = 2 * time.Second

// unresolvedRetry is how often learned routes whose next hop was unreachable are resolved again
// when nothing else happens.
const unresolvedRetry = 10 * time.Second

// resolveAgain resolves the learned routes without a reachable next hop afresh and applies those
// that now have one.
func (p *programmer) resolveAgain(ctx context.Context) {
	r := newResolver(p.nl)
	defer r.endPass()
	before := len(p.unresolved)
	var errs []error
	for pfx, nhs := range p.unresolved {
		errs = append(errs, p.program(r, pfx, nhs)...)
	}
	if len(p.unresolved) == before {
		return
	}
	if err := p.w.Apply(ctx); err != nil {
		errs = append(errs, err)
	}
	p.log.Info("learned routes resolved again", "now_resolved", before-len(p.unresolved), "still_unresolved", len(p.unresolved))
	p.record(errors.Join(errs...))
}

// forget drops a prefix no peer offers any more.
func (p *programmer) forget(pfx netip.Prefix) {
	delete(p.unresolved, pfx)
	delete(p.refused, pfx)
	if _, ok := p.w.Desired(pfx); ok {
		p.w.Delete(pfx)
	}
}

// program resolves one learned prefix and hands the writer what changed.
func (p *programmer) program(r *resolver, pfx netip.Prefix, nhs []netip.Addr) []error {
	learned := nhs
	// A next hop of the other family (an IPv6 route sent over an IPv4 session by a speaker that
	// did not give it an IPv6 next hop) can never be its gateway: such paths count as
	// unresolved rather than failing the route write.
	if slices.ContainsFunc(nhs, func(a netip.Addr) bool { return a.Unmap().Is4() != pfx.Addr().Is4() }) {
		nhs = slices.DeleteFunc(slices.Clone(nhs), func(a netip.Addr) bool { return a.Unmap().Is4() != pfx.Addr().Is4() })
		if len(nhs) == 0 {
			p.log.Debug("learned route's next hop is of the other address family; not installed", "prefix", pfx.String())
		}
	}
	gws := r.gateways(nhs)
	if len(r.failed) > 0 && slices.ContainsFunc(nhs, func(a netip.Addr) bool { return r.failed[a.Unmap()] }) {
		// A lookup failed: the route keeps what it has until a pass can look again (the next
		// delivery or resync; unresolved ones at the next retry). Only "no route" withdraws.
		if _, ok := p.w.Desired(pfx); ok {
			p.lookupKept++
			return nil
		}
	}
	if len(gws) == 0 {
		delete(p.refused, pfx)
		p.unresolved[pfx] = learned
		if _, ok := p.w.Desired(pfx); ok {
			p.w.Delete(pfx)
		}
		return nil
	}
	delete(p.unresolved, pfx)
	t := routes.Target{Gateways: gws}
	if old, ok := p.w.Desired(pfx); ok && sameTarget(old, t) {
		return nil
	}
	if err := p.w.Set(pfx, t); err != nil {
		// Refused as a route (nothing the resolver gives should be): the old route must not
		// stay in its place, and the prefix still counts as learned, with the error in the status.
		p.refused[pfx] = err
		if _, ok := p.w.Desired(pfx); ok {
			p.w.Delete(pfx)
		}
		return []error{err}
	}
	delete(p.refused, pfx)
	return nil
}

func sameTarget(a, b routes.Target) bool {
	return a.Dev == b.Dev && a.Blackhole == b.Blackhole && slices.Equal(a.Gateways, b.Gateways)
}

// gateways resolves a prefix's next hops to gateways on connected subnets. Mesh peers announce
// their own address as next hop, which is usually behind the ToR: the kernel refuses such a
// gateway, so the route goes through whatever the underlay uses to reach it (ECMP included).
// Equal next-hop sets share one result slice, which nobody modifies.
func (r *resolver) gateways(nhs []netip.Addr) []routes.Gateway {
	if len(nhs) == 1 {
		return r.resolve(nhs[0])
	}
	var key strings.Builder
	for _, nh := range nhs {
		key.WriteString(nh.String())
		key.WriteByte(',')
	}
	if gws, ok := r.sets[key.String()]; ok {
		return gws
	}
	var gws []routes.Gateway
	for _, nh := range nhs {
		gws = append(gws, r.resolve(nh)...)
	}
	slices.SortFunc(gws, routes.Gateway.Compare)
	gws = collapse(slices.Compact(gws))
	if !slices.ContainsFunc(nhs, func(a netip.Addr) bool { return r.failed[a.Unmap()] }) {
		r.sets[key.String()] = gws // a set missing a failed lookup's share is not worth keeping
	}
	return gws
}

// collapse merges gateways of one address that came from different next hops, one on a connected
// subnet (no interface named) and one lent by an onlink route (interface named): they are one
// router, and the writer refuses an address twice unless each names its own link. The named one
// is kept. gws is sorted, and the caller's own.
func collapse(gws []routes.Gateway) []routes.Gateway {
	out := gws[:0]
	for _, g := range gws {
		if n := len(out); n > 0 && out[n-1].Addr == g.Addr && (out[n-1].LinkIndex == 0 || out[n-1].LinkIndex == g.LinkIndex) {
			out[n-1] = g // the named (or, on one link, the onlink) one sorts last
			continue
		}
		out = append(out, g)
	}
	return out
}

// endPass drops what must not outlive one programming pass: the main table as listed, and failed
// resolutions (a lookup may fail for a moment; a later pass tries again rather than keep a route
// unresolved until the next resync).
func (r *resolver) endPass() {
	r.table = nil
	clear(r.failed)
	for nh, gws := range r.cache {
		if len(gws) == 0 {
			delete(r.cache, nh)
		}
	}
	for k, gws := range r.sets {
		if len(gws) == 0 {
			delete(r.sets, k)
		}
	}
}

func newResolver(nl Netlink) *resolver {
	return &resolver{nl: nl, failed: map[netip.Addr]bool{}, cache: map[netip.Addr][]routes.Gateway{}, sets: map[string][]routes.Gateway{}}
}

// errLookupFailed marks a next-hop lookup that failed (netlink said something other than "no
// route"): it says nothing about the next hop, so it must not withdraw a route.
var errLookupFailed = errors.New("next-hop lookup failed")

// resolver looks next hops up in the kernel's FIB, caching per batch.
type resolver struct {
	nl     Netlink
	failed map[netip.Addr]bool // lookups that failed in this pass (errLookupFailed)
	cache  map[netip.Addr][]routes.Gateway
	sets   map[string][]routes.Gateway
	table  map[int][]netlink.Route // family => main table, listed once per batch when needed
}

func (r *resolver) resolve(nh netip.Addr) []routes.Gateway {
	nh = nh.Unmap()
	if gws, ok := r.cache[nh]; ok {
		return gws
	}
	gws, err := r.lookup(nh)
	if err != nil {
		gws = nil
		if errors.Is(err, errLookupFailed) {
			r.failed[nh] = true
		}
	}
	// Sorted and distinct, as the writer keeps them, so an unchanged route compares equal.
	slices.SortFunc(gws, routes.Gateway.Compare)
	gws = slices.Compact(gws)
	r.cache[nh] = gws
	return gws
}

func (r *resolver) lookup(nh netip.Addr) ([]routes.Gateway, error) {
	if nh.IsLinkLocalUnicast() {
		// A link-local next hop needs its interface, which the speaker does not report.
		return nil, fmt.Errorf("resolve next hop %s: link-local", nh)
	}
	// The kernel's matching route itself, with every path (a plain lookup gives one path of an
	// ECMP route): one request per distinct next hop, where listing the main table would read
	// every learned route of ours too (100k at scale) on each full pass.
	got, err := r.nl.RouteGetWithOptions(net.IP(nh.AsSlice()), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return nil, fmt.Errorf("resolve next hop %s: %w", nh, err)
		}
		return nil, fmt.Errorf("resolve next hop %s: %w: %w", nh, errLookupFailed, err)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("resolve next hop %s: no route", nh)
	}
	rt := got[0]
	switch {
	case rt.Type == unix.RTN_LOCAL:
		return nil, fmt.Errorf("resolve next hop %s: local address", nh)
	case rt.Protocol == routes.ProtocolTerraceBGP || rt.Type != unix.RTN_UNICAST || (rt.Table != 0 && rt.Table != unix.RT_TABLE_MAIN):
		// Ours (a learned prefix covers the next hop), or not the main table's: the longest
		// match in the main table among the others is what lends gateways.
		return r.recursive(nh)
	case rt.Gw == nil && len(rt.MultiPath) == 0 && rt.Via == nil:
		return routes.Via(nh), nil // on a connected subnet
	}
	return gatewaysOf(rt, nh)
}

// recursive returns every gateway of the longest matching route for nh in the main table that is
// not one of ours (a BGP route must never resolve through another BGP route), from a listing of
// the table: for when the kernel's own match is one of ours or in another table.
func (r *resolver) recursive(nh netip.Addr) ([]routes.Gateway, error) {
	fam := netlink.FAMILY_V4
	if nh.Is6() {
		fam = netlink.FAMILY_V6
	}
	if r.table == nil {
		r.table = map[int][]netlink.Route{}
	}
	rs, ok := r.table[fam]
	if !ok {
		var err error
		rs, err = r.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w: %w", errLookupFailed, err)
		}
		r.table[fam] = rs
	}
	best, bits := -1, -1
	for i, rt := range rs {
		if rt.Protocol == routes.ProtocolTerraceBGP || rt.Type != unix.RTN_UNICAST {
			continue
		}
		b := 0
		if rt.Dst != nil {
			ones, _ := rt.Dst.Mask.Size()
			pa, ok := netip.AddrFromSlice(rt.Dst.IP)
			if !ok || !netip.PrefixFrom(pa.Unmap(), ones).Contains(nh) {
				continue
			}
			b = ones
		}
		if b > bits {
			best, bits = i, b
		}
	}
	if best < 0 {
		return nil, fmt.Errorf("resolve next hop %s: no route", nh)
	}
	return gatewaysOf(rs[best], nh)
}

// gatewaysOf returns the gateways of rt, an underlay route through which nh resolves. A gateway
// keeps its interface when it needs one: a link-local IPv6 router (router advertisements,
// unnumbered ToRs) or an onlink gateway; the kernel refuses either without it.
func gatewaysOf(rt netlink.Route, nh netip.Addr) ([]routes.Gateway, error) {
	var gws []routes.Gateway
	viaOther := rt.Via != nil
	dead := 0
	add := func(ip net.IP, link, flags int) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || ip == nil {
			return
		}
		if flags&unix.RTNH_F_DEAD != 0 {
			// Its interface is down: the kernel refuses a route through it, the whole ECMP
			// route with it, while the other paths carry the traffic.
			dead++
			return
		}
		g := routes.Gateway{Addr: a.Unmap(), OnLink: flags&unix.RTNH_F_ONLINK != 0}
		if g.OnLink || (g.Addr.Is6() && g.Addr.IsLinkLocalUnicast()) {
			g.LinkIndex = link
		}
		gws = append(gws, g)
	}
	add(rt.Gw, rt.LinkIndex, rt.Flags)
	for _, h := range rt.MultiPath {
		viaOther = viaOther || h.Via != nil
		add(h.Gw, h.LinkIndex, h.Flags)
	}
	if viaOther {
		// An IPv4 route via an IPv6 router (RFC 5549 underlays): the writer cannot make one yet,
		// and the next hop itself as gateway would be refused.
		return nil, fmt.Errorf("resolve next hop %s: the underlay reaches it via a gateway of the other family", nh)
	}
	if len(gws) == 0 {
		if dead > 0 {
			return nil, fmt.Errorf("resolve next hop %s: every gateway of the underlay's route is down", nh)
		}
		return routes.Via(nh), nil
	}
	return gws, nil
}

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

package speaker

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// learnedRoutes turns GoBGP's best-path events into a prefix -> ECMP next hops map. GoBGP feeds
// watch callbacks through an unbounded channel, so the callback only updates the map; delivery
// to the sink happens on its own goroutine, coalesced, so a slow sink costs latency, not memory.
// Deliveries carry only the prefixes changed since the previous one, so one changed route costs
// the same with 100 routes learned as with 100,000.
type learnedRoutes struct {
	sink     RouteSink
	debounce time.Duration
	maxDelay time.Duration

	mu     sync.Mutex
	routes map[netip.Prefix][]netip.Addr // next hops as learned, local ones not yet removed
	single map[netip.Addr][]netip.Addr   // one shared set per lone next hop: most prefixes have one
	// changed lists the prefixes changed since the last delivery, a prefix as often as it
	// changed: appending is cheaper than a set's insert, and take() builds the set anyway.
	changed []netip.Prefix
	full    bool // the next delivery must carry the whole table
	local   atomic.Pointer[map[netip.Addr]bool]
	kick    chan struct{}

	delivered atomic.Int64 // number of sink calls, for tests and status

	// eor is when each peer's End-of-RIB arrived, per family (afi<<16 | safi), in the watch's
	// order: every best path GoBGP computed from what the peer sent before it was applied first.
	eor map[netip.Addr]map[uint32]time.Time
	// handedOn is when the last take whose delivery has completed began: every change applied
	// before then has reached the sink.
	handedOn time.Time
}

func newLearnedRoutes(sink RouteSink, debounce, maxDelay time.Duration) *learnedRoutes {
	l := &learnedRoutes{
		sink:     sink,
		debounce: debounce,
		maxDelay: maxDelay,
		routes:   map[netip.Prefix][]netip.Addr{},
		single:   map[netip.Addr][]netip.Addr{},
		full:     true,
		kick:     make(chan struct{}, 1),
		eor:      map[netip.Addr]map[uint32]time.Time{},
	}
	l.local.Store(&map[netip.Addr]bool{})
	return l
}

// setLocal changes which next hops are this host's own; as that can change any prefix, the next
// delivery carries the whole table.
func (l *learnedRoutes) setLocal(m map[netip.Addr]bool) {
	l.mu.Lock()
	if maps.Equal(*l.local.Load(), m) {
		// Every reconcile sets them; only a change may cost a whole-table delivery.
		l.mu.Unlock()
		return
	}
	// Stored under mu with full, so a take() in between cannot build the table with the old
	// set and then clear full.
	l.local.Store(&m)
	l.full = true
	l.mu.Unlock()
	l.signal()
}

func (l *learnedRoutes) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// apply takes one best-path event. With multiple paths enabled GoBGP reports, per changed
// destination, its complete set of equal best paths (or the single withdrawn best), so every
// prefix in an event replaces what was known for it.
func (l *learnedRoutes) apply(paths []*api.Path) {
	if len(paths) == 0 {
		return
	}
	if len(paths) == 1 && paths[0].GetNlri() == nil && paths[0].GetNeighborIp() != "" {
		l.endOfRIB(paths[0])
		return
	}
	if len(paths) == 1 {
		// The common case (one destination changed) without the grouping map: at 100k prefixes
		// GoBGP delivers one event per prefix.
		l.applyOne(paths[0])
		return
	}
	sets := make(map[netip.Prefix][]netip.Addr, len(paths))
	for _, p := range paths {
		pfx, nh, err := decodePath(p)
		if err != nil {
			continue
		}
		set := sets[pfx]
		if !p.GetIsWithdraw() && !isLocalPath(p) && nh.IsValid() && !slices.Contains(set, nh) {
			set = append(set, nh)
		}
		sets[pfx] = set
	}
	l.mu.Lock()
	for pfx, set := range sets {
		if len(set) == 0 {
			delete(l.routes, pfx)
			continue
		}
		slices.SortFunc(set, func(a, b netip.Addr) int { return a.Compare(b) })
		l.routes[pfx] = set
	}
	for pfx := range sets {
		l.noteChanged(pfx)
	}
	l.mu.Unlock()
	l.signal()
}

func (l *learnedRoutes) applyOne(p *api.Path) {
	pfx, nh, err := decodePath(p)
	if err != nil {
		return
	}
	keep := !p.GetIsWithdraw() && !isLocalPath(p) && nh.IsValid()
	l.mu.Lock()
	if keep {
		set, ok := l.single[nh]
		if !ok {
			if len(l.single) >= 1024 {
				clear(l.single) // next hops come and go with peers; never let this grow unbounded
			}
			set = []netip.Addr{nh}
			l.single[nh] = set
		}
		l.routes[pfx] = set
	} else {
		delete(l.routes, pfx)
	}
	l.noteChanged(pfx)
	l.mu.Unlock()
	l.signal()
}

// endOfRIB records a peer's End-of-RIB marker and makes the next delivery happen (even an empty
// one), so that handedOn passes it.
func (l *learnedRoutes) endOfRIB(p *api.Path) {
	peer, err := netip.ParseAddr(p.GetNeighborIp())
	if err != nil {
		return
	}
	peer = peer.Unmap()
	fam := familyKey(p.GetFamily())
	l.mu.Lock()
	if l.eor[peer] == nil {
		l.eor[peer] = map[uint32]time.Time{}
	}
	l.eor[peer][fam] = time.Now()
	l.mu.Unlock()
	l.signal()
}

func familyKey(f *api.Family) uint32 { return uint32(f.GetAfi())<<16 | uint32(f.GetSafi()) }

// endOfRIBHandedOn reports whether peer's End-of-RIB for family arrived at or after since and
// everything learned before it has reached the sink.
func (l *learnedRoutes) endOfRIBHandedOn(peer netip.Addr, family uint32, since time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.eor[peer][family]
	return ok && !at.Before(since) && !l.handedOn.Before(at)
}

// noteChanged records a changed prefix; l.mu is held. A prefix that flaps between two
// deliveries is listed each time; past a bound the next delivery is the whole table instead, so
// the list never outgrows the table by much.
func (l *learnedRoutes) noteChanged(pfx netip.Prefix) {
	if l.full {
		return // the whole table goes anyway
	}
	if len(l.changed) >= 2*len(l.routes)+4096 {
		l.full, l.changed = true, l.changed[:0]
		return
	}
	l.changed = append(l.changed, pfx)
}

// snapshot returns a fresh map of every learned route without this host's own next hops.
func (l *learnedRoutes) snapshot() map[netip.Prefix][]netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tableLocked(*l.local.Load())
}

func (l *learnedRoutes) tableLocked(local map[netip.Addr]bool) map[netip.Prefix][]netip.Addr {
	out := make(map[netip.Prefix][]netip.Addr, len(l.routes))
	for pfx, set := range l.routes {
		if set = withoutLocal(set, local); len(set) > 0 {
			out[pfx] = set
		}
	}
	return out
}

// take returns what the next delivery carries and whether it is the whole table: the prefixes
// changed since the last one, a withdrawn prefix (or one whose every next hop is this host's) with
// no next hops.
func (l *learnedRoutes) take() (map[netip.Prefix][]netip.Addr, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	local := *l.local.Load()
	full := l.full
	var out map[netip.Prefix][]netip.Addr
	if full {
		out = l.tableLocked(local)
	} else {
		out = make(map[netip.Prefix][]netip.Addr, len(l.changed))
		for _, pfx := range l.changed {
			out[pfx] = withoutLocal(l.routes[pfx], local)
		}
	}
	l.full = false
	l.changed = l.changed[:0]
	return out, full
}

// withoutLocal drops this host's own next hops. Sets are never modified after apply stores them,
// so the common case (no local next hop) returns the set itself instead of a copy.
func withoutLocal(set []netip.Addr, local map[netip.Addr]bool) []netip.Addr {
	if !slices.ContainsFunc(set, func(a netip.Addr) bool { return local[a] }) {
		return set
	}
	var keep []netip.Addr
	for _, a := range set {
		if !local[a] {
			keep = append(keep, a)
		}
	}
	return keep
}

// run delivers changes after debounce of quiet, or maxDelay after the first change at most.
func (l *learnedRoutes) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		}
		first := time.Now()
		timer.Reset(l.debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-l.kick:
				left := l.maxDelay - time.Since(first)
				if left <= 0 {
					break wait
				}
				timer.Reset(min(l.debounce, left))
			case <-timer.C:
				break wait
			}
		}
		timer.Stop()
		takenAt := time.Now()
		changes, full := l.take()
		if len(changes) > 0 || full {
			if l.sink != nil {
				l.sink.UpdateLearnedRoutes(changes, full)
			}
			l.delivered.Add(1)
		}
		l.mu.Lock()
		l.handedOn = takenAt
		l.mu.Unlock()
	}
}

// watch subscribes to best-path changes, including the current table.
func (s *Speaker) watch(ctx context.Context) error {
	l := s.learned
	req := &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		// End-of-RIB markers come on the same watch, so each follows the best paths computed
		// from what its peer sent before it.
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true},
			{Type: api.WatchEventRequest_Table_Filter_EOR}},
	}}
	return s.srv.WatchEvent(ctx, req, func(r *api.WatchEventResponse) {
		if t := r.GetTable(); t != nil {
			l.apply(t.GetPaths())
		}
	})
}

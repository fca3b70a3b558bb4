package felix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/fastpath"
	"github.com/terracenet/terrace/ipam"
)

// event is one thing a syncer told the agent; exactly one field is set.
type event struct {
	updates     []datastore.ResourceUpdate
	status      *kv.Status
	blocks      []kv.Update
	blockStatus *kv.Status
}

// Agent is felix's compute-then-apply loop for one node: datastore updates go into the
// calculator as they arrive, and at most every ApplyInterval its delta is pushed into the writers
// and applied in the order the writers require.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	calc Calculator
	dp   Dataplane

	events    chan event
	resyncReq chan chan error
	quit      chan struct{} // closed when the loop has returned, so senders never block forever

	health  *health
	metrics *metrics
	status  *statusWriter // nil: no status reporting

	// The fast path is applied off the loop (runFastPath): each tcx attach waits for an RCU
	// grace period, and a thousand of them must not hold back policy or endpoint status.
	fastPathKick   chan struct{}
	fastPathResync atomic.Bool
	// fastPathArmed: the first cycle has run (and the sysctl writer with it), so events may
	// kick the fast path; before, its apply would only find conntrack not liberal yet.
	fastPathArmed bool
	primed        chan struct{} // closed when startPriming's reads are done; nil: nothing to wait for
	bg            *sync.WaitGroup
	aheadC        chan aheadReads // a periodic resync's reads are done
	live          *live           // health and metrics endpoints, refresh tickers; follows FelixConfiguration

	// Everything below is owned by the loop goroutine.
	inFlight classSet // the classes whose periodic resync reads are under way (none: no resync in flight)
	due      classSet // classes whose refresh fell due while another resync was in flight
	// retryResync are classes the next cycle re-reads because a failure of the other class's
	// writers may be their drift; suspectTried are those already re-read for the current run of
	// failures (see cycle).
	retryResync, suspectTried classSet
	finishes                  map[string]func(context.Context) error // this resync cycle's writers' finish, by name
	dsInSync, blocksInSync    bool
	blocksRequired            bool
	everInSync                bool
	dirty                     bool
	lastApply                 time.Time
	retryAt, pollAt           time.Time
	retryDelay                time.Duration

	writers   map[string]*writerState
	pushErrs  map[modelObj]error // model objects a writer refused
	blocks    map[netip.Prefix]bool
	locals    map[string]localEP    // local workload endpoints by namespace/name
	reported  map[string]int64      // the last status handed to the status writer
	ifUsers   map[string]int        // local endpoints per host-side interface
	conflicts map[netip.Prefix]bool // route keys another protocol holds, as last logged

	chainRules map[calc.ChainRef]int
	setMembers map[string]int
}

// writerState is what the loop knows about one writer.
type writerState struct {
	inSync bool
	err    error
}

// New returns an agent that programs dp from what c computes.
func New(cfg Config, dp Dataplane, c Calculator) *Agent {
	cfg.setDefaults()
	a := &Agent{
		cfg: cfg, log: cfg.Logger, calc: c, dp: dp,
		events:         make(chan event, 64),
		resyncReq:      make(chan chan error),
		aheadC:         make(chan aheadReads, 1),
		quit:           make(chan struct{}),
		metrics:        newMetrics(),
		fastPathKick:   make(chan struct{}, 1),
		blocksRequired: cfg.Client != nil || cfg.WaitForBlocks,
		writers:        map[string]*writerState{},
		pushErrs:       map[modelObj]error{},
		blocks:         map[netip.Prefix]bool{},
		locals:         map[string]localEP{},
		ifUsers:        map[string]int{},
		chainRules:     map[calc.ChainRef]int{},
		setMembers:     map[string]int{},
	}
	if dp.FastPath != nil {
		a.metrics.fastPath = dp.FastPath.Stats
	}
	a.health = newHealth(cfg.OnState, liveWindow(cfg.Refresh.longest()))
	a.live = a.newLive()
	if cfg.Status != nil {
		a.status = newStatusWriter(cfg.Status, datastore.EndpointStatusPrefix(cfg.NodeName), a.log, a.metrics, a.health)
	}
	for _, name := range a.writerNames() {
		a.writers[name] = &writerState{}
	}
	return a
}

func tableWriterName(id calc.TableID) string {
	return fmt.Sprintf("iptables-%s-v%d", id.Table, id.IPVersion)
}

func (a *Agent) sortedTables() []calc.TableID {
	ids := slices.Collect(maps.Keys(a.dp.Tables))
	slices.SortFunc(ids, func(x, y calc.TableID) int {
		if x.IPVersion != y.IPVersion {
			return x.IPVersion - y.IPVersion
		}
		return compareStrings(x.Table, y.Table)
	})
	return ids
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// classOf is the class of a writer named by writerNames, whose refresh interval paces it.
func classOf(writer string) writerClass {
	switch writer {
	case "ipsets":
		return classIPSets
	case "routes", "sysctl":
		return classRoutes
	}
	return classIptables
}

func (a *Agent) writerNames() []string {
	names := []string{"ipsets"}
	for _, id := range a.sortedTables() {
		names = append(names, tableWriterName(id))
	}
	names = append(names, "routes")
	if a.dp.Sysctls != nil {
		names = append(names, "sysctl")
	}
	return names
}

// ResourceCallbacks is where a datastore syncer over Kinds delivers.
func (a *Agent) ResourceCallbacks() datastore.SyncCallbacks { return resourceCB{a} }

// BlockCallbacks is where a kv syncer over this node's IPAM affinities delivers.
func (a *Agent) BlockCallbacks() kv.Callbacks { return blockCB{a} }

type resourceCB struct{ a *Agent }

func (c resourceCB) OnStatus(s kv.Status)                   { c.a.send(event{status: &s}) }
func (c resourceCB) OnUpdates(u []datastore.ResourceUpdate) { c.a.send(event{updates: u}) }

type blockCB struct{ a *Agent }

func (c blockCB) OnStatus(s kv.Status)    { c.a.send(event{blockStatus: &s}) }
func (c blockCB) OnUpdates(u []kv.Update) { c.a.send(event{blocks: u}) }

// send queues an event for the loop; the syncers block here while the loop is busy, which is
// the back pressure we want, but never after the loop is gone.
func (a *Agent) send(ev event) {
	select {
	case a.events <- ev:
	case <-a.quit:
	}
}

// ForceResync makes the loop re-read and repair every writer now, whatever their refresh
// intervals, and returns the result. It fails while the agent has not yet been in sync with the
// datastore.
func (a *Agent) ForceResync(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case a.resyncReq <- reply:
	case <-a.quit:
		return errors.New("force resync: agent stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports the agent's readiness and, when not ready, why.
func (a *Agent) Ready() (bool, string) { return a.health.ready() }

// Run runs the agent until ctx is done. With Config.Client it runs its own syncers; it returns
// nil on cancellation.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errc := make(chan error, 4)
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("run %s: %w", name, err)
			}
		}()
	}
	goRun("health and metrics endpoints", a.live.serve)
	if a.status != nil {
		goRun("endpoint status writer", a.status.run)
	}
	if a.cfg.Client != nil {
		goRun("datastore syncer", datastore.NewSyncer(a.cfg.Client, Kinds, a.ResourceCallbacks(), a.log).Run)
		prefix := ipam.AffinityPrefix + a.cfg.NodeName + "/"
		goRun("IPAM affinity syncer", kv.NewSyncer(a.cfg.Client.Store(), []string{prefix}, a.BlockCallbacks(), a.log).Run)
	}
	if a.dp.FastPath != nil {
		wg.Go(func() { a.runFastPath(ctx) })
	}
	a.bg = &wg
	a.startPriming(ctx, &wg)
	a.log.Info("felix agent starting", "node", a.cfg.NodeName, "apply_interval", a.cfg.ApplyInterval.String(),
		"refresh_intervals", a.cfg.Refresh.String())
	err := a.loop(ctx, errc)
	close(a.quit)
	cancel()
	return err
}

func (a *Agent) loop(ctx context.Context, errc <-chan error) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	a.live.resync.set(a.cfg.Refresh)
	defer a.live.resync.stop()
	// Liveness is judged by the loop's heartbeat, so an idle loop must still beat.
	beat := time.NewTicker(10 * time.Second)
	defer beat.Stop()
	linkC := a.cfg.LinkEvents
	hostIfC := a.cfg.HostInterfaces
	for {
		a.health.beat()
		var timerC <-chan time.Time
		if next, ok := a.nextWake(); ok {
			timer.Reset(max(time.Until(next), 0))
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case err := <-errc:
			timer.Stop()
			return err
		case ev := <-a.events:
			a.handle(ev)
			// Fold whatever else is queued into this round, so a burst costs one apply.
			for drained := false; !drained; {
				select {
				case ev := <-a.events:
					a.handle(ev)
				default:
					drained = true
				}
			}
			if a.live.restart != nil {
				timer.Stop()
				return a.live.restart
			}
		case <-beat.C:
		case name, ok := <-linkC:
			if !ok {
				linkC = nil
				continue
			}
			a.linkChanged(name)
		case ifs, ok := <-hostIfC:
			if !ok {
				hostIfC = nil
				continue
			}
			a.calc.SetHostInterfaces(ifs)
			if a.dp.FastPath != nil {
				a.dp.FastPath.SetHostInterfaces(fastpath.HostInterfaces(ifs, calc.WorkloadIfacePrefix))
				if a.fastPathArmed {
					a.kickFastPath(false)
				}
			}
			a.dirty = true
		case <-timerC:
			a.cycle(ctx, 0)
		case <-a.live.resync[classIptables].C():
			a.refreshDue(ctx, classIptables)
		case <-a.live.resync[classIPSets].C():
			a.refreshDue(ctx, classIPSets)
		case <-a.live.resync[classRoutes].C():
			a.refreshDue(ctx, classRoutes)
		case r := <-a.aheadC:
			a.finishResync(ctx, r)
		case reply := <-a.resyncReq:
			if !a.everInSync {
				reply <- errors.New("force resync: not in sync with the datastore yet")
			} else {
				reply <- a.cycle(ctx, allClasses)
			}
		}
		timer.Stop()
	}
}

// linkChanged re-checks the routes, settings and fast path of a local endpoint's interface: a re-created
// veth has a new index and fresh defaults, and its old routes died with the old device.
func (a *Agent) linkChanged(name string) {
	if a.ifUsers[name] == 0 {
		return
	}
	a.dp.Routes.DeviceChanged(name)
	if a.dp.FastPath != nil {
		a.dp.FastPath.DeviceChanged(name)
		if a.fastPathArmed {
			a.kickFastPath(false)
		}
	}
	if a.dp.Sysctls != nil {
		a.dp.Sysctls.InterfaceChanged(name)
	}
	a.dirty = true
}

// nextWake is when the loop must next run an apply cycle, if at all.
func (a *Agent) nextWake() (time.Time, bool) {
	if !a.everInSync {
		// Programming a partial view could replace a complete chain from the previous run with
		// a partial one: wait for the whole datastore first.
		return time.Time{}, false
	}
	var next time.Time
	ok := false
	consider := func(t time.Time) {
		if !t.IsZero() && (!ok || t.Before(next)) {
			next, ok = t, true
		}
	}
	if a.dirty {
		consider(a.lastApply.Add(a.cfg.ApplyInterval))
	}
	consider(a.retryAt)
	consider(a.pollAt)
	return next, ok
}

func (a *Agent) handle(ev event) {
	switch {
	case ev.status != nil:
		a.dsInSync = *ev.status == kv.StatusInSync
		a.log.Info("datastore status", "status", ev.status.String())
	case ev.blockStatus != nil:
		a.blocksInSync = *ev.blockStatus == kv.StatusInSync
	case ev.updates != nil:
		a.metrics.add(&a.metrics.updates, uint64(len(ev.updates)))
		for _, u := range ev.updates {
			a.calc.OnUpdate(u.Kind, u.Namespace, u.Name, u.Resource)
			a.trackEndpoint(u)
		}
		a.live.observe(ev.updates)
		a.dirty = true
	case ev.blocks != nil:
		a.trackBlocks(ev.blocks)
		a.dirty = true
	}
	a.metrics.setInSync(a.dsInSync)
	if !a.everInSync && a.dsInSync && (a.blocksInSync || !a.blocksRequired) {
		a.everInSync = true
		a.dirty = true
		a.log.Info("in sync with the datastore; programming the dataplane")
	}
	a.health.setInSync(a.dsInSync)
}

// trackBlocks keeps this node's confirmed block affinities and hands them to the calculator,
// which blackholes them.
func (a *Agent) trackBlocks(ups []kv.Update) {
	for _, u := range ups {
		_, cidr, err := ipam.ParseAffinityKey(u.KV.Key)
		if err != nil {
			a.log.Warn("ignoring unreadable affinity key", "key", u.KV.Key, "err", err)
			continue
		}
		if u.Type == kv.UpdateDelete {
			delete(a.blocks, cidr)
			continue
		}
		aff, err := ipam.DecodeAffinity(u.KV.Value)
		// A pending claim may be lost to another node: blackholing it could hide that node's
		// block from this host, so only a confirmed one counts.
		if err != nil || aff.State != "confirmed" {
			delete(a.blocks, cidr)
			continue
		}
		a.blocks[cidr.Masked()] = true
	}
	bs := slices.Collect(maps.Keys(a.blocks))
	slices.SortFunc(bs, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	a.calc.SetBlocks(bs)
}

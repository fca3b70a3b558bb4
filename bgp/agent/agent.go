package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/terracenet/terrace/bgp"
	"github.com/terracenet/terrace/bgp/config"
	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/internal/loglevel"
	"github.com/terracenet/terrace/ipam"
)

// Defaults of Config's durations.
const (
	DefaultResyncInterval = 60 * time.Second
	DefaultSyncGrace      = 10 * time.Second
	DefaultStatusInterval = 2 * time.Second
	// DefaultRecheckInterval bounds how long a rotated password file waits to be read.
	DefaultRecheckInterval = 30 * time.Second
	retryInterval          = 5 * time.Second
)

// RouteMetric is the metric of the routes BGP installs, BIRD's kernel default: a route an
// operator adds by hand (IPv4's default metric is 0) then wins over a learned one of the same
// prefix instead of holding its key, and the learned one takes over when it goes; a learned
// route wins over IPv6's default (1024) and DHCP's usual 100 as it does under BIRD.
const RouteMetric = 32

// Config is what the agent needs; Client and NodeName are required.
type Config struct {
	NodeName string
	Client   *datastore.Client
	// StateDir holds the speaker's restart marker and the node-local BGP password files.
	StateDir string
	// DebugListen starts GoBGP's gRPC API on this loopback address (for the gobgp CLI).
	DebugListen string
	// ResyncInterval is how often the kernel's protocol-81 routes are read back and repaired.
	ResyncInterval time.Duration
	// SyncGrace is how long after the speaker starts that stale routes of protocol 81 are kept,
	// giving peers time to send their routes again after a restart.
	SyncGrace time.Duration
	// StatusInterval is how often peer status is published.
	StatusInterval time.Duration
	// RecheckInterval is how often the configuration is computed again with nothing changed in
	// the datastore: password files live outside it, and a rotated one is read then.
	RecheckInterval time.Duration
	// Netlink reaches this namespace's kernel; nil opens a handle on the current namespace.
	Netlink Netlink
	// Writer replaces the protocol-81 route writer (tests); nil builds one on Netlink.
	Writer RouteWriter
	// Password resolves BGPPeer password references; nil reads <StateDir>/secrets/... files.
	Password config.PasswordFunc
	// StopOnExit sends NOTIFICATIONs and stops the speaker when Run returns. terrace-node leaves
	// it false: exiting without a stop lets graceful-restart peers keep this host's routes, and
	// the kernel keeps the routes this host learned, until it is back.
	StopOnExit bool
	// LogLevel, when set, is the level Logger filters at: it follows BGPConfiguration
	// logSeverityScreen, and goes back to its value at New when no object sets one. nil: the
	// operator fixed the level (--log-level), or the logger's level cannot change.
	LogLevel *slog.LevelVar
	// UnderlayEvents reports host interfaces changing state (SubscribeUnderlay), so routes the
	// kernel flushed with a link that went down come back within a second, not at the resync;
	// nil: only the resync repairs them.
	UnderlayEvents <-chan string
	// UnderlayRoutes signals changes of routes that are not Terrace's (SubscribeUnderlayRoutes):
	// learned next hops resolve through them, so a gateway the underlay dropped (a ToR gone while
	// its link stays up) leaves the learned routes within a few seconds, not at the resync; nil:
	// only the resync follows them.
	UnderlayRoutes <-chan struct{}
	// Publish receives status updates (terrace-node's StatusBoard); nil discards.
	Publish func(Status)
	Logger  *slog.Logger
}

// Agent runs the BGP side of one node.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	baseLevel slog.Level // cfg.LogLevel's value at New
	in        *inputs
	prog      *programmer
	kick      chan struct{}

	mu       sync.Mutex
	sp       *speaker.Speaker
	global   speaker.Global
	started  time.Time
	lastErr  string
	warnings []string
	advert   int
}

// New checks cfg and builds an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("create bgp agent: node name is empty")
	}
	if cfg.Client == nil {
		return nil, errors.New("create bgp agent: no datastore client")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.SyncGrace <= 0 {
		cfg.SyncGrace = DefaultSyncGrace
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = DefaultRecheckInterval
	}
	if cfg.Password == nil {
		cfg.Password = bgp.PasswordReader(cfg.StateDir)
	}
	if cfg.Netlink == nil {
		// Learned routes arrive by the ten thousand: the batching handle sends them to the kernel
		// many per system call.
		h, err := routes.NewBatched(netns.None())
		if err != nil {
			return nil, fmt.Errorf("create bgp agent: %w", err)
		}
		cfg.Netlink = h
	}
	if cfg.Writer == nil {
		w, err := routes.New(cfg.Netlink, routes.Config{Protocol: routes.ProtocolTerraceBGP, Table: routes.TableMain,
			Metric: RouteMetric, Logger: cfg.Logger.With("writer", "bgp-routes")})
		if err != nil {
			return nil, fmt.Errorf("create bgp agent: %w", err)
		}
		cfg.Writer = w
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
	if cfg.LogLevel != nil {
		a.baseLevel = cfg.LogLevel.Level()
	}
	a.in = newInputs(cfg.NodeName, cfg.Logger, a.poke)
	a.prog = newProgrammer(cfg.Writer, cfg.Netlink, a.learnedNow, cfg.Logger)
	a.prog.underlay = cfg.UnderlayEvents
	a.prog.underlayRoutes = cfg.UnderlayRoutes
	return a, nil
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run follows the datastore and drives the speaker until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("bgp agent worker failed", "err", err)
				cancel()
			}
		}()
	}
	goRun(datastore.NewSyncer(a.cfg.Client, Kinds, resourceCallbacks{a.in}, a.log.With("syncer", "bgp")).Run)
	goRun(kv.NewSyncer(a.cfg.Client.Store(), []string{ipam.BlockPrefix}, blockCallbacks{a.in}, a.log.With("syncer", "bgp-ipam")).Run)
	goRun(func(ctx context.Context) error {
		a.prog.run(ctx, a.cfg.ResyncInterval, a.mayDeleteRoutes)
		return nil
	})
	a.publish("starting")
	a.loop(ctx)
	cancel()
	wg.Wait()
	a.mu.Lock()
	sp := a.sp
	a.mu.Unlock()
	if sp != nil && a.cfg.StopOnExit {
		sp.Stop()
	}
	return nil
}

// learnedNow is what the running speaker has learned (nothing before it runs).
func (a *Agent) learnedNow() map[netip.Prefix][]netip.Addr {
	a.mu.Lock()
	sp := a.sp
	a.mu.Unlock()
	if sp == nil {
		return nil
	}
	return sp.Learned()
}

// mayDeleteRoutes says when stale protocol-81 routes may go: the datastore is in sync, the
// speaker runs, and peers have sent their routes again: every one said so (End-of-RIB, with
// graceful restart) and what it sent has reached the programmer, or they have had SyncGrace.
func (a *Agent) mayDeleteRoutes() bool {
	a.mu.Lock()
	started, sp := a.started, a.sp
	a.mu.Unlock()
	if !a.in.inSync() || started.IsZero() || sp == nil {
		return false
	}
	if time.Since(started) >= a.cfg.SyncGrace {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ok, err := sp.PeersSynced(ctx); err != nil || !ok {
		return false
	}
	a.log.Info("every bgp peer has sent End-of-RIB; stale routes need not wait for the sync grace",
		"after", time.Since(started).Round(time.Millisecond))
	return true
}

func (a *Agent) loop(ctx context.Context) {
	status := time.NewTicker(a.cfg.StatusInterval)
	defer status.Stop()
	recheck := time.NewTicker(a.cfg.RecheckInterval)
	defer recheck.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	// Coalesce bursts of updates (a relist delivers many) into one computation.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
			debounce.Reset(20 * time.Millisecond)
		case <-debounce.C:
			if err := a.reconcile(ctx); err != nil {
				retry.Reset(retryInterval)
			}
			a.publish("")
		case <-retry.C:
			a.poke()
		case <-recheck.C:
			a.poke()
		case <-status.C:
			a.publish("")
		}
	}
}

// reconcile computes the desired speaker configuration and applies it.
func (a *Agent) reconcile(ctx context.Context) error {
	if !a.in.inSync() {
		return nil
	}
	d, err := config.Compute(a.in.snapshot(a.cfg.Password))
	if err != nil {
		a.setErr(err)
		return err
	}
	a.setWarnings(d.Warnings)
	a.followLogLevel(d.LogLevel)
	sp, err := a.ensureSpeaker(ctx, d.Global)
	if err != nil {
		a.setErr(err)
		return err
	}
	errs := []error{}
	if err := sp.SetPeers(ctx, d.Peers); err != nil {
		errs = append(errs, fmt.Errorf("set bgp peers: %w", err))
	}
	if err := sp.SetAdvertised(ctx, d.Advertised); err != nil {
		errs = append(errs, fmt.Errorf("set bgp advertisements: %w", err))
	}
	err = errors.Join(errs...)
	a.mu.Lock()
	a.advert = len(d.Advertised)
	a.mu.Unlock()
	a.setErr(err)
	return err
}

// followLogLevel applies logSeverityScreen ("" is the level the agent started with).
func (a *Agent) followLogLevel(name string) {
	if a.cfg.LogLevel == nil {
		return
	}
	lv := a.baseLevel
	if name != "" {
		var err error
		if lv, err = loglevel.Parse(name); err != nil {
			// Validation refuses such a value; one stored by hand keeps the current level.
			a.log.Warn("BGPConfiguration logSeverityScreen not understood; log level unchanged", "err", err)
			return
		}
	}
	if old := a.cfg.LogLevel.Level(); lv != old {
		// Said before the change, so it is seen whichever way the level moves.
		a.log.Info("applied bgp setting change", "setting", "logSeverityScreen", "old", old.String(), "new", lv.String())
		a.cfg.LogLevel.Set(lv)
	}
}

// ensureSpeaker starts the speaker, or restarts it when its global settings (AS, router ID,
// listen port and addresses, graceful restart) changed: GoBGP cannot change those on a running
// server. This host's other addresses (LocalAddresses) change in place: a Node gaining an address
// must not reset every session.
func (a *Agent) ensureSpeaker(ctx context.Context, g speaker.Global) (*speaker.Speaker, error) {
	a.mu.Lock()
	sp, old := a.sp, a.global
	a.mu.Unlock()
	if sp != nil && reflect.DeepEqual(withoutLocal(old), withoutLocal(g)) {
		if !slices.Equal(old.LocalAddresses, g.LocalAddresses) {
			sp.SetLocalAddresses(g.LocalAddresses)
			a.mu.Lock()
			a.global = g
			a.mu.Unlock()
		}
		return sp, nil
	}
	if sp != nil {
		a.log.Info("bgp global settings changed: restarting the speaker", "asn", g.ASN, "routerID", g.RouterID.String(),
			"listenPort", g.ListenPort)
		// The learned routes stay in the kernel while the new speaker learns them again (the
		// sync grace counts from now), as across a restart of terrace-node.
		a.mu.Lock()
		a.started = time.Now()
		a.mu.Unlock()
		a.prog.speakerReplaced()
		sp.Stop()
	}
	sp = speaker.New(speaker.Options{Logger: a.log.With("component", "speaker"), Sink: a.prog,
		StateDir: a.cfg.StateDir, DebugListen: a.cfg.DebugListen})
	if err := sp.Start(ctx, g); err != nil {
		a.mu.Lock()
		a.sp = nil
		a.mu.Unlock()
		return nil, fmt.Errorf("start bgp speaker: %w", err)
	}
	a.log.Info("bgp speaker started", "asn", g.ASN, "routerID", g.RouterID.String(), "listenPort", g.ListenPort,
		"restarting", sp.Restarting())
	a.mu.Lock()
	a.sp, a.global, a.started = sp, g, time.Now()
	a.mu.Unlock()
	return sp, nil
}

// withoutLocal is g without what a running speaker can change in place.
func withoutLocal(g speaker.Global) speaker.Global {
	g.LocalAddresses = nil
	return g
}

func (a *Agent) setErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	a.mu.Lock()
	changed := msg != a.lastErr
	a.lastErr = msg
	a.mu.Unlock()
	if changed && err != nil {
		a.log.Error("bgp configuration not applied", "err", err)
	} else if changed {
		a.log.Info("bgp configuration applied")
	}
}

func (a *Agent) setWarnings(ws []string) {
	a.mu.Lock()
	changed := !slices.Equal(ws, a.warnings)
	a.warnings = slices.Clone(ws)
	a.mu.Unlock()
	if changed {
		for _, w := range ws {
			a.log.Warn("bgp configuration skipped a resource", "warning", w)
		}
	}
}

package speaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// restartMarker is created in the state directory on start; finding it on a later start means the
// speaker ran before on this host, so peers may still hold our routes (graceful restart).
const restartMarker = "bgp-started"

// Options are the speaker's fixed dependencies.
type Options struct {
	Logger *slog.Logger
	// Sink receives learned routes; nil discards them (Learned still reports them).
	Sink RouteSink
	// StateDir holds the restart marker; empty disables restart detection (never LocalRestarting).
	StateDir string
	// Debounce is the quiet time before learned routes go to the sink; 0 means 20 ms.
	Debounce time.Duration
	// MaxDelay bounds how long a stream of changes can hold back a sink update; 0 means 250 ms.
	MaxDelay time.Duration
	// DebugListen, when set, starts GoBGP's gRPC API on this loopback address for the gobgp CLI.
	DebugListen string
}

// Speaker is this host's BGP speaker. All methods are safe for concurrent use.
type Speaker struct {
	opts Options
	log  *slog.Logger
	glog *gobgpLogger

	mu         sync.Mutex // serialises configuration changes
	srv        *server.BgpServer
	global     Global
	started    bool
	restarting bool // LocalRestarting applies to the first SetPeers after Start only
	firstPeers bool
	peers      map[netip.Addr]Peer
	policyKey  string
	// importAssigned: the import policy is assigned (from the first import filter on).
	importAssigned bool
	// exportFilters are the peers' filters the export policy was last built from; exportKey and
	// importKey identify the two policies as last installed (policyKey is both).
	exportFilters        map[netip.Addr]*Filters
	exportKey, importKey string
	advertised           map[netip.Prefix]Advert
	cancel               context.CancelFunc
	learned              *learnedRoutes
	done                 chan struct{}

	advMu    sync.Mutex // guards the advertised counts PeerStatusCached reuses; held while counting
	advAt    time.Time
	advAtGen uint64        // advGen when the counts were taken
	advGen   atomic.Uint64 // bumped when what is advertised, or to whom, changes
	adv      map[netip.Addr]advCount
	// advCounts is how often GoBGP was asked to count advertised prefixes.
	advCounts atomic.Int64
}

// New returns a speaker that is not started yet.
func New(opts Options) *Speaker {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 250 * time.Millisecond
	}
	l := opts.Logger.With("component", "bgp")
	return &Speaker{
		opts:       opts,
		log:        l,
		glog:       newGobgpLogger(l),
		peers:      map[netip.Addr]Peer{},
		advertised: map[netip.Prefix]Advert{},
	}
}

// Start runs the embedded GoBGP server with the global configuration g.
func (s *Speaker) Start(ctx context.Context, g Global) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("start speaker: already started")
	}
	if !g.RouterID.Is4() {
		return fmt.Errorf("start speaker: router ID %v is not an IPv4 address", g.RouterID)
	}
	if g.ASN == 0 {
		return errors.New("start speaker: AS number is 0")
	}
	var sopts []server.ServerOption
	sopts = append(sopts, server.LoggerOption(s.glog))
	if s.opts.DebugListen != "" {
		if err := checkLoopback(s.opts.DebugListen); err != nil {
			return fmt.Errorf("start speaker: %w", err)
		}
		sopts = append(sopts, server.GrpcListenAddress(s.opts.DebugListen))
	}
	srv := server.NewBgpServer(sopts...)
	go srv.Serve()

	port := g.ListenPort
	if port == 0 {
		port = 179
	}
	ag := &api.Global{
		Asn:              g.ASN,
		RouterId:         g.RouterID.String(),
		ListenPort:       port,
		UseMultiplePaths: true,
	}
	for _, a := range g.ListenAddresses {
		ag.ListenAddresses = append(ag.ListenAddresses, a.String())
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: ag}); err != nil {
		srv.Stop()
		return fmt.Errorf("start bgp: %w", err)
	}
	restarting, err := s.markStarted()
	if err != nil {
		s.log.Warn("cannot record speaker start; graceful restart detection off", "error", err)
	}
	s.srv, s.global, s.started = srv, g, true
	s.restarting, s.firstPeers = restarting, true
	s.policyKey, s.importAssigned, s.exportKey, s.importKey, s.exportFilters = "", false, "", "", nil
	if err := s.applyPolicy(ctx); err != nil {
		srv.Stop()
		s.started = false
		return fmt.Errorf("start speaker: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.learned = newLearnedRoutes(s.opts.Sink, s.opts.Debounce, s.opts.MaxDelay)
	s.refreshLocal()
	s.done = make(chan struct{})
	if err := s.watch(wctx); err != nil {
		cancel()
		srv.Stop()
		s.started = false
		return fmt.Errorf("start speaker: %w", err)
	}
	go func() {
		defer close(s.done)
		s.learned.run(wctx)
	}()
	s.log.Info("bgp speaker started", "asn", g.ASN, "routerID", g.RouterID, "port", port, "restarting", restarting)
	return nil
}

// markStarted reports whether the marker existed and creates it.
func (s *Speaker) markStarted() (bool, error) {
	if s.opts.StateDir == "" {
		return false, nil
	}
	p := filepath.Join(s.opts.StateDir, restartMarker)
	_, err := os.Stat(p)
	existed := err == nil
	if err := os.MkdirAll(s.opts.StateDir, 0o755); err != nil {
		return existed, fmt.Errorf("create state dir: %w", err)
	}
	if err := os.WriteFile(p, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return existed, fmt.Errorf("write restart marker: %w", err)
	}
	return existed, nil
}

// Restarting reports whether this start was detected as a restart (the marker existed).
func (s *Speaker) Restarting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarting
}

// Stop shuts every session down with a NOTIFICATION (peers without RFC 8538 drop our routes at
// once), stops the server and removes the restart marker: the next start is a fresh one. A
// daemon that restarts and wants graceful restart should exit without calling Stop: the kernel
// then closes the sockets, peers keep our routes, and the marker makes the next start a restart.
func (s *Speaker) Stop() { s.stop(true) }

func (s *Speaker) stop(removeMarker bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return
	}
	if removeMarker && s.opts.StateDir != "" {
		if err := os.Remove(filepath.Join(s.opts.StateDir, restartMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove restart marker", "error", err)
		}
	}
	s.cancel()
	<-s.done
	s.srv.Stop()
	s.started = false
	s.peers = map[netip.Addr]Peer{}
	s.advertised = map[netip.Prefix]Advert{}
	s.log.Info("bgp speaker stopped")
}

// Learned returns a copy of the current learned routes (after local next hops are removed).
func (s *Speaker) Learned() map[netip.Prefix][]netip.Addr {
	s.mu.Lock()
	l := s.learned
	s.mu.Unlock()
	if l == nil {
		return map[netip.Prefix][]netip.Addr{}
	}
	return l.snapshot()
}

// SetLocalAddresses replaces Global.LocalAddresses on a running speaker: they only feed the
// learned-route filter, so a change of the Node's addresses needs no restart (and no session reset).
func (s *Speaker) SetLocalAddresses(addrs []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.global.LocalAddresses = slices.Clone(addrs)
	s.refreshLocal()
}

// refreshLocal republishes this host's addresses for the learned-route filter. Called with mu
// held; the filter reads the published set without locking so the watch never waits on mu.
func (s *Speaker) refreshLocal() {
	m := map[netip.Addr]bool{s.global.RouterID: true}
	for _, a := range s.global.ListenAddresses {
		m[a] = true
	}
	for _, a := range s.global.LocalAddresses {
		m[a] = true
	}
	for _, p := range s.peers {
		if p.SourceAddress.IsValid() {
			m[p.SourceAddress] = true
		}
	}
	if s.learned != nil {
		s.learned.setLocal(m)
	}
}

func checkLoopback(hostport string) error { return CheckDebugListen(hostport) }

// CheckDebugListen checks a gRPC debug listen address as Start will: a loopback address with a
// port, so that a command refuses a bad one up front instead of a speaker that never starts.
func CheckDebugListen(hostport string) error {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return fmt.Errorf("parse debug listen address %q: %w", hostport, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("debug listen address %q is not on loopback", hostport)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("debug listen address %q: port 0", hostport)
	}
	return nil
}

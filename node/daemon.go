package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// Defaults of the daemon's paths (CONVENTIONS.md).
const (
	DefaultSocket   = "/var/run/terrace/node.sock"
	DefaultStateDir = "/var/lib/terrace"
	DefaultRunDir   = "/var/run/terrace"
)

// Config is the resolved configuration of `terrace-node run`.
type Config struct {
	NodeName   string // "" => host name
	IPv4       string // address or CIDR; "" or "autodetect" => IPv4Method; "none" => no IPv4
	IPv6       string // as IPv4; "" => IPv6 only when IPv6Method is set
	IPv4Method string // first-found (default), interface=REGEX, can-reach=ADDR
	IPv6Method string
	ASNumber   string // "" => inherit; plain or dotted (1.10)
	Etcd       kv.Config
	Socket     string
	StateDir   string
	RunDir     string
	Version    string
	Lister     Lister      // nil => SystemLister
	Components []Component // run once the node is registered
	// CNI, when set, makes the runner of whole CNI commands from the node's name and its
	// datastore API (served in memory); without it the plugin does the work itself.
	CNI func(node string, datastore http.Handler) CommandRunner
}

// drainTimeout bounds how long stopping waits for CNI commands in flight: a command's own budget
// is 45 s plus its network's policy wait, which is rarely more than a few seconds.
const drainTimeout = 60 * time.Second

// Component is a part of the daemon (felix, the BGP speaker) that runs once the node is registered.
type Component interface {
	Name() string
	// Run blocks until ctx is done; an error stops the daemon.
	Run(ctx context.Context, env ComponentEnv) error
}

// ComponentEnv is what a component gets from the daemon.
type ComponentEnv struct {
	Client *datastore.Client
	Node   *api.Node
	Board  *StatusBoard
	Log    *slog.Logger
}

// Choose resolves the node's name and addresses, logging what was chosen and why.
func (c Config) Choose(log *slog.Logger) (Registration, error) {
	reg := Registration{Name: c.NodeName, Time: time.Now()}
	if reg.Name == "" && c.StateDir != "" {
		// The name this host registered before wins over its host name, as in Calico: a renamed
		// host must not become a new node and orphan every pod it runs.
		file := filepath.Join(c.StateDir, "nodename")
		if b, err := os.ReadFile(file); err == nil {
			if n := strings.TrimSpace(string(b)); n != "" {
				reg.Name = n
				log.Info("node name taken from the name registered before", "node", n, "file", file)
				if h, err := os.Hostname(); err == nil && strings.ToLower(h) != n {
					log.Warn("the host name differs from the node name registered before; keeping the node name (give --node-name or remove the file to change it)",
						"node", n, "hostname", h, "file", file)
				}
			}
		}
	}
	if reg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return reg, fmt.Errorf("determine node name: %w", err)
		}
		reg.Name = strings.ToLower(h)
		log.Info("node name taken from the host name", "node", reg.Name)
	}
	l := c.Lister
	if l == nil {
		l = SystemLister{}
	}
	var errs []error
	var err error
	if reg.IPv4, err = choose(l, c.IPv4, c.IPv4Method, 4); err != nil {
		errs = append(errs, err)
	}
	if reg.IPv6, err = choose(l, c.IPv6, c.IPv6Method, 6); err != nil {
		errs = append(errs, err)
	}
	if c.ASNumber != "" {
		as, err := api.ParseASNumber(c.ASNumber)
		if err != nil {
			errs = append(errs, fmt.Errorf("parse --as-number: %w", err))
		}
		reg.ASNumber = &as
	}
	if err := errors.Join(errs...); err != nil {
		return reg, err
	}
	for _, ch := range []struct {
		fam Family
		c   Choice
	}{{4, reg.IPv4}, {6, reg.IPv6}} {
		log.Info(fmt.Sprintf("IPv%d address chosen", ch.fam), "address", prefixString(ch.c.Addr),
			"method", ch.c.Method, "interface", ch.c.Interface, "reason", ch.c.Reason)
	}
	return reg, nil
}

// Check refuses configuration that is wrong on any host: malformed addresses, methods and AS
// numbers, and a node name the datastore would refuse. The command reports these as bad usage
// (exit 2) before it looks at interfaces or waits for etcd, where they would only show up later
// as runtime failures.
func (c Config) Check() error {
	var errs []error
	families := 0 // address families that can yield an address
	for _, f := range []struct {
		fam          Family
		addr, method string
	}{{4, c.IPv4, c.IPv4Method}, {6, c.IPv6, c.IPv6Method}} {
		switch strings.ToLower(f.addr) {
		case "none":
		case "", "autodetect":
			m, err := ParseMethod(f.method)
			switch {
			case err != nil:
				errs = append(errs, err)
			case m.Kind == MethodCanReach && (f.fam == 4) != m.target.Is4():
				errs = append(errs, fmt.Errorf("parse IPv%d autodetection method %q: the can-reach target is not an IPv%d address", f.fam, f.method, f.fam))
			case m.Kind != MethodNone && (f.fam == 4 || f.addr != "" || f.method != ""):
				families++
			}
		default:
			families++
			if _, err := parseManual(f.addr, f.fam); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if families == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no address family is enabled: a node needs an IPv4 or IPv6 address (see --ip, --ip6)"))
	}
	// Validate a Node holding just the name and AS number, so the rules are the datastore's own.
	n := &api.Node{Metadata: api.ObjectMeta{Name: c.NodeName}}
	if n.Metadata.Name == "" {
		// The name Choose will take, so a host name the datastore would refuse is bad usage
		// now rather than a failed registration later.
		if h, err := os.Hostname(); err == nil {
			n.Metadata.Name = strings.ToLower(h)
		} else {
			n.Metadata.Name = "host-name-chosen-later"
		}
	}
	if c.ASNumber != "" {
		as, err := api.ParseASNumber(c.ASNumber)
		if err != nil {
			errs = append(errs, fmt.Errorf("parse --as-number: %w", err))
		} else {
			n.Spec.BGP = &api.NodeBGPSpec{ASNumber: &as}
		}
	}
	if err := api.Validate(n); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("check node configuration: %w", err)
	}
	return nil
}

func choose(l Lister, addr, method string, fam Family) (Choice, error) {
	switch strings.ToLower(addr) {
	case "none":
		return Choice{Method: MethodNone, Reason: fmt.Sprintf("IPv%d disabled by the operator", fam)}, nil
	case "", "autodetect":
		if addr == "" && fam == 6 && method == "" {
			return Choice{Method: MethodNone, Reason: "IPv6 not requested (no --ip6 or --ip6-autodetection-method)"}, nil
		}
		m, err := ParseMethod(method)
		if err != nil {
			return Choice{}, err
		}
		return Detect(l, m, fam)
	}
	return Manual(l, addr, fam)
}

func optPrefix(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return "none"
	}
	return p.String()
}

// registerRetrying registers the node, waiting out an etcd that answered Connect but not a later
// request (an election, a timeout): that must not end the daemon. A Node the datastore refuses
// as invalid is final.
func registerRetrying(ctx context.Context, s NodeStore, reg Registration, log *slog.Logger) (*api.Node, error) {
	delay := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := Register(ctx, s, reg, log)
		var ve *api.ValidationError
		final := errors.As(err, &ve) || errors.Is(err, datastore.ErrUndecodable) ||
			(!reg.IPv4.Addr.IsValid() && !reg.IPv6.Addr.IsValid())
		if err == nil || ctx.Err() != nil || final {
			return n, err
		}
		log.Warn("node registration failed; retrying", "node", reg.Name, "attempt", attempt, "retry_in", delay.String(), "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// Connect opens the datastore, retrying with capped exponential backoff until etcd answers or ctx
// is done: at boot the node often starts before etcd, and that must not be fatal. board, if set,
// shows each attempt's outcome.
func Connect(ctx context.Context, cfg kv.Config, log *slog.Logger, board *StatusBoard) (*kv.Store, error) {
	delay := 500 * time.Millisecond
	endpoints := strings.Join(cfg.Endpoints, ",")
	for attempt := 1; ; attempt++ {
		s, err := kv.Open(ctx, cfg, log)
		if err == nil {
			log.Info("connected to etcd", "endpoints", endpoints, "attempts", attempt)
			if board != nil {
				board.SetDatastore("connected", endpoints)
			}
			return s, nil
		}
		if board != nil {
			board.SetDatastore("connecting", fmt.Sprintf("%s: attempt %d failed: %v", endpoints, attempt, err))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to etcd: %w", ctx.Err())
		}
		log.Warn("etcd not reachable yet; retrying", "endpoints", strings.Join(cfg.Endpoints, ","),
			"attempt", attempt, "retry_in", delay.String(), "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to etcd: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// datastorePing is how often a running daemon checks that etcd still answers, for its status.
const datastorePing = 10 * time.Second

// watchDatastore keeps the board's datastore line true after start: "unreachable" with the error
// while etcd does not answer, "connected" again once it does. The components notice on their own
// (watches, failed writes); this is for the operator reading `terracectl node status`.
func watchDatastore(ctx context.Context, s *kv.Store, board *StatusBoard, endpoints string, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	up := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.Ping(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			board.SetDatastore("unreachable", fmt.Sprintf("%s: %v", endpoints, err))
			if up {
				log.Warn("etcd stopped answering", "endpoints", endpoints, "err", err)
			}
			up = false
		case !up:
			board.SetDatastore("connected", endpoints)
			log.Info("etcd answers again", "endpoints", endpoints)
			up = true
		}
	}
}

// Run is `terrace-node run`: it returns nil when ctx is cancelled (SIGTERM) after a clean stop.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	for _, d := range []string{cfg.StateDir, cfg.RunDir} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	reg, err := cfg.Choose(log)
	if err != nil {
		return fmt.Errorf("choose node addresses: %w", err)
	}
	ad := reg.Autodetection()
	board := NewStatusBoard(Status{
		NodeName: reg.Name, IPv4: optPrefix(reg.IPv4.Addr), IPv6: optPrefix(reg.IPv6.Addr), StartTime: reg.Time.UTC(), Version: cfg.Version,
		Autodetection: AddressInfo{Method: ad.Method, IPv4: ad.IPv4, IPv6: ad.IPv6, Interface: ad.Interface, Reason: ad.Reason},
	})
	// Claim the socket before touching the datastore: a second daemon started by mistake on this
	// host (perhaps with other addresses) must stop here, not after rewriting the Node resource
	// that the running one registered. Serving at once also lets `terracectl node status` answer
	// while etcd is still unreachable.
	ln, err := ListenSocket(cfg.Socket, log)
	if err != nil {
		return err
	}
	log.Info("serving local API", "socket", cfg.Socket)

	// The server and the components run until Run stops them, not until the signal: CNI commands in
	// flight must finish with the local API, the datastore and felix (a policy wait) still there.
	// Waiting for etcd and registering stop at the signal itself.
	stop := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(cfg.Components)+2) // the server, the components, the name's keeper
	wg.Add(1)
	// The CNI plugin's commands and datastore work are served by this warm process (see
	// ipamapi.go); it answers "unavailable" until etcd does.
	dsAPI := NewDatastoreAPI(reg.Name, log)
	if cfg.CNI != nil {
		dsAPI.SetCommandRunner(cfg.CNI(reg.Name, dsAPI.Handler(http.NotFoundHandler())))
	}
	go func() { defer wg.Done(); errc <- ServeHandler(ctx, ln, dsAPI.Handler(board.Handler()), log) }()
	// finish stops whatever runs, and returns err joined with what the goroutines reported.
	finish := func(err error) error {
		cancel()
		wg.Wait()
		close(errc)
		errs := []error{err}
		for e := range errc {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	}

	// Every configured component is on the board from the start, so `node status` tells one
	// that waits for etcd from one that is switched off.
	board.SetDatastore("connecting", strings.Join(cfg.Etcd.Endpoints, ","))
	for _, comp := range cfg.Components {
		board.SetComponent(comp.Name(), ComponentStatus{State: "waiting", Detail: "waiting for the datastore"})
	}
	store, err := Connect(stop, cfg.Etcd, log, board)
	if err != nil {
		if stop.Err() != nil {
			log.Info("stopped before etcd answered")
			return finish(nil)
		}
		return finish(err)
	}
	defer store.Close()
	id, err := instanceID(cfg.StateDir)
	if err != nil {
		return finish(err)
	}
	// Before registering: the Node must not be rewritten with this host's addresses while another
	// host runs under the name.
	claim := newNameClaim(store, reg, id, log)
	held, err := claim.wait(stop, board, strings.Join(cfg.Etcd.Endpoints, ","))
	if err != nil {
		if stop.Err() != nil {
			log.Info("stopped before the node name was free")
			return finish(nil)
		}
		return finish(err)
	}
	// Deferred after store.Close, so it runs before it; every return below stops what runs first.
	defer claim.release(log)
	wg.Add(2)
	go func() { defer wg.Done(); claim.keep(ctx, held, errc) }()
	go func() {
		defer wg.Done()
		watchDatastore(ctx, store, board, strings.Join(cfg.Etcd.Endpoints, ","), datastorePing, log)
	}()
	client := datastore.New(store, log)
	n, err := registerRetrying(stop, client, reg, log)
	if err != nil {
		if stop.Err() != nil {
			return finish(nil)
		}
		return finish(err)
	}
	dsAPI.SetDatastore(store, client)
	if cfg.StateDir != "" {
		// The CNI plugin without an agent, and terrace-node's next start without --node-name,
		// read the node name from here, as Calico's do. Written whole or not at all: a torn file
		// would name another node.
		if err := writeFileAtomic(filepath.Join(cfg.StateDir, "nodename"), []byte(reg.Name), 0o644); err != nil {
			return finish(fmt.Errorf("write node name file: %w", err))
		}
	}
	for _, comp := range cfg.Components {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := ComponentEnv{Client: client, Node: n, Board: board, Log: log.With("component", comp.Name())}
			if err := comp.Run(ctx, env); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("run %s: %w", comp.Name(), err)
				return
			}
			errc <- nil
		}()
	}
	var runErr error
	select {
	case <-stop.Done():
		log.Info("stopping")
	case runErr = <-errc:
		if runErr == nil {
			runErr = errors.New("run node: a component stopped unexpectedly")
		}
		log.Error("stopping after failure", "err", runErr)
	}
	// New CNI commands are refused from here (the plugin then does them itself); those in flight
	// finish, or undo what they did, before anything they use goes away.
	dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
	if err := dsAPI.DrainCommands(dctx); err != nil {
		log.Error("stopping with CNI commands still running", "err", err)
	}
	dcancel()
	if err := finish(runErr); err != nil {
		return err
	}
	log.Info("stopped cleanly")
	return nil
}

// writeFileAtomic replaces path with data through a temporary file in the same directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

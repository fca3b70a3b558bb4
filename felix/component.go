package felix

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/felix/dataplane/fastpath"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/felix/dataplane/sysctl"
	"github.com/terracenet/terrace/internal/loglevel"
	"github.com/terracenet/terrace/node"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DataplaneConfig says how to reach one network namespace's kernel.
type DataplaneConfig struct {
	Cmd     cmdrun.Runner  // runs ipset and iptables-*; cmdrun.Exec{} for this namespace
	Netlink routes.Netlink // *netlink.Handle of the namespace
	Sysctl  sysctl.FS      // nil: interface settings are not managed
	// Backend is the iptables back end; "" detects it once (iptables.DetectBackend).
	Backend iptables.Backend
	IPv6    bool
	// HostSysctls also switches on forwarding for the whole namespace.
	HostSysctls bool
	// FastPath, when set, is the loaded fast path (fastpath.LoadBPF); it needs HostSysctls,
	// which then also make conntrack liberal about TCP windows (see fastpath.Sysctls).
	FastPath fastpath.Kernel
	Logger   *slog.Logger
}

// NewDataplane builds the writers for one namespace: ipsets, filter and nat of each IP version,
// routes of protocol 80 and, with a sysctl FS, interface settings.
func NewDataplane(ctx context.Context, cfg DataplaneConfig) (Dataplane, iptables.Backend, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backend := cfg.Backend
	if backend == "" {
		backend = iptables.DetectBackend(ctx, cfg.Cmd)
	}
	dp := Dataplane{
		IPSets: ipsets.New(cfg.Cmd, ipsets.Options{Logger: log.With("writer", "ipsets"), DeferDeletions: true}),
		Tables: map[calc.TableID]Table{},
	}
	versions := []int{4}
	if cfg.IPv6 {
		versions = append(versions, 6)
	}
	for _, v := range versions {
		run := iptables.NewExecRunner(cfg.Cmd, backend, v)
		tables := []string{"filter", "nat"}
		if v == 6 {
			tables = append(tables, "raw") // the IPv6 workload source check (calc.ChainPrerouting)
		}
		for _, t := range tables {
			id := calc.TableID{IPVersion: v, Table: t}
			dp.Tables[id] = iptables.NewTable(t, run, iptables.Options{Logger: log.With("writer", tableWriterName(id))})
		}
	}
	if !cfg.IPv6 {
		cleanIPv6(ctx, cfg.Cmd, backend, log)
	}
	dp.AfterProgrammed = func(ctx context.Context) { cleanOtherBackend(ctx, cfg.Cmd, backend, log) }
	rw, err := routes.New(cfg.Netlink, routes.Config{Protocol: routes.ProtocolTerrace, Logger: log.With("writer", "routes")})
	if err != nil {
		return Dataplane{}, "", fmt.Errorf("build dataplane: %w", err)
	}
	dp.Routes = rw
	if cfg.FastPath != nil && (cfg.Sysctl == nil || !cfg.HostSysctls) {
		return Dataplane{}, "", errors.New("build dataplane: the fast path needs the host's sysctls managed (conntrack must be liberal about TCP windows)")
	}
	if cfg.Sysctl != nil {
		m := sysctl.New(cfg.Sysctl, log.With("writer", "sysctl"))
		if cfg.HostSysctls {
			host := sysctl.HostSettings(true, cfg.IPv6)
			if cfg.FastPath != nil {
				// First: the settings are written in order up to the first failure, and the
				// fast path attaches nothing without this one.
				host = append(fastpath.Sysctls(), host...)
			}
			m.SetHost(host)
		}
		dp.Sysctls = m
	}
	if cfg.FastPath != nil {
		dp.FastPath = fastpath.New(cfg.FastPath, log.With("writer", "fastpath"))
	}
	return dp, backend, nil
}

// cleanIPv6 removes Terrace's ip6tables chains and jumps left by an earlier run that programmed
// IPv6, when this one does not: nothing else would, and their dispatch chains would go on
// dropping the IPv6 traffic of every pod created since (and hold on to the trc6- sets the ipset
// writer means to destroy). Failures are logged: they must not stop the IPv4 dataplane.
func cleanIPv6(ctx context.Context, cmd cmdrun.Runner, backend iptables.Backend, log *slog.Logger) {
	cleanTables(ctx, iptables.NewExecRunner(cmd, backend, 6), []string{"filter", "nat", "raw"},
		"ip6tables-cleanup-", "could not remove Terrace's ip6tables rules left by an earlier run", log)
}

// cleanOtherBackend removes Terrace's chains and jumps from the iptables back end it does not
// use: an earlier run's, before the host's tools (and so detection) moved to the other one. Both
// back ends filter every packet, so those rules would go on enforcing old policy beside the new
// (their dispatch chains drop the traffic of pods they do not know) and keep Terrace's ipsets in
// use. It runs once the chosen back end is programmed, so the host is never without policy.
func cleanOtherBackend(ctx context.Context, cmd cmdrun.Runner, backend iptables.Backend, log *slog.Logger) {
	other := backend.Other()
	for _, v := range []int{4, 6} {
		cleanTables(ctx, iptables.NewExecRunner(cmd, other, v), []string{"filter", "nat", "raw"},
			fmt.Sprintf("%s%d-cleanup-", other, v), "could not remove Terrace's rules from the iptables back end not in use", log)
	}
}

// cleanTables empties Terrace's part of each table the runner reaches. Only Terrace's objects
// go; a binary or table the system does not have, or one holding nothing of Terrace's, is
// nothing to clean (and costs no restore).
//
// One save of every table comes first, and the tables are read one by one only when it holds
// something of Terrace's: naming a legacy table (iptables-legacy-save -t filter) creates it in
// the namespace, and an empty legacy table still hooks every packet, so a host that only ever
// used nft would pay for legacy filter, nat and raw on each packet for ever after (and
// iptables-nft-save would warn about them).
func cleanTables(ctx context.Context, run *iptables.ExecRunner, tables []string, writer, warning string, log *slog.Logger) {
	if _, err := exec.LookPath(run.RestoreBin); err != nil {
		return
	}
	if all, err := run.Cmd.Run(ctx, nil, run.SaveBin); err != nil || !holdsOwnRules(all) {
		return
	}
	for _, t := range tables {
		out, err := run.Save(ctx, t)
		if err != nil || !holdsOwnRules(out) {
			continue
		}
		tb := iptables.NewTable(t, run, iptables.Options{Logger: log.With("writer", writer+t)})
		tb.SetInSync() // the desired state, nothing, is complete
		if err := tb.Apply(ctx); err != nil {
			log.Warn(warning, "table", t, "restore", run.RestoreBin, "err", err)
			continue
		}
		log.Info("removed Terrace's rules left by an earlier run", "table", t, "restore", run.RestoreBin)
	}
}

// holdsOwnRules says whether an iptables-save output has any of Terrace's chains or rules.
func holdsOwnRules(save []byte) bool {
	for _, l := range strings.Split(string(save), "\n") {
		if strings.HasPrefix(l, ":"+iptables.ChainPrefix) || (strings.HasPrefix(l, "-A ") && iptables.IsOwnRuleLine(l)) {
			return true
		}
	}
	return false
}

// ComponentConfig is felix's part of terrace-node's configuration.
type ComponentConfig struct {
	HealthListen  string // "" disables
	MetricsListen string // "" disables
	// Refresh is how often each writer class re-reads the kernel (a zero field: the default,
	// < 0: never); FelixConfiguration's three refresh intervals set it field by field unless
	// Explicit.Refresh.
	Refresh       RefreshIntervals
	ApplyInterval time.Duration
	// IPv6 says whether ip6tables is programmed too: IPv6Auto, IPv6On or IPv6Off. It is switched off
	// when ip6tables-restore is missing. FelixConfiguration ipv6Support sets it unless Explicit.
	IPv6 string
	// Backend is the iptables back end: BackendAuto (detected), BackendLegacy or BackendNFT;
	// FelixConfiguration iptablesBackend sets it unless Explicit.
	Backend string
	// FastPath is FastPathAuto, FastPathOn or FastPathOff (--felix-fast-path).
	FastPath string
	// LogLevel is felix's log level (terrace-node's --log-level); FelixConfiguration
	// logSeverityScreen changes it while felix runs unless Explicit.LogLevel.
	LogLevel string
	// Explicit marks settings the operator gave; the others may come from FelixConfiguration.
	Explicit Explicit
}

// IPv6 modes of ComponentConfig.IPv6.
const (
	IPv6Auto = "auto"
	IPv6On   = "true"
	IPv6Off  = "false"
)

// WantIPv6 decides whether to program IPv6. In auto mode a node without an IPv6 address gets no
// IPv6 tables: it exchanges no IPv6 routes, and programming tens of thousands of ip6tables rules
// nobody can match costs about a second at start and on every policy change.
func WantIPv6(mode string, n *api.Node) (bool, string) {
	switch mode {
	case IPv6On:
		return true, "requested"
	case IPv6Off:
		return false, "disabled"
	}
	if n != nil && n.Spec.BGP != nil && n.Spec.BGP.IPv6Address != "" {
		return true, "the node has IPv6 address " + n.Spec.BGP.IPv6Address
	}
	return false, "the node has no IPv6 address"
}

// Fast path modes of ComponentConfig.FastPath.
const (
	FastPathAuto = "auto" // on where the kernel can (BTF, conntrack kfuncs, tcx: Linux 6.6)
	FastPathOn   = "true" // felix does not start without it
	FastPathOff  = "false"
)

// ParseFastPathMode checks a --felix-fast-path value.
func ParseFastPathMode(s string) (string, error) {
	switch s {
	case FastPathAuto, FastPathOn, FastPathOff:
		return s, nil
	}
	return "", fmt.Errorf("parse fast path mode %q: want auto, true or false", s)
}

// loadFastPath loads the fast path as the mode asks; nil means off.
func loadFastPath(mode string, ns *netns.NsHandle, log *slog.Logger) (*fastpath.BPF, error) {
	if mode == FastPathOff {
		log.Info("felix fast path off: every forwarded packet goes through the kernel's IP stack and iptables")
		return nil, nil
	}
	k, err := fastpath.LoadBPF(ns)
	if err != nil {
		if mode == FastPathOn {
			return nil, fmt.Errorf("start felix: %w", err)
		}
		log.Warn("felix fast path unavailable: every forwarded packet goes through the kernel's IP stack and iptables", "err", err)
		return nil, nil
	}
	return k, nil
}

// Back end choices of ComponentConfig.Backend.
const (
	BackendAuto   = "auto"
	BackendLegacy = string(iptables.BackendLegacy)
	BackendNFT    = string(iptables.BackendNFT)
)

// ParseBackend checks a --felix-iptables-backend value; Calico's spellings (NFT, Legacy, Auto)
// are taken too.
func ParseBackend(s string) (string, error) {
	switch l := strings.ToLower(s); l {
	case BackendAuto, BackendLegacy, BackendNFT:
		return l, nil
	}
	return "", fmt.Errorf("parse iptables back end %q: want auto, legacy or nft", s)
}

// ParseIPv6Mode checks a --felix-ipv6 value.
func ParseIPv6Mode(s string) (string, error) {
	switch s {
	case IPv6Auto, IPv6On, IPv6Off:
		return s, nil
	}
	return "", fmt.Errorf("parse IPv6 mode %q: want auto, true or false", s)
}

// Component runs felix inside terrace-node on the host's own namespace.
type Component struct {
	cfg ComponentConfig
	// kernel, when set, replaces this process's namespace (tests run the component against a
	// namespace of their own).
	kernel *componentKernel
}

// componentKernel is how the component reaches a namespace other than its own.
type componentKernel struct {
	cmd     cmdrun.Runner
	netlink *netlink.Handle
	ns      *netns.NsHandle // for link updates
	sysctl  sysctl.FS
	backend iptables.Backend
	listen  func(addr string) (net.Listener, error)
}

// NewComponent returns felix as a node.Component.
func NewComponent(cfg ComponentConfig) *Component { return &Component{cfg: cfg} }

// Config is the configuration the component was made with (before FelixConfiguration).
func (c *Component) Config() ComponentConfig { return c.cfg }

// Name implements node.Component.
func (c *Component) Name() string { return "felix" }

// Run implements node.Component. A FelixConfiguration change of a setting the dataplane is built
// with makes it build the dataplane again and go on.
func (c *Component) Run(ctx context.Context, env node.ComponentEnv) error {
	var next *ComponentConfig
	var wait time.Duration
	for {
		started := time.Now()
		err := c.run(ctx, env, next)
		var restart *RestartError
		if !errors.As(err, &restart) || ctx.Err() != nil {
			return err
		}
		next = &restart.next
		// Rebuilds in quick succession (FelixConfiguration flapping) wait 1, 2, 4 … 30 s.
		if time.Since(started) > time.Minute {
			wait = 0
		}
		env.Log.Info("felix restarting to apply a FelixConfiguration change", "setting", restart.Setting,
			"old", restart.Old, "new", restart.New, "after", wait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(max(2*wait, time.Second), 30*time.Second)
	}
}

// run builds the dataplane and runs the agent once; next, when set, is the configuration a
// FelixConfiguration change asked for (else it is read).
func (c *Component) run(ctx context.Context, env node.ComponentEnv, next *ComponentConfig) error {
	// The subscriptions below end with this run.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := env.Log
	base := c.cfg
	cc := base
	// Read now so the endpoints bind where they belong from the start; later changes reach the
	// agent through its syncer and are applied in place.
	// The defaults spelled out (effectiveConfig), so the agent compares later FelixConfiguration
	// changes against what was used.
	if next != nil {
		cc = *next
	} else {
		specs, err := readFelixConfig(ctx, env.Client, env.Node.Metadata.Name)
		if err != nil {
			log.Warn("using flag values for felix settings until FelixConfiguration arrives", "err", err)
		}
		cc = effectiveConfig(base, specs)
	}
	// Felix's own level over the node's log output, so logSeverityScreen can change it alone.
	level := new(slog.LevelVar)
	level.Set(parseLevel(cc.LogLevel, log))
	log, adjustable := loglevel.Derive(log, level)
	if !adjustable {
		level = nil
	}
	ipv6, why := WantIPv6(cc.IPv6, env.Node)
	log.Info("felix IPv6 dataplane", "enabled", ipv6, "mode", cc.IPv6, "reason", why)
	if withV6, _ := WantIPv6(base.IPv6, env.Node); withV6 && !ipv6 && cc.IPv6 != base.IPv6 {
		// Common in configurations carried over from Calico, and it leaves IPv6 pod traffic open.
		log.Warn("FelixConfiguration ipv6Support is false: no ip6tables policy on this node, IPv6 traffic of its workloads is not policed",
			"flag_mode", cmp.Or(base.IPv6, IPv6Auto))
	}
	if ipv6 {
		if _, err := exec.LookPath("ip6tables-restore"); err != nil {
			log.Warn("ip6tables-restore not found; programming IPv4 only", "err", err)
			ipv6 = false
		}
	}
	k := c.kernel
	if k == nil {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
		defer h.Close()
		k = &componentKernel{cmd: cmdrun.Exec{}, netlink: h, sysctl: sysctl.ProcFS{}}
	}
	wantBackend := k.backend
	if wantBackend == "" && cc.Backend != BackendAuto {
		wantBackend = iptables.Backend(cc.Backend)
	}
	fpk, err := loadFastPath(cc.FastPath, k.ns, log)
	if err != nil {
		return err
	}
	dpc := DataplaneConfig{
		Cmd: k.cmd, Netlink: k.netlink, Sysctl: k.sysctl, Backend: wantBackend, IPv6: ipv6, HostSysctls: true, Logger: log,
	}
	if fpk != nil {
		defer fpk.Close()
		dpc.FastPath = fpk
	}
	dp, backend, err := NewDataplane(ctx, dpc)
	if err != nil {
		return err
	}
	if fp, ok := dp.FastPath.(*fastpath.Writer); ok {
		// Its links would otherwise outlive this run until the collector closes them.
		defer fp.Close()
	}
	links, err := SubscribeLinks(ctx, k.ns, log)
	if err != nil {
		// Routes of re-created interfaces then come back at the pending poll or resync.
		log.Warn("no link updates", "err", err)
	}
	hostIfs, err := WatchHostInterfaces(ctx, k.ns, log)
	if err != nil {
		// Host endpoints given by expectedIPs alone then stay unplaced (unprotected).
		log.Warn("no host interface addresses: host endpoints without interfaceName are not enforced", "err", err)
	}
	nodeName := env.Node.Metadata.Name
	log.Info("felix dataplane", "iptables_backend", string(backend), "iptables_backend_mode", cc.Backend, "ipv6", ipv6,
		"fast_path", dp.FastPath != nil)
	board := env.Board
	if board != nil {
		board.SetComponent("felix", node.ComponentStatus{State: "starting", Detail: "waiting for the datastore"})
	}
	a := New(Config{
		NodeName: nodeName, Client: env.Client, LinkEvents: links, HostInterfaces: hostIfs,
		ApplyInterval: cc.ApplyInterval, Refresh: cc.Refresh,
		HealthListen: cc.HealthListen, MetricsListen: cc.MetricsListen,
		FelixConfigBase: &base, IPv6Mode: cc.IPv6, Backend: cc.Backend, Listen: k.listen, LogLevel: level,
		Logger: log,
		OnState: func(st State) {
			if board == nil {
				return
			}
			state := "ready"
			if !st.Ready {
				state = "not-ready"
			}
			board.SetComponent("felix", node.ComponentStatus{State: state, Detail: st.Detail,
				Details: map[string]any{"iptablesBackend": string(backend), "ipv6": ipv6, "fastPath": dp.FastPath != nil}})
		},
	}, dp, calc.New(calc.Config{NodeName: nodeName, IPv6: ipv6}))
	return a.Run(ctx)
}

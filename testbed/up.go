package testbed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Testbed is a running fabric. Its state is persisted after every change, so a Testbed from Load in
// another process operates the same fabric.
type Testbed struct {
	st  *State
	log *slog.Logger
}

// State returns a copy of the testbed's recorded state.
func (tb *Testbed) State() State { return *tb.st }

// Options returns the options the testbed was built with.
func (tb *Testbed) Options() Options { return tb.st.Options }

// Hosts lists the host names (host-1 …).
func (tb *Testbed) Hosts() []string {
	var out []string
	for _, h := range tb.st.Hosts {
		out = append(out, h.Name)
	}
	return out
}

// Tors lists the ToR names.
func (tb *Testbed) Tors() []string {
	var out []string
	for _, t := range tb.st.Tors {
		out = append(out, t.Name)
	}
	return out
}

// Host returns one host's recorded state (addresses, socket, directories).
func (tb *Testbed) Host(name string) (HostState, error) {
	h, err := tb.st.host(name)
	if err != nil {
		return HostState{}, err
	}
	return *h, nil
}

// EtcdEndpoints is where every host reaches etcd (only from inside the testbed's namespaces).
func (tb *Testbed) EtcdEndpoints() []string { return []string{tb.st.Ctl.Endpoint} }

// Warnings lists what up could not do: a terrace-node that exited or never opened its socket, a
// fabric config not applied.
func (tb *Testbed) Warnings() []string { return tb.st.Warnings }

// Preflight checks what up needs before anything is created.
func Preflight(opts Options) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("the testbed needs root (network namespaces)"))
	}
	for _, bin := range []string{"ip", "bird", "birdc", "sysctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			errs = append(errs, fmt.Errorf("%s not found in PATH (Debian packages iproute2, bird2, procps; `make deps`)", bin))
		}
	}
	if !opts.NoEtcd {
		node := filepath.Join(opts.BinDir, "terrace-node")
		if st, err := os.Stat(node); err != nil || st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s is not an executable (run `make build`)", node))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("check prerequisites: %w: %w", ErrInvalid, err)
	}
	return nil
}

// Up builds a testbed. What an earlier run with the same state dir and prefix left behind (a crashed
// up, dead daemons, namespaces) is cleaned first; a finished testbed that still runs is an error.
// If anything fails half-way, everything built is torn down.
func Up(ctx context.Context, opts Options) (*Testbed, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := Preflight(opts); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("resolve state dir: %w", err)
	}
	opts.StateDir = abs
	unlock, err := lockDir(opts.StateDir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	// A finished testbed that still runs is refused; whatever a crashed or dead one left is cleaned.
	if old, err := loadState(opts.StateDir); err == nil && old.Ready {
		for _, p := range old.procs() {
			if p.Alive() {
				return nil, fmt.Errorf("start testbed: %w: a testbed is already up in %s (%s pid %d); run down first",
					ErrInvalid, opts.StateDir, filepath.Base(p.Argv[0]), p.Pid)
			}
		}
	}
	if err := cleanup(ctx, opts.StateDir, opts.Prefix, opts.Logger); err != nil {
		return nil, fmt.Errorf("clean leftovers: %w", err)
	}
	if err := claimPrefix(opts.Prefix, opts.StateDir); err != nil {
		return nil, fmt.Errorf("start testbed: %w", err)
	}

	tb := &Testbed{st: &State{Options: opts, Created: time.Now().UTC()}, log: opts.Logger}
	if err := tb.build(ctx); err != nil {
		// Tear down with a fresh context: the caller's may be what was cancelled.
		downErr := tb.teardown(context.WithoutCancel(ctx))
		return nil, errors.Join(fmt.Errorf("start testbed: %w", err), downErr)
	}
	return tb, nil
}

// Load attaches to the testbed recorded in stateDir.
func Load(stateDir string, log *slog.Logger) (*Testbed, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	st, err := loadState(stateDir)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st.Options.Logger = log
	return &Testbed{st: st, log: log}, nil
}

// update runs fn under the state lock with the freshest state from disk and saves it afterwards, so
// two processes operating the same testbed do not lose each other's changes.
func (tb *Testbed) update(fn func() error) error {
	unlock, err := lockDir(tb.st.Options.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	if fresh, err := loadState(tb.st.Options.StateDir); err == nil {
		fresh.Options.Logger = tb.log
		tb.st = fresh
	}
	fnErr := fn()
	return errors.Join(fnErr, tb.st.save())
}

func (tb *Testbed) build(ctx context.Context) error {
	o := tb.st.Options
	tb.st.Ctl = CtlState{NS: o.Prefix + "ctl", Dir: filepath.Join(o.StateDir, "ctl"),
		Endpoint: fmt.Sprintf("http://%s:%d", EtcdAddr, EtcdPort)}
	for t := 1; t <= o.Tors; t++ {
		name := TorName(t)
		dir := filepath.Join(o.StateDir, name)
		tb.st.Tors = append(tb.st.Tors, TorState{Name: name, NS: o.Prefix + name, Dir: dir,
			RouterID: torRouterID(t).String(), AS: o.TorAS, Config: dir + "/bird.conf",
			Inject: dir + "/inject.conf", Socket: dir + "/bird.ctl"})
	}
	for i := 1; i <= o.Hosts; i++ {
		tb.st.Hosts = append(tb.st.Hosts, tb.planHost(i))
	}
	if err := tb.st.save(); err != nil {
		return err
	}
	// Namespaces and links first; daemons after, each persisted as soon as it runs so that a
	// failure (or a crash of this process) leaves a state that down can clean.
	if err := tb.buildNamespaces(ctx); err != nil {
		return err
	}
	if err := tb.st.save(); err != nil {
		return err
	}
	if !o.NoEtcd {
		if err := tb.startEtcd(ctx); err != nil {
			return err
		}
		if err := tb.st.save(); err != nil {
			return err
		}
		tb.applyFabricConfig(ctx)
	}
	for i := range tb.st.Tors {
		t := &tb.st.Tors[i]
		if err := tb.writeTorConfig(t); err != nil {
			return err
		}
		err := tb.startBird(ctx, t)
		if serr := tb.st.save(); serr != nil {
			return errors.Join(err, serr)
		}
		if err != nil {
			return err
		}
	}
	if err := tb.writeCNIConfig(); err != nil {
		return err
	}
	if !o.NoNode {
		for i := range tb.st.Hosts {
			if err := tb.startNode(&tb.st.Hosts[i]); err != nil {
				return err
			}
		}
		if err := tb.st.save(); err != nil {
			return err
		}
		tb.waitNodes(ctx)
	}
	tb.st.Ready = true
	return tb.st.save()
}

func (tb *Testbed) planHost(i int) HostState {
	o := tb.st.Options
	name := HostName(i)
	dir := filepath.Join(o.StateDir, name)
	h := HostState{Name: name, Index: i, NS: o.Prefix + name, Dir: dir,
		ConfigDir: dir + "/net.d", StateDir: dir + "/state", RunDir: dir + "/run",
		Socket: dir + "/run/node.sock", LogFile: dir + "/node.log", CtlAddr: ctlHostAddr(i).String()}
	for t := 1; t <= o.Tors; t++ {
		tor, host := uplinkAddrs(t, i)
		u := Uplink{Tor: TorName(t), HostIf: TorName(t), TorIf: name, HostAddr: host.String(), TorAddr: tor.String()}
		if o.IPv6 {
			tor6, host6 := uplinkAddrs6(t, i)
			u.HostAddr6, u.TorAddr6 = host6.String(), tor6.String()
		}
		h.Uplinks = append(h.Uplinks, u)
	}
	// The node's address is its tor-1 uplink: reachable from every host through the ToRs.
	h.IPv4 = h.Uplinks[0].HostAddr
	h.IPv6 = h.Uplinks[0].HostAddr6
	return h
}

func (tb *Testbed) buildNamespaces(ctx context.Context) error {
	o := tb.st.Options
	addNS := func(ns string) error {
		if err := addNamespace(ctx, ns); err != nil {
			return err
		}
		tb.st.Namespaces = append(tb.st.Namespaces, ns)
		return nil
	}
	fwd := []string{"net.ipv4.ip_forward=1"}
	if o.IPv6 {
		// Without keep_addr_on_down a link-down fault would delete the uplink's IPv6 addresses.
		fwd = append(fwd, "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.all.keep_addr_on_down=1",
			"net.ipv6.conf.default.keep_addr_on_down=1")
	}
	ctl := tb.st.Ctl
	if err := addNS(ctl.NS); err != nil {
		return err
	}
	if err := ipIn(ctx, ctl.NS, "addr", "add", EtcdAddr+"/32", "dev", "lo"); err != nil {
		return err
	}
	for _, t := range tb.st.Tors {
		if err := addNS(t.NS); err != nil {
			return err
		}
		if err := sysctlIn(ctx, t.NS, fwd...); err != nil {
			return err
		}
		if err := ipIn(ctx, t.NS, "addr", "add", t.RouterID+"/32", "dev", "lo"); err != nil {
			return err
		}
	}
	for _, h := range tb.st.Hosts {
		if err := addNS(h.NS); err != nil {
			return err
		}
		if err := sysctlIn(ctx, h.NS, fwd...); err != nil {
			return err
		}
		if err := tb.wireHost(ctx, h); err != nil {
			return fmt.Errorf("wire %s: %w", h.Name, err)
		}
		for _, d := range []string{h.ConfigDir, h.StateDir, h.RunDir} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("create host dir: %w", err)
			}
		}
	}
	for _, d := range append([]string{ctl.Dir}, dirsOf(tb.st.Tors)...) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create dir: %w", err)
		}
	}
	return nil
}

func dirsOf(ts []TorState) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Dir)
	}
	return out
}

// wireHost creates the host's control link to ctl and its uplinks to every ToR. Each veth is created
// in the host namespace with its peer placed directly in the other namespace.
func (tb *Testbed) wireHost(ctx context.Context, h HostState) error {
	ctl := tb.st.Ctl
	hostIf := "host-" + strconv.Itoa(h.Index)
	if err := ipIn(ctx, h.NS, "link", "add", "ctl", "type", "veth", "peer", "name", hostIf, "netns", ctl.NS); err != nil {
		return err
	}
	if err := ipBatch(ctx, h.NS, []string{
		"addr add " + h.CtlAddr + "/32 dev ctl",
		"link set ctl up",
		"route add " + EtcdAddr + "/32 dev ctl src " + h.CtlAddr,
	}); err != nil {
		return err
	}
	if err := ipBatch(ctx, ctl.NS, []string{
		"link set " + hostIf + " up",
		"route add " + h.CtlAddr + "/32 dev " + hostIf + " src " + EtcdAddr,
	}); err != nil {
		return err
	}
	var hostCmds []string
	var gw4, gw6 []string
	for _, u := range h.Uplinks {
		t, err := tb.st.tor(u.Tor)
		if err != nil {
			return err
		}
		if err := ipIn(ctx, h.NS, "link", "add", u.HostIf, "type", "veth", "peer", "name", u.TorIf, "netns", t.NS); err != nil {
			return err
		}
		torCmds := []string{"addr add " + u.TorAddr + "/31 dev " + u.TorIf, "link set " + u.TorIf + " up"}
		hostCmds = append(hostCmds, "addr add "+u.HostAddr+"/31 dev "+u.HostIf, "link set "+u.HostIf+" up")
		if u.HostAddr6 != "" {
			torCmds = append(torCmds, "addr add "+u.TorAddr6+"/64 dev "+u.TorIf+" nodad")
			hostCmds = append(hostCmds, "addr add "+u.HostAddr6+"/64 dev "+u.HostIf+" nodad")
			gw6 = append(gw6, u.TorAddr6+" dev "+u.HostIf)
		}
		if err := ipBatch(ctx, t.NS, torCmds); err != nil {
			return err
		}
		gw4 = append(gw4, u.TorAddr+" dev "+u.HostIf)
		// The rest of each ToR's /24 (the other hosts' uplinks) is behind that ToR only.
		hostCmds = append(hostCmds, "route add "+torBase(torIndex(u.Tor)).String()+"/24 via "+u.TorAddr+" dev "+u.HostIf)
	}
	hostCmds = append(hostCmds, defaultRoute("default", gw4))
	if len(gw6) > 0 {
		hostCmds = append(hostCmds, defaultRoute("::/0", gw6))
	}
	return ipBatch(ctx, h.NS, hostCmds)
}

func torIndex(name string) int {
	n, _ := strconv.Atoi(name[len("tor-"):])
	return n
}

// defaultRoute points the host at its ToRs (dst "default" or "::/0"), as one ECMP route when dual-homed.
func defaultRoute(dst string, gws []string) string {
	if len(gws) == 1 {
		return "route add " + dst + " via " + gws[0]
	}
	s := "route add " + dst
	for _, g := range gws {
		s += " nexthop via " + g
	}
	return s
}

// Down stops what the testbed started and deletes its namespaces and state. It is idempotent.
func (tb *Testbed) Down(ctx context.Context) error {
	unlock, err := lockDir(tb.st.Options.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	return tb.teardown(ctx)
}

func (tb *Testbed) teardown(ctx context.Context) error {
	if fresh, err := loadState(tb.st.Options.StateDir); err == nil {
		tb.st = fresh
	}
	return cleanup(ctx, tb.st.Options.StateDir, tb.st.Options.Prefix, tb.log)
}

// Down tears down whatever testbed stateDir and prefix describe, including leftovers of a crashed run.
func Down(ctx context.Context, stateDir, prefix string, log *slog.Logger) error {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	unlock, err := lockDir(stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	return cleanup(ctx, stateDir, prefix, log)
}

// cleanup stops recorded processes (only if /proc still shows what we started), then everything in
// our namespaces, then deletes the namespaces (pods first) and the state directory's content.
func cleanup(ctx context.Context, stateDir, prefix string, log *slog.Logger) error {
	var errs []error
	var recorded []string
	if st, err := loadState(stateDir); err == nil {
		if st.Options.Prefix != "" {
			prefix = st.Options.Prefix
		}
		// In parallel: each stop may wait seconds for init to reap a daemon an earlier run started.
		procs := st.procs()
		stopErrs := make([]error, len(procs))
		var wg sync.WaitGroup
		for i, p := range procs {
			if p.Alive() {
				log.Info("stopping", "pid", p.Pid, "cmd", filepath.Base(p.Argv[0]))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				stopErrs[i] = p.Stop(syscall.SIGTERM, 5*time.Second)
			}()
		}
		wg.Wait()
		errs = append(errs, stopErrs...)
		recorded = append(recorded, st.Namespaces...)
		for _, p := range st.Pods {
			recorded = append(recorded, p.NS)
		}
	}
	all, err := listNamespaces()
	if err != nil {
		errs = append(errs, err)
	}
	// Namespaces of the prefix that this state does not record are leftovers of a crashed run,
	// unless another live testbed owns the prefix: then they are its, and left alone.
	abs := canonicalDir(stateDir)
	other := prefixOwner(prefix)
	if other == abs {
		other = ""
	}
	if other != "" {
		log.Warn("namespace prefix in use by another testbed; only this state's own namespaces are removed", "prefix", prefix, "owner", other)
	}
	var ours []string
	for _, ns := range all {
		if slices.Contains(recorded, ns) || (other == "" && ownedNamespace(prefix, ns)) {
			ours = append(ours, ns)
		}
	}
	// Pod namespaces (longest names) go before their hosts so no veth is left dangling mid-way.
	slices.SortFunc(ours, func(a, b string) int { return len(b) - len(a) })
	for _, ns := range ours {
		killNamespacePids(ctx, ns)
		log.Info("deleting namespace", "netns", ns)
		if err := delNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Something could not be stopped or deleted: the state stays, so that `down` again
		// still knows what to stop (forgetting it would leave processes nobody tracks).
		return fmt.Errorf("tear down testbed (state kept; run down again): %w", err)
	}
	if err := clearStateDir(stateDir); err != nil {
		errs = append(errs, err)
	}
	if err := releasePrefix(prefix, abs); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down testbed: %w", err)
	}
	return nil
}

// stateEntry matches the names the testbed writes in its state directory: the state file, the
// per-namespace directories, the CNI plugin directory and the demo's files.
var stateEntry = regexp.MustCompile(`^(state\.json(\.tmp)?|ctl|tor-[0-9]+|host-[0-9]+|cni-bin|demo-[a-z]+\.(yaml|txt))$`)

// clearStateDir removes what the testbed wrote, and only that: the state directory is the
// operator's choice (--state-dir, TERRACE_TESTBED_STATE_DIR), and a wrong one (a home directory,
// the repository) must lose nothing. The lock file other invocations may hold stays too.
func clearStateDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if !stateEntry.MatchString(e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove state: %w", err))
		}
	}
	return errors.Join(errs...)
}

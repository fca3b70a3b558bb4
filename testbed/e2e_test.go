package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/internal/nstest"
)

func needRoot(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	for _, b := range []string{"ip", "bird", "birdc", "sysctl"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (make deps): cannot build a testbed", b)
		}
	}
}

// testPrefix gives each test its own namespace prefix, so tests never meet a running demo or each other.
func testPrefix(t *testing.T) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "tbt" + hex.EncodeToString(b) + "-"
}

// fakeBinDir holds terrace-node as a link to this test binary (see TestMain).
func fakeBinDir(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(dir, "terrace-node")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func testOptions(t *testing.T, hosts int) Options {
	return Options{Hosts: hosts, Prefix: testPrefix(t), StateDir: t.TempDir(), BinDir: fakeBinDir(t)}
}

// footprint is what the testbed may leave in the root namespace and mount table: it must be empty.
func footprint(t *testing.T, prefix string) []string {
	t.Helper()
	var out []string
	nss, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix) {
			out = append(out, "netns "+ns)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "/"+prefix) {
			out = append(out, "mount "+l)
		}
	}
	return out
}

func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	slices.Sort(names)
	return names
}

func mustOutput(t *testing.T, tb *Testbed, target string, argv ...string) string {
	t.Helper()
	out, err := tb.Output(context.Background(), target, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFabric(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	linksBefore := rootLinks(t)
	o := testOptions(t, 2)
	o.Tors, o.IPv6 = 2, true
	tb, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Cleanup(func() { _ = tb.Down(context.Background()) })

	t.Run("second up refused", func(t *testing.T) {
		before := footprint(t, o.Prefix)
		_, err := Up(ctx, o)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "already up") {
			t.Fatalf("second up = %v, want ErrInvalid 'already up'", err)
		}
		if diff := cmp.Diff(before, footprint(t, o.Prefix)); diff != "" {
			t.Fatalf("refused up changed namespaces (-before +after):\n%s", diff)
		}
	})

	t.Run("exec", func(t *testing.T) {
		if out := mustOutput(t, tb, "host-1", "ip", "-o", "addr", "show", "dev", "tor-2"); !strings.Contains(out, "198.51.100.1/31") ||
			!strings.Contains(out, "2001:db8:0:201::2/64") {
			t.Errorf("host-1 uplink to tor-2: %s", out)
		}
		env := mustOutput(t, tb, "host-2", "sh", "-c", `echo "$TERRACE_ETCD_ENDPOINTS $TERRACE_NODE_SOCKET"`)
		h2, _ := tb.Host("host-2")
		if want := "http://203.0.113.1:2379 " + h2.Socket; strings.TrimSpace(env) != want {
			t.Errorf("exec environment %q, want %q", env, want)
		}
		route := mustOutput(t, tb, "host-1", "ip", "route", "show", "default")
		if !strings.Contains(route, "nexthop via 192.0.2.0") || !strings.Contains(route, "nexthop via 198.51.100.0") {
			t.Errorf("dual-homed host's default route is not ECMP over both ToRs: %s", route)
		}
		if _, err := tb.Output(ctx, "host-9", "true"); !errors.Is(err, ErrInvalid) {
			t.Errorf("exec on a missing host: %v, want ErrInvalid", err)
		}
		// Every host reaches etcd over the control network, not only ctl.
		if err := dialInNS(ctx, filepath.Join(netnsDir, h2.NS), "203.0.113.1:2379", 2*time.Second); err != nil {
			t.Errorf("host-2 cannot reach etcd: %v", err)
		}
	})

	t.Run("status", func(t *testing.T) {
		s := tb.Status(ctx)
		var procs []string
		for _, p := range s.Processes {
			if !p.Alive {
				t.Errorf("%s on %s (pid %d) is not running", p.What, p.Where, p.Pid)
			}
			procs = append(procs, p.Where+":"+p.What)
		}
		want := []string{"ctl:etcd", "tor-1:bird", "tor-2:bird", "host-1:terrace-node", "host-2:terrace-node"}
		if diff := cmp.Diff(want, procs); diff != "" {
			t.Errorf("processes (-want +got):\n%s", diff)
		}
		if len(s.Sessions) != 8 { // 2 ToRs x 2 hosts x (IPv4 + IPv6)
			t.Errorf("got %d BGP sessions, want 8: %+v", len(s.Sessions), s.Sessions)
		}
		for _, n := range s.Namespaces {
			if !n.Exists {
				t.Errorf("namespace %s missing", n.Name)
			}
		}
	})

	t.Run("pods and check", func(t *testing.T) {
		for _, p := range []PodSpec{
			{Host: "host-1", Name: "a", Labels: map[string]string{"role": "frontend"}},
			{Host: "host-1", Name: "b"},
			{Host: "host-2", Name: "c", Namespace: "prod"},
		} {
			got, err := tb.AddPod(ctx, p)
			if err != nil {
				t.Fatalf("add pod %s/%s: %v", p.Host, p.Name, err)
			}
			if got.IPv4 == "" || got.IPv6 == "" || got.HostIf == "" {
				t.Errorf("pod %s/%s incompletely wired: %+v", p.Host, p.Name, got)
			}
		}
		if _, err := tb.AddPod(ctx, PodSpec{Host: "host-1", Name: "a"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("duplicate pod: %v, want ErrInvalid", err)
		}
		if _, err := tb.AddPod(ctx, PodSpec{Host: "host-7", Name: "z"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("pod on a missing host: %v, want ErrInvalid", err)
		}
		var names []string
		for _, p := range tb.Pods() {
			names = append(names, p.Host+"/"+p.Name+"@"+p.Namespace)
		}
		if diff := cmp.Diff([]string{"host-1/a@default", "host-1/b@default", "host-2/c@prod"}, names); diff != "" {
			t.Errorf("pods (-want +got):\n%s", diff)
		}
		a := tb.Pods()[0]
		if out := mustOutput(t, tb, "host-1/a", "ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, a.IPv4+"/32") {
			t.Errorf("pod a's eth0 lacks %s/32: %s", a.IPv4, out)
		}
		if out := mustOutput(t, tb, "host-1/a", "ip", "route"); !strings.Contains(out, "default via 169.254.1.1 dev eth0") {
			t.Errorf("pod a's routes: %s", out)
		}
		// Without BGP (the fake node speaks none) only pods on the same host reach each other.
		exp, err := ParseExpectation("* * * blocked\nhost-1/* host-1/* * reachable\n")
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.Check(ctx, CheckOptions{Expect: exp, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Cells) != 6*2*2 { // 6 ordered pairs x 2 families x 2 probes
			t.Errorf("matrix has %d cells, want 24", len(m.Cells))
		}
		for _, c := range m.Cells {
			if !c.OK() {
				t.Errorf("%s -> %s %s %s: expected %s, got %s (%s)", c.From, c.To, c.Addr, c.Probe, c.Expected, c.Actual, c.Detail)
			}
		}
		// The default expectation (all reachable) must report the cross-host pairs.
		m, err = tb.Check(ctx, CheckOptions{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Differences(); got != 16 {
			t.Errorf("default expectation: %d differences, want 16 (cross-host pairs)", got)
		}
		// Settle re-probes while anything differs and gives up after its time; a matching matrix
		// returns at once.
		start := time.Now()
		m, err = tb.Check(ctx, CheckOptions{Timeout: 300 * time.Millisecond, Settle: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if got, took := m.Differences(), time.Since(start); got != 16 || took < 1500*time.Millisecond {
			t.Errorf("settling check: %d differences after %v, want 16 after at least 1.5s", got, took)
		}
		start = time.Now()
		m, err = tb.Check(ctx, CheckOptions{Expect: exp, Timeout: 300 * time.Millisecond, Settle: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if got, took := m.Differences(), time.Since(start); got != 0 || took > 20*time.Second {
			t.Errorf("settling check of a matching matrix: %d differences after %v, want 0 well before its minute", got, took)
		}
	})

	t.Run("pod delete", func(t *testing.T) {
		b := tb.Pods()[1]
		if err := tb.DelPod(ctx, "host-1", "b"); err != nil {
			t.Fatal(err)
		}
		if nsExists(b.NS) {
			t.Error("pod namespace still exists")
		}
		if out := mustOutput(t, tb, "host-1", "ip", "-o", "link"); strings.Contains(out, b.HostIf) {
			t.Errorf("host-side interface %s left behind", b.HostIf)
		}
		if err := tb.DelPod(ctx, "host-1", "b"); !errors.Is(err, ErrInvalid) {
			t.Errorf("second delete: %v, want ErrInvalid", err)
		}
	})

	t.Run("faults", func(t *testing.T) {
		if err := tb.StopEtcd(ctx); err != nil {
			t.Fatal(err)
		}
		if tb.EtcdHealthy(ctx) {
			t.Error("etcd healthy after stop-etcd")
		}
		if err := tb.StartEtcd(ctx); err != nil {
			t.Fatal(err)
		}
		if !tb.EtcdHealthy(ctx) {
			t.Error("etcd not healthy after start-etcd")
		}

		if err := tb.StopTor(ctx, "tor-2"); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.Birdc(ctx, "tor-2", "show", "status"); err == nil {
			t.Error("tor-2 still answers after stop-tor")
		}
		if err := tb.StartTor(ctx, "tor-2"); err != nil {
			t.Fatal(err)
		}
		if ss, err := tb.TorSessions(ctx, "tor-2"); err != nil || len(ss) != 4 {
			t.Errorf("tor-2 after start-tor: %d sessions, %v", len(ss), err)
		}

		for _, kill := range []bool{false, true} {
			stop := tb.StopNode
			if kill {
				stop = tb.KillNode
			}
			if err := stop(ctx, "host-1"); err != nil {
				t.Fatal(err)
			}
			if tb.NodeRunning("host-1") {
				t.Errorf("node still running after stop (kill=%t)", kill)
			}
			if err := tb.StartNode(ctx, "host-1"); err != nil {
				t.Fatal(err)
			}
			if !tb.NodeRunning("host-1") {
				t.Errorf("node not running after start-node (kill=%t)", kill)
			}
		}

		if err := tb.LinkDown(ctx, "host-2", "tor-1"); err != nil {
			t.Fatal(err)
		}
		h2, _ := tb.Host("host-2")
		if linkUp(ctx, h2.NS, "tor-1") || !linkUp(ctx, h2.NS, "tor-2") {
			t.Error("link-down host-2 tor-1 did not take exactly that uplink down")
		}
		if err := tb.LinkUp(ctx, "host-2", "tor-1"); err != nil {
			t.Fatal(err)
		}
		if route := mustOutput(t, tb, "host-2", "ip", "route", "show", "default"); !strings.Contains(route, "nexthop via 192.0.2.2") {
			t.Errorf("default route not restored over tor-1 after link-up: %s", route)
		}
		if err := tb.LinkDown(ctx, "host-2", "tor-3"); !errors.Is(err, ErrInvalid) {
			t.Errorf("link-down to a missing ToR: %v, want ErrInvalid", err)
		}
	})

	t.Run("inject routes", func(t *testing.T) {
		ps, _ := InjectPrefixes(100)
		if err := tb.InjectTorRoutes(ctx, "tor-1", ps); err != nil {
			t.Fatal(err)
		}
		out, err := tb.TorRoutes(ctx, "tor-1", "protocol", "inject4", "count")
		if err != nil || !strings.HasPrefix(lastLine(out), "100 of ") {
			t.Errorf("after injecting 100: %q %v", out, err)
		}
		if err := tb.InjectTorRoutes(ctx, "tor-1", nil); err != nil {
			t.Fatal(err)
		}
		out, _ = tb.TorRoutes(ctx, "tor-1", "protocol", "inject4", "count")
		if !strings.HasPrefix(lastLine(out), "0 of ") {
			t.Errorf("after withdrawing: %q", out)
		}
	})

	t.Run("load from state", func(t *testing.T) {
		other, err := Load(o.StateDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tb.Pods(), other.Pods()); diff != "" {
			t.Errorf("pods seen by another process (-this +other):\n%s", diff)
		}
	})

	var pids []int
	for _, p := range tb.st.procs() {
		pids = append(pids, p.Pid)
	}
	if err := tb.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left := footprint(t, o.Prefix); len(left) > 0 {
		t.Errorf("down left behind: %v", left)
	}
	for _, p := range pids {
		if procState(p) != "" {
			t.Errorf("process %d still exists after down", p)
		}
	}
	if diff := cmp.Diff(linksBefore, rootLinks(t)); diff != "" {
		t.Errorf("root namespace links changed (-before +after):\n%s", diff)
	}
	if _, err := os.Stat(statePath(o.StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left behind: %v", err)
	}
	if err := tb.Down(ctx); err != nil {
		t.Errorf("second down: %v", err)
	}
	if err := Down(ctx, o.StateDir, o.Prefix, nil); err != nil {
		t.Errorf("down without state: %v", err)
	}
}

func TestUpBadInputCreatesNothing(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no hosts", func(o *Options) { o.Hosts = 0 }, "host count 0"},
		{"too many hosts", func(o *Options) { o.Hosts = MaxHosts + 1 }, "out of range"},
		{"three tors", func(o *Options) { o.Tors = 3 }, "tor count"},
		{"no terrace-node", func(o *Options) { o.BinDir = t.TempDir() }, "terrace-node"},
	}
	if os.Geteuid() != 0 {
		tests = append(tests, struct {
			name string
			mod  func(*Options)
			want string
		}{"not root", func(*Options) {}, "needs root"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t, 1)
			tt.mod(&o)
			_, err := Up(context.Background(), o)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("up = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
			if left := footprint(t, o.Prefix); len(left) > 0 {
				t.Errorf("failed up created %v", left)
			}
			if _, err := os.Stat(statePath(o.StateDir)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed up wrote state: %v", err)
			}
		})
	}
}

func TestUpFailureHalfwayTearsDown(t *testing.T) {
	needRoot(t)
	t.Setenv(fakeFailEnv, "etcd")
	o := testOptions(t, 2)
	_, err := Up(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "start etcd") {
		t.Fatalf("up with a failing etcd = %v, want a start etcd error", err)
	}
	if left := footprint(t, o.Prefix); len(left) > 0 {
		t.Errorf("failed up left behind %v", left)
	}
	if _, err := os.Stat(statePath(o.StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed up left its state file: %v", err)
	}
}

func TestUpCleansLeftovers(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	o := testOptions(t, 1)
	o.NoEtcd = true
	// A crashed run: its namespaces, and a state file whose recorded pid is now some other process
	// (this test), which must not be touched.
	leftovers := []string{o.Prefix + "host-4", o.Prefix + "host-4-web"}
	foreign := o.Prefix + "keep"
	for _, ns := range append(leftovers, foreign) {
		if err := addNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = delNamespace(context.Background(), foreign) })
	// A daemon of the crashed run that still runs must be stopped: recorded and its cmdline matches.
	daemon, err := startProc(o.Prefix+"host-4", []string{"sleep", "1000"}, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Stop(syscall.SIGKILL, time.Second)
	stale := &State{Options: o, Hosts: []HostState{
		{Name: "host-4", Node: &Proc{Pid: os.Getpid(), Argv: []string{"/bin/terrace-node", "run"}}},
		{Name: "host-5", Node: daemon},
	}}
	stale.Options.setDefaults()
	if err := stale.save(); err != nil {
		t.Fatal(err)
	}
	tb, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("up over leftovers: %v", err)
	}
	defer tb.Down(ctx)
	for _, ns := range leftovers {
		if nsExists(ns) {
			t.Errorf("leftover %s not cleaned", ns)
		}
	}
	if !nsExists(foreign) {
		t.Errorf("%s does not look like a testbed namespace but was deleted", foreign)
	}
	if !nsExists(o.Prefix + "host-1") {
		t.Error("new testbed's host-1 missing")
	}
	if !daemon.Exited() {
		t.Error("the crashed run's recorded daemon still runs")
	}
	if err := tb.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if !nsExists(foreign) {
		t.Errorf("down deleted %s", foreign)
	}
}

func TestPodsThroughCNI(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	o := testOptions(t, 1)
	o.NoEtcd = true
	exe, _ := os.Executable()
	if err := os.Symlink(exe, filepath.Join(o.BinDir, "terrace-cni")); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "cni.jsonl")
	t.Setenv(fakeCNILogEnv, logFile)
	tb, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Down(ctx)
	if !tb.CNIAvailable(ctx) {
		t.Fatal("the fake terrace-cni answers VERSION but the testbed does not see it")
	}
	pod, err := tb.AddPod(ctx, PodSpec{Host: "host-1", Name: "web", Namespace: "shop", Labels: map[string]string{"role": "frontend", "tier": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Mode != CNIPlugin || !strings.HasPrefix(pod.IPv4, "198.18.200.") || pod.HostIf != "trc"+pod.ContainerID[:11] {
		t.Errorf("pod not taken from the plugin's result: %+v", pod)
	}
	if err := tb.DelPod(ctx, "host-1", "web"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var recs []fakeCNIRecord
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r fakeCNIRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	h, _ := tb.Host("host-1")
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, h.NS), &st); err != nil {
		t.Fatal(err)
	}
	hostNetNS := "net:[" + strconv.FormatUint(st.Ino, 10) + "]"
	want := fakeCNIRecord{ContainerID: pod.ContainerID, NetNS: filepath.Join(netnsDir, pod.NS), IfName: "eth0",
		Args:     "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=" + pod.ContainerID,
		OwnNetNS: hostNetNS, NodeSocket: h.Socket, Type: "terrace",
		Labels: []map[string]string{{"key": "role", "value": "frontend"}, {"key": "tier", "value": "1"}}}
	var cmds []string
	for _, r := range recs {
		cmds = append(cmds, r.Command)
		w := want
		w.Command = r.Command
		if diff := cmp.Diff(w, r); diff != "" {
			t.Errorf("%s call (-want +got):\n%s", r.Command, diff)
		}
	}
	if diff := cmp.Diff([]string{"ADD", "DEL"}, cmds); diff != "" {
		t.Errorf("plugin calls (-want +got):\n%s", diff)
	}
	if out := mustOutput(t, tb, "host-1", "ip", "-o", "link"); strings.Contains(out, pod.HostIf) {
		t.Errorf("DEL left %s behind", pod.HostIf)
	}
}

// TestRealBinaries runs the testbed on the project's own bin/ (make build), as make demo does.
func TestRealBinaries(t *testing.T) {
	tb := StartForTest(t, Options{Hosts: 2, NoNode: true})
	ctx := context.Background()
	if !tb.EtcdHealthy(ctx) {
		t.Fatal("terrace-node etcd is not healthy inside the testbed")
	}
	if !strings.HasPrefix(tb.Options().Prefix, "tbt") || len(tb.Options().StateDir) > 40 {
		t.Errorf("StartForTest did not pick a private prefix and a short state dir: %+v", tb.Options())
	}
	if ss, err := tb.TorSessions(ctx, "tor-1"); err != nil || len(ss) != 2 {
		t.Errorf("tor-1 sessions: %v %v", ss, err)
	}
}

// TestHostBirdThroughTor runs BGP end to end through the ToR with BIRD alone on the hosts (the
// benchmark anchor): injected prefixes reach a host's kernel, a pod-range prefix from one host reaches
// the other (the ToR's as-override), a prefix outside the pod ranges is filtered, and no host gets its
// own prefix back.
func TestHostBirdThroughTor(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	o := testOptions(t, 2)
	o.NoEtcd = true
	tb, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Down(ctx)
	block := netip.MustParsePrefix("198.18.1.0/26")
	outside := netip.MustParsePrefix("192.0.2.128/25")
	if err := tb.StartHostBird(ctx, "host-1", []netip.Prefix{block, outside}); err != nil {
		t.Fatal(err)
	}
	if err := tb.StartHostBird(ctx, "host-2", nil); err != nil {
		t.Fatal(err)
	}
	ps, _ := InjectPrefixes(50)
	if err := tb.InjectTorRoutes(ctx, "tor-1", ps); err != nil {
		t.Fatal(err)
	}
	learned := func(host string) string {
		out, _ := tb.Output(ctx, host, "ip", "route", "show", "proto", "bird")
		return out
	}
	count := func(host string) int { return strings.Count(learned(host), "198.18.64.") }
	deadline := time.Now().Add(15 * time.Second)
	for (count("host-1") != 50 || !strings.Contains(learned("host-2"), "198.18.1.0/26 via 192.0.2.2")) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := count("host-1"); got != 50 {
		out, _ := tb.HostBirdc(ctx, "host-1", "show", "protocols", "all")
		t.Fatalf("host-1 kernel has %d of 50 injected routes; host bird:\n%s", got, out)
	}
	h2 := learned("host-2")
	if !strings.Contains(h2, "198.18.1.0/26 via 192.0.2.2") {
		t.Errorf("host-2 did not learn host-1's block through the ToR:\n%s", h2)
	}
	if strings.Contains(h2, "192.0.2.128") {
		t.Errorf("the ToR passed on a prefix outside the pod ranges:\n%s", h2)
	}
	if own, _ := tb.HostBirdc(ctx, "host-1", "show", "route", "protocol", "tor_1", "count"); !strings.HasPrefix(lastLine(own), "50 of ") {
		t.Errorf("host-1 got more than the injected routes from the ToR (its own back?): %s", own)
	}
	if err := tb.InjectTorRoutes(ctx, "tor-1", nil); err != nil {
		t.Fatal(err)
	}
	for count("host-1") != 0 && time.Now().Before(deadline.Add(10*time.Second)) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := count("host-1"); got != 0 {
		t.Errorf("after withdrawal host-1 still has %d injected routes", got)
	}
	s := tb.Status(ctx)
	found := false
	for _, p := range s.Processes {
		found = found || (p.Where == "host-1" && p.What == "bird" && p.Alive)
	}
	if !found {
		t.Errorf("status does not list host-1's bird: %+v", s.Processes)
	}
	if err := tb.StopHostBird(ctx, "host-1"); err != nil {
		t.Fatal(err)
	}
}

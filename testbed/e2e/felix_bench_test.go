package e2e

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/testbed"
	"github.com/terracenet/terrace/testbed/datapath"
)

// The scale benchmark's shape (issue 7): 1,000 local endpoints and 500 policies of 20 rules on
// host-1, and one ipset of 10,000 members (500 local endpoints plus a GlobalNetworkSet of 9,500).
const (
	benchEndpoints = 1000
	benchPolicies  = 500
	benchRules     = 20
	benchBigNets   = 9500
	benchNamespace = "bench"
	// benchPhaseEnv makes TestFelixBenchHelper do one phase of the benchmark: it is the benchmark's
	// own binary re-run inside host-1's namespace, so it reaches etcd, felix's metrics and the
	// kernel of that host directly and times them without a process start in between.
	benchPhaseEnv = "TERRACE_FELIX_BENCH_PHASE"
	benchT0Env    = "TERRACE_FELIX_BENCH_T0"
)

var benchTiers = []string{"web", "api", "db"}

// benchIfName is a bench endpoint's host-side interface: trc + 11 hex of a hash of its identity.
func benchIfName(i int) string {
	sum := sha1.Sum([]byte(fmt.Sprintf("%s/wep-%d", benchNamespace, i)))
	return "trc" + hex.EncodeToString(sum[:])[:11]
}

// benchAddr is a bench endpoint's address: 198.19.128.0 + i, clear of the pods IPAM hands out.
func benchAddr(i int) netip.Addr { return addN(netip.MustParseAddr("198.19.128.0"), i) }

func addN(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// BenchmarkFelixScale: initial programming of 1,000 endpoints and 500 policies (~10,000 rules)
// from a terrace-node start, one policy change from datastore write to programmed (p50/p99), one
// label change moving an endpoint in and out of a 10,000-member ipset, and iperf3 pod-to-pod
// across hosts with all of it active against the same without policy. The endpoints are
// WorkloadEndpoints in etcd with host-side veths in host-1's namespace (no pods behind them).
//
// Throughput on two shared cores swings by tens of percent from one moment to the next, so the
// policy path (host-1/ip1 → host-2/ip2, host-1 carrying all of it) and a path without policy
// through the same fabric (host-3/ip3 → host-4/ip4, no policy selects those pods and their hosts
// carry no bench endpoints) are measured in alternating rounds of the same length, after a warm-up
// round each that is discarded, and compared by their medians. The same rounds before any of the
// bench load exists calibrate the two paths against each other.
func BenchmarkFelixScale(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement (make bench runs -benchtime 1x)")
	}
	level := "info"
	keep := os.Getenv("TERRACE_FELIX_BENCH_LOG") // a path: keep host-1's node log there (at debug level)
	if keep != "" {
		level = "debug"
	}
	tb := testbed.StartForTest(b, testbed.Options{Hosts: 4, LogLevel: level})
	ctx := context.Background()
	if keep != "" {
		h1, _ := tb.Host("host-1")
		// Registered after StartForTest, so it runs before the teardown removes the log.
		b.Cleanup(func() {
			if data, err := os.ReadFile(h1.LogFile); err == nil {
				_ = os.WriteFile(keep, data, 0o644)
			}
			for _, tool := range []string{"iptables-save", "ip6tables-save", "ipset save"} {
				argv := strings.Fields(tool)
				if out, err := tb.Output(ctx, "host-1", argv...); err == nil {
					_ = os.WriteFile(keep+"."+argv[0], []byte(out), 0o644)
				}
			}
		})
	}
	add := func(host, name string, labels map[string]string) testbed.PodState {
		p, err := tb.AddPod(ctx, testbed.PodSpec{Host: host, Name: name, Namespace: benchNamespace, Labels: labels})
		if err != nil || p.IPv4 == "" {
			b.Fatalf("add pod %s/%s: %v %+v", host, name, err, p)
		}
		return p
	}
	policyLabels := map[string]string{"role": "iperf", "app": "a0", "tier": "web"}
	plainLabels := map[string]string{"role": "plain"} // selected by no bench policy
	add("host-1", "ip1", policyLabels)
	srvPolicy := add("host-2", "ip2", policyLabels)
	add("host-3", "ip3", plainLabels)
	srvPlain := add("host-4", "ip4", plainLabels)
	paths := [2]iperfPath{
		{client: "host-1/ip1", server: "host-2/ip2", addr: srvPolicy.IPv4},
		{client: "host-3/ip3", server: "host-4/ip4", addr: srvPlain.IPv4},
	}
	// Cross-host routes come from BGP a moment after the pods' blocks are claimed.
	for _, p := range paths {
		for i := 0; i < 40 && ping(tb, p.client, p.addr, 1) != nil; i++ {
			time.Sleep(500 * time.Millisecond)
		}
	}
	calib, calibErr := iperfRounds(tb, paths, benchCalibRounds)
	if calibErr != nil {
		b.Logf("iperf3 before the bench load: %v (cross-host routes missing?)", calibErr)
	}

	if err := tb.StopNode(ctx, "host-1"); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	makeVeths(b, tb)
	b.Logf("created %d veths in %s", benchEndpoints, time.Since(start).Round(time.Millisecond))
	benchHelper(b, tb, "populate", nil)
	t0 := time.Now()
	if err := tb.StartNode(ctx, "host-1"); err != nil {
		b.Fatal(err)
	}
	out := benchHelper(b, tb, "initial", []string{fmt.Sprintf("%s=%d", benchT0Env, t0.UnixNano())})
	felixInitial(b, tb, out)
	benchHelper(b, tb, "changes", nil)

	if calibErr != nil {
		fmt.Println("# BENCH felix-iperf skipped: no cross-host pod traffic before the bench load")
		return
	}
	// What felix does while traffic flows: its CPU and its applies and resyncs in the window.
	before, cpuBefore := felixCounters(b, tb), nodeCPU(b, tb, "host-1")
	windowStart := time.Now()
	res, err := iperfRounds(tb, paths, benchRounds)
	if err != nil {
		b.Fatalf("iperf3 with the bench load: %v", err)
	}
	window := time.Since(windowStart)
	after, cpuAfter := felixCounters(b, tb), nodeCPU(b, tb, "host-1")
	withPol, without := median(res[0]), median(res[1])
	ratio := withPol / without
	calibRatio := median(calib[0]) / median(calib[1])
	b.Logf("iperf3 Gbit/s, policy path %v, plain path %v; before the load: %v / %v", res[0], res[1], calib[0], calib[1])
	fmt.Printf("BENCH felix-iperf-1000ep-500pol throughput=%.2fGbit/s anchor=%.2fGbit/s ratio=%.3f\n", withPol, without, ratio)
	fmt.Printf("BENCH felix-iperf-1000ep-500pol spread=%.1f%% anchor-spread=%.1f%% rounds=%d seconds=%d\n",
		spread(res[0]), spread(res[1]), benchRounds, benchRoundSeconds)
	fmt.Printf("BENCH felix-iperf-calibration throughput=%.2fGbit/s anchor=%.2fGbit/s ratio=%.3f corrected-ratio=%.3f\n",
		median(calib[0]), median(calib[1]), calibRatio, ratio/calibRatio)
	fmt.Printf("BENCH felix-iperf-window node-cpu=%.0fms window=%.0fs cpu-share=%.3f applies=%.0f resyncs=%.0f\n",
		float64(cpuAfter-cpuBefore)/float64(time.Millisecond), window.Seconds(), float64(cpuAfter-cpuBefore)/float64(window),
		after[0]-before[0], after[1]-before[1])
}

const (
	benchRounds       = 5 // measured rounds per path, after one discarded warm-up round each
	benchCalibRounds  = 3
	benchRoundSeconds = 5
)

// iperfPath is one client pod sending to one server pod on another host.
type iperfPath struct{ client, server, addr string }

// iperfRounds runs a discarded warm-up round on each path, then rounds × each path in ABBA order
// (so a drift in the machine's load weighs on both alike), and returns Gbit/s per path. Each
// path's iperf3 server runs for the whole series.
func iperfRounds(tb *testbed.Testbed, paths [2]iperfPath, rounds int) ([2][]float64, error) {
	var out [2][]float64
	for _, p := range paths {
		stop, err := iperfServer(tb, p.server)
		if err != nil {
			return out, err
		}
		defer stop()
	}
	for i, p := range paths {
		if _, err := iperfOnce(tb, p, 2); err != nil {
			return out, fmt.Errorf("warm-up %s: %w", paths[i].client, err)
		}
	}
	for r := range rounds {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			g, err := iperfOnce(tb, paths[i], benchRoundSeconds)
			if err != nil {
				return out, err
			}
			out[i] = append(out[i], g)
		}
	}
	return out, nil
}

// iperfServer starts iperf3 -s in the server pod and returns how to stop it (by its own pid).
func iperfServer(tb *testbed.Testbed, pod string) (func(), error) {
	s, err := tb.Command(context.Background(), pod, "iperf3", "-s")
	if err != nil {
		return nil, err
	}
	s.Stdin, s.Stdout, s.Stderr = nil, nil, nil
	if err := s.Start(); err != nil {
		return nil, fmt.Errorf("start iperf3 server in %s: %w", pod, err)
	}
	return func() { _ = s.Process.Kill(); _ = s.Wait() }, nil
}

// iperfOnce runs one iperf3 client for seconds and returns the receiver's Gbit/s.
func iperfOnce(tb *testbed.Testbed, p iperfPath, seconds int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+25)*time.Second)
	defer cancel()
	var err error
	for i := 0; i < 20; i++ {
		var out string
		out, err = tb.Output(ctx, p.client, "iperf3", "-c", p.addr, "-t", strconv.Itoa(seconds), "-J", "--connect-timeout", "2000")
		if err != nil {
			err = fmt.Errorf("iperf3 client in %s: %w: %s", p.client, err, lastLines(out, 3))
		} else {
			// iperf3 -J may report a refused connection in its JSON with exit status 0.
			var r datapath.Result
			if r, err = datapath.ParseIperf([]byte(out), false); err == nil {
				return r.BitsPerSec / 1e9, nil
			}
		}
		time.Sleep(250 * time.Millisecond) // the server may not listen yet
	}
	return 0, err
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is (max-min)/median in percent.
func spread(v []float64) float64 {
	if len(v) == 0 || median(v) == 0 {
		return 0
	}
	return 100 * (slices.Max(v) - slices.Min(v)) / median(v)
}

var countersLine = regexp.MustCompile(`(?m)^COUNTERS applies=([0-9.e+]+) resyncs=([0-9.e+]+)$`)

// felixCounters reads host-1's felix apply and resync counts (through the helper inside host-1).
func felixCounters(b *testing.B, tb *testbed.Testbed) [2]float64 {
	out := benchHelper(b, tb, "counters", nil)
	m := countersLine.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no counters from felix:\n%s", out)
	}
	a, _ := strconv.ParseFloat(m[1], 64)
	r, _ := strconv.ParseFloat(m[2], 64)
	return [2]float64{a, r}
}

// nodeCPU is the user+system CPU time terrace-node on host has used so far, with that of the
// tools it ran and waited for (iptables-save, ipset ...).
func nodeCPU(b *testing.B, tb *testbed.Testbed, host string) time.Duration {
	h, err := tb.Host(host)
	if err != nil || h.Node == nil {
		b.Fatalf("host %s: %v", host, err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.Node.Pid))
	if err != nil {
		b.Fatalf("read terrace-node's CPU time: %v", err)
	}
	// Fields after the command name (which ends at the last ')'), counted from state as 0:
	// utime 11, stime 12, cutime 13, cstime 14, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 15 {
		b.Fatalf("short /proc stat: %q", data)
	}
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			b.Fatalf("/proc stat field %d: %v", i, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// makeVeths creates the bench endpoints' veth pairs inside host-1 with one ip -batch.
func makeVeths(b *testing.B, tb *testbed.Testbed) {
	ns, err := tb.Namespace("host-1")
	if err != nil {
		b.Fatal(err)
	}
	var batch strings.Builder
	for i := 0; i < benchEndpoints; i++ {
		fmt.Fprintf(&batch, "link add %s address ee:ee:ee:ee:ee:ee type veth peer name bp%d\n", benchIfName(i), i)
	}
	for i := 0; i < benchEndpoints; i++ {
		fmt.Fprintf(&batch, "link set %s up\nlink set bp%d up\n", benchIfName(i), i)
	}
	path := filepath.Join(b.TempDir(), "veths")
	if err := os.WriteFile(path, []byte(batch.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", ns, "-batch", path).CombinedOutput(); err != nil {
		b.Fatalf("create veths: %v: %s", err, lastLines(string(out), 3))
	}
}

// benchHelper re-runs this test binary inside host-1 for one phase and relays its BENCH lines.
func benchHelper(b *testing.B, tb *testbed.Testbed, phase string, env []string) string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd, err := tb.Command(ctx, "host-1", exe, "-test.run", "^TestFelixBenchHelper$", "-test.v", "-test.count", "1", "-test.timeout", "5m")
	if err != nil {
		b.Fatal(err)
	}
	cmd.Env = append(cmd.Env, benchPhaseEnv+"="+phase)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	out, err := cmd.CombinedOutput()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "BENCH ") {
			fmt.Println(l)
		}
	}
	if err != nil {
		b.Fatalf("bench phase %s: %v:\n%s", phase, err, out)
	}
	b.Logf("phase %s:\n%s", phase, out)
	return string(out)
}

var (
	programmedLine = regexp.MustCompile(`(?m)^PROGRAMMED (\d+)$`)
	agentStartLine = regexp.MustCompile(`(?m)^time=(\S+) .*msg="felix agent starting"`)
)

// felixInitial reports felix's own share of the initial programming: from its agent starting (the
// node's log) to programmed, which leaves out the node's start-up before felix.
func felixInitial(b *testing.B, tb *testbed.Testbed, helperOut string) {
	m := programmedLine.FindStringSubmatch(helperOut)
	h1, _ := tb.Host("host-1")
	log, _ := os.ReadFile(h1.LogFile)
	starts := agentStartLine.FindAllStringSubmatch(string(log), -1)
	if m == nil || len(starts) == 0 {
		b.Logf("cannot tell felix's own initial time (programmed %v, agent starts %d)", m, len(starts))
		return
	}
	ns, _ := strconv.ParseInt(m[1], 10, 64)
	start, err := time.Parse(time.RFC3339Nano, starts[len(starts)-1][1])
	if err != nil {
		b.Logf("agent start time %q: %v", starts[len(starts)-1][1], err)
		return
	}
	took := time.Unix(0, ns).Sub(start)
	fmt.Printf("BENCH felix-initial-1000ep-500pol time=%dms anchor=2000ms ratio=%.2f\n", took.Milliseconds(), took.Seconds()/2)
}

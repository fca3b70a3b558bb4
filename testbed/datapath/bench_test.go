package datapath

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terracenet/terrace/internal/benchfmt"
	"github.com/terracenet/terrace/testbed"
)

// The whole scenario is fixed work (a testbed, two pods, rounds of iperf3), so it runs once per
// process whatever b.N is; make bench uses -benchtime 1x.
var once sync.Once

// BenchmarkDataPath: iperf3 TCP and 64-byte UDP from a pod on host-1 to a pod on host-2, against
// host-1 -> host-2 over the same underlay and against the same pods through a VXLAN tunnel.
// Figures are medians over interleaved rounds; the spread, per-round ratios, the sender's CPU cost
// per unit and the load average are printed as notes.
// Environment: TERRACE_BENCH_DATAPATH_ROUNDS (default 5), TERRACE_BENCH_DATAPATH_SECONDS (default 4).
func BenchmarkDataPath(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("data path benchmark needs root (network namespaces); make bench runs as root")
	}
	for _, tool := range []string{"iperf3", "ss", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed (make deps): no data path benchmark", tool)
		}
	}
	ran := false
	once.Do(func() { ran = true; dataPath(b) })
	if !ran {
		b.Log("data path scenario already ran in this process")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func dataPath(b *testing.B) {
	ctx := context.Background()
	// 5 rounds of 4 s over 3 paths and 2 kinds, plus warm-up: ≈ 2.5 minutes with the testbed.
	rounds := envInt("TERRACE_BENCH_DATAPATH_ROUNDS", 5)
	secs := envInt("TERRACE_BENCH_DATAPATH_SECONDS", 4)
	tb := testbed.StartForTest(b, testbed.Options{Hosts: 2})
	for _, w := range tb.Warnings() {
		b.Logf("testbed warning: %s", w)
	}
	h1, err := tb.Host("host-1")
	if err != nil {
		b.Fatal(err)
	}
	h2, err := tb.Host("host-2")
	if err != nil {
		b.Fatal(err)
	}
	podA, err := tb.AddPod(ctx, testbed.PodSpec{Host: "host-1", Name: "bench-a", Labels: map[string]string{"app": "bench"}})
	if err != nil {
		b.Fatalf("add pod: %v", err)
	}
	podB, err := tb.AddPod(ctx, testbed.PodSpec{Host: "host-2", Name: "bench-b", Labels: map[string]string{"app": "bench"}})
	if err != nil {
		b.Fatalf("add pod: %v", err)
	}
	if podA.IPv4 == "" || podB.IPv4 == "" {
		b.Fatalf("pods without IPv4 addresses: %+v %+v", podA, podB)
	}
	note := benchfmt.Printer{W: os.Stdout, Scenario: "datapath"}
	note.Note("pods %s (%s, wired by %s) and %s (%s); %d rounds of %ds per measurement, median reported",
		podA.Host+"/"+podA.Name, podA.IPv4, podA.Mode, podB.Host+"/"+podB.Name, podB.IPv4, rounds, secs)

	routes := ensurePodRoutes(ctx, b, tb, h1, h2, podA, podB)
	note.Note("pod routes: %s", routes)

	// Correctness: the pods reach each other, and host-1 forwards pod traffic out of its uplink as
	// plain IP (the device a packet from pod A to pod B leaves by is the uplink, not a tunnel).
	if out, err := inNS(ctx, podA.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", podB.IPv4); err != nil {
		b.Fatalf("pod %s cannot reach pod %s: %v\n%s", podA.Name, podB.Name, err, out)
	}
	uplink := h1.Uplinks[0].HostIf
	if podA.HostIf != "" {
		dev, err := RouteGetDev(ctx, h1.NS, podB.IPv4, podA.IPv4, podA.HostIf)
		if err != nil {
			b.Fatal(err)
		}
		if dev != uplink {
			b.Fatalf("host-1 forwards pod traffic to %s via %s, want the uplink %s", podB.IPv4, dev, uplink)
		}
	}

	hostA := Endpoint{Name: "host-1", NS: h1.NS, Addr: h1.Uplinks[0].HostAddr}
	hostB := Endpoint{Name: "host-2", NS: h2.NS, Addr: h2.Uplinks[0].HostAddr}
	pA := Endpoint{Name: "host-1/bench-a", NS: podA.NS, Addr: podA.IPv4}
	pB := Endpoint{Name: "host-2/bench-b", NS: podB.NS, Addr: podB.IPv4}

	var vx *VXLAN
	if err := VXLANAvailable(ctx, h1.NS); err != nil {
		note.Note("VXLAN anchor skipped: the kernel cannot create a vxlan device here (%v)", err)
	} else {
		vx = &VXLAN{
			A: HostSide{NS: h1.NS, Underlay: h1.Uplinks[0].HostAddr, Uplink: uplink, PodNS: podA.NS, PodAddr: podA.IPv4},
			B: HostSide{NS: h2.NS, Underlay: h2.Uplinks[0].HostAddr, Uplink: h2.Uplinks[0].HostIf, PodNS: podB.NS, PodAddr: podB.IPv4},
		}
		if err := vx.Create(ctx); err != nil {
			b.Fatal(err)
		}
		// Registered after StartForTest's cleanup, so it runs before the testbed goes down.
		b.Cleanup(func() {
			if err := vx.Delete(context.Background()); err != nil {
				b.Logf("remove vxlan devices: %v", err)
			}
		})
		note.Note("VXLAN anchor: %s between %s and %s (id 4242, port 4789, MTU %d, pods get a %d-MTU route to each other while it is used), routes proto static installed by the benchmark",
			VXLANDev, vx.A.Underlay, vx.B.Underlay, vxlanMTU, vxlanMTU)
	}

	rules := TerraceRules(ctx, h1.NS)
	note.Note("no policy applied (issue 7's no-policy baseline); host-1 had %d legacy and %d nft rules in trc- chains during the run",
		rules["legacy"], rules["nft"])

	ip := Iperf{Duration: time.Duration(secs) * time.Second, Port: 5201}
	paths := []string{"host", "pod"}
	if vx != nil {
		paths = append(paths, "vxlan")
	}
	// measure runs one iperf3 test on one path and checks that the traffic took that path.
	measure := func(ip Iperf, path string, udp bool) Result {
		var r Result
		var err error
		switch path {
		case "host":
			r, err = ip.Measure(ctx, hostA, hostB, udp)
		case "pod":
			var tx0 uint64
			if vx != nil {
				tx0 = mustTx(ctx, b, h1.NS)
			}
			r, err = ip.Measure(ctx, pA, pB, udp)
			if err == nil && vx != nil {
				// A handful of packets (IPv6 link-local chatter of the tunnel device) is not traffic.
				if d := mustTx(ctx, b, h1.NS) - tx0; d > 1000 {
					b.Fatalf("routed pod traffic went through %s (%d packets)", VXLANDev, d)
				}
			}
		case "vxlan":
			if err := vx.Enable(ctx); err != nil {
				b.Fatal(err)
			}
			tx0 := mustTx(ctx, b, h1.NS)
			r, err = ip.Measure(ctx, pA, pB, udp)
			tx1 := mustTx(ctx, b, h1.NS)
			if derr := vx.Disable(ctx); derr != nil {
				b.Fatal(derr)
			}
			if err == nil && tx1-tx0 < 1000 {
				b.Fatalf("VXLAN anchor did not go through %s: only %d packets sent on it", VXLANDev, tx1-tx0)
			}
		}
		if err != nil {
			b.Fatalf("%s path: %v", path, err)
		}
		return r
	}
	kinds := []struct {
		name, metric, unit, costUnit string
		udp                          bool
	}{
		{"tcp", "throughput", "Gbit/s", "ms CPU per Gbit", false},
		{"udp64", "rate", "pps", "µs CPU per datagram", true},
	}
	value := func(r Result, udp bool) float64 {
		if udp {
			return r.PacketsPerSec()
		}
		return r.BitsPerSec / 1e9
	}

	// Warm-up, discarded: the first run on a path pays for neighbour resolution, route and socket
	// caches and the CPU frequency/scheduler settling.
	warm := Iperf{Duration: time.Second, Port: ip.Port}
	for _, k := range kinds {
		for _, path := range paths {
			measure(warm, path, k.udp)
		}
	}

	fastPath := func() (h1n, h2n uint64, on bool) {
		a, okA, err := FastPathForwarded(ctx, h1.NS)
		if err != nil {
			b.Fatal(err)
		}
		c, okB, err := FastPathForwarded(ctx, h2.NS)
		if err != nil {
			b.Fatal(err)
		}
		return a, c, okA && okB
	}
	fp1a, fp2a, fpOn := fastPath()
	load0 := loadAvg()
	vals := map[string][]float64{}   // path-kind -> received Gbit/s or pps per round
	cost := map[string][]float64{}   // path-kind -> sender CPU per Gbit or per datagram
	sent := map[string][]float64{}   // path-udp64 -> sent pps
	loss := map[string][]float64{}   // path-udp64 -> % of datagrams lost (receiver socket full)
	paired := map[string][]float64{} // kind-pod/anchor -> ratio within one round
	for round := 1; round <= rounds; round++ {
		for _, k := range kinds {
			// Rotate the order each round so that no path always runs first or right after another
			// path's traffic; paired ratios then compare runs seconds apart.
			got := map[string]float64{}
			for i := range paths {
				path := paths[(i+round-1)%len(paths)]
				r := measure(ip, path, k.udp)
				key := path + "-" + k.name
				v := value(r, k.udp)
				got[path] = v
				vals[key] = append(vals[key], v)
				if c := r.SenderCPUPerUnit(k.udp); c > 0 {
					cost[key] = append(cost[key], c)
				}
				if k.udp {
					sent[key] = append(sent[key], float64(r.SentPackets())/r.Seconds)
					loss[key] = append(loss[key], r.LossPercent())
				}
				b.Logf("round %d %s %s: %.4g (sender CPU %.0f%%, receiver CPU %.0f%%, loss %.1f%%)",
					round, k.name, path, v, r.SenderCPU, r.ReceiverCPU, r.LossPercent())
			}
			for _, anchor := range paths {
				if anchor != "pod" && got[anchor] > 0 {
					paired[k.name+"-pod/"+anchor] = append(paired[k.name+"-pod/"+anchor], got["pod"]/got[anchor])
				}
			}
		}
	}
	load1 := loadAvg()
	if fp1b, fp2b, _ := fastPath(); fpOn {
		note.Note("felix fast path on: it forwarded %d packets in host-1 and %d in host-2 during the rounds (the rest went through the IP stack and iptables)",
			fp1b-fp1a, fp2b-fp2a)
	} else {
		note.Note("felix fast path off or unavailable: every packet went through the IP stack and iptables")
	}

	out := os.Stdout
	for _, k := range kinds {
		pod := SpreadOf(vals["pod-"+k.name]).Median
		for _, anchor := range paths {
			if anchor == "pod" {
				continue
			}
			benchfmt.Fprint(out, benchfmt.New("datapath-"+k.name+"-pod-vs-"+anchor, k.metric, pod, k.unit).
				WithAnchor(SpreadOf(vals[anchor+"-"+k.name]).Median))
		}
	}
	note.Note("figures are medians of %d rounds of %ds (a 1s warm-up per path discarded, path order rotated per round); load average %s before, %s after",
		rounds, secs, load0, load1)
	for _, k := range kinds {
		for _, path := range paths {
			key := path + "-" + k.name
			note.Note("%s %s %s: %s", k.name, path, k.unit, SpreadOf(vals[key]))
		}
	}
	for _, k := range kinds {
		for _, anchor := range paths {
			if key := k.name + "-pod/" + anchor; len(paired[key]) > 0 {
				note.Note("per-round %s ratios (back to back): %s, median %s", key, FormatRatios(paired[key]),
					benchfmt.FormatRatio(SpreadOf(paired[key]).Median))
			}
		}
	}
	// Every hop of a packet on this testbed runs in the sender's softirq on the sender's CPU, so the
	// sender's CPU per unit is the path's cost, and it moves less with the neighbours' load than the rate.
	for _, k := range kinds {
		var parts []string
		for _, path := range paths {
			if c := cost[path+"-"+k.name]; len(c) > 0 {
				parts = append(parts, fmt.Sprintf("%s %s", path, benchfmt.FormatValue(SpreadOf(c).Median)))
			}
		}
		if len(parts) > 0 {
			note.Note("%s sender cost (median, %s): %s", k.name, k.costUnit, strings.Join(parts, ", "))
		}
	}
	var parts []string
	for _, path := range paths {
		key := path + "-udp64"
		parts = append(parts, fmt.Sprintf("%s sent %s pps, lost %s%%", path,
			benchfmt.FormatValue(SpreadOf(sent[key]).Median), benchfmt.FormatValue(SpreadOf(loss[key]).Median)))
	}
	note.Note("udp64 (medians; losses are datagrams the receiving socket had no room for): %s", strings.Join(parts, "; "))
	if strings.HasPrefix(routes, "static") {
		note.Note("figures above used routes installed by the benchmark, not BGP-learned routes")
	}
}

// loadAvg is the 1-minute load average, to print beside figures taken on a shared machine.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

func mustTx(ctx context.Context, b *testing.B, ns string) uint64 {
	n, err := TxPackets(ctx, ns, VXLANDev)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// ensurePodRoutes waits for the fabric to route between the pods over BGP (the ToR learns both pods'
// blocks from the hosts); when that does not happen in time it installs /32 routes with protocol
// static in tor-1 itself (the hosts already send everything else to their ToR) and says so.
func ensurePodRoutes(ctx context.Context, b *testing.B, tb *testbed.Testbed, h1, h2 testbed.HostState, podA, podB testbed.PodState) string {
	st := tb.State()
	tor := st.Tors[0]
	learned := func(addr string) bool {
		out, err := ipn(ctx, tor.NS, "-o", "route", "show", "match", addr)
		if err != nil {
			return false
		}
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, "default") && (strings.Contains(l, "proto bird") || strings.Contains(l, "proto 12 ")) {
				return true
			}
		}
		return false
	}
	start := time.Now()
	established := false
	for time.Since(start) < 30*time.Second {
		if learned(podA.IPv4) && learned(podB.IPv4) {
			h1bgp, _ := ipn(ctx, h1.NS, "-o", "route", "show", "proto", "81")
			return fmt.Sprintf("BGP: tor-1 learned both pods' routes from the hosts after %.1fs; host-1 held %d BGP-learned (proto 81) routes at that moment",
				time.Since(start).Seconds(), countLines(h1bgp))
		}
		if !established {
			if ss, err := tb.TorSessions(ctx, tor.Name); err == nil {
				for _, s := range ss {
					if strings.Contains(s.Info, "Established") {
						established = true
					}
				}
			}
			if !established && time.Since(start) > 12*time.Second {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, r := range []struct{ pod, via string }{{podA.IPv4, h1.Uplinks[0].HostAddr}, {podB.IPv4, h2.Uplinks[0].HostAddr}} {
		if _, err := ipn(ctx, tor.NS, "route", "replace", r.pod+"/32", "via", r.via, "proto", "static"); err != nil {
			b.Fatalf("install benchmark route: %v", err)
		}
	}
	why := "no BGP session established on tor-1"
	if established {
		why = "BGP sessions up but the pods' routes did not reach tor-1"
	}
	return fmt.Sprintf("static /32 routes installed by the benchmark in tor-1 (%s within %.0fs)", why, time.Since(start).Seconds())
}

func countLines(s string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

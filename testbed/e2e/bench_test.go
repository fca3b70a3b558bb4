package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/internal/benchfmt"
	"github.com/terracenet/terrace/testbed"
)

// BenchmarkBGPRouteScale: the ToR injects 1k, 10k and 100k prefixes; measured is the time from
// the injection until a host's kernel holds them all, for terrace-node (host-1) and, as anchor in
// the same run, BIRD alone (host-2); plus the peak RSS of each. Run once per size:
//
//	go test ./testbed/e2e -run '^$' -bench BGPRouteScale -benchtime 1x
//
// It prints BENCH lines (CONVENTIONS.md).
func BenchmarkBGPRouteScale(b *testing.B) {
	tb := testbed.StartForTest(b, testbed.Options{Hosts: 2, NoMesh: true, LogLevel: "warn"})
	ctx := context.Background()
	if err := tb.StopNode(ctx, "host-2"); err != nil {
		b.Fatal(err)
	}
	if err := tb.StartHostBird(ctx, "host-2", nil); err != nil {
		b.Fatal(err)
	}
	st := tb.State()
	nodePid, birdPid := st.Hosts[0].Node.Pid, st.Hosts[1].Bird.Pid
	// Both speakers must have their ToR session before the clock starts.
	waitSessions(b, tb, 2)
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			prefixes, err := testbed.InjectPrefixes(n)
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				base := [2]int{fibPrefixes(b, tb, "host-1"), fibPrefixes(b, tb, "host-2")}
				start := time.Now()
				if err := tb.InjectTorRoutes(ctx, "tor-1", prefixes); err != nil {
					b.Fatal(err)
				}
				node, bird := waitCounts(b, tb, n, base, start)
				// The clock used the FIB's prefix count; check the routes themselves once.
				if got, gotBird := routeCount(tb, "host-1", "81"), routeCount(tb, "host-2", "bird"); got != n || gotBird != n {
					b.Fatalf("after the clock stopped: terrace-node holds %d proto-81 routes, BIRD %d; want %d each", got, gotBird, n)
				}
				b.ReportMetric(node.Seconds(), "node-s")
				b.ReportMetric(bird.Seconds(), "bird-s")
				nodeRSS, birdRSS := peakRSS(nodePid), peakRSS(birdPid)
				scen := fmt.Sprintf("bgp-route-scale-%d", n)
				_ = benchfmt.Fprint(os.Stdout, benchfmt.New(scen, "kernel-time", node.Seconds(), "s").WithAnchor(bird.Seconds()).
					WithNote("anchor: BIRD alone on another host of the same fabric, same injection"))
				_ = benchfmt.Fprint(os.Stdout, benchfmt.New(scen, "peak-rss", nodeRSS, "MB").WithAnchor(birdRSS).
					WithNote("terrace-node VmHWM (felix + bgp agent + GoBGP); anchor: BIRD's VmHWM"))
				if err := tb.InjectTorRoutes(ctx, "tor-1", nil); err != nil {
					b.Fatal(err)
				}
				waitZero(b, tb)
			}
		})
	}
}

func waitSessions(b *testing.B, tb *testbed.Testbed, want int) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ss, _ := tb.TorSessions(context.Background(), "tor-1")
		up := 0
		for _, s := range ss {
			if s.Info == "Established" {
				up++
			}
		}
		if up >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("tor-1 sessions not established")
}

// routeCount counts a host's routes of one protocol inside the injected range.
func routeCount(tb *testbed.Testbed, host, proto string) int {
	out, err := tb.Output(context.Background(), host, "sh", "-c", "ip -4 route show proto "+proto+" | grep -c '^198\\.'")
	if err != nil && strings.TrimSpace(out) != "0" {
		return -1
	}
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

// waitCounts waits until both hosts' main FIB holds n prefixes more than base. It polls the
// kernel's trie statistics rather than listing routes: a listing of 100k routes costs a few
// hundred milliseconds of CPU, and polling with it kept one of the two cores busy, slowing both
// speakers down (the slower one more) while they were being measured.
func waitCounts(b *testing.B, tb *testbed.Testbed, n int, base [2]int, start time.Time) (node, bird time.Duration) {
	deadline := start.Add(120 * time.Second)
	for (node == 0 || bird == 0) && time.Now().Before(deadline) {
		if node == 0 && fibPrefixes(b, tb, "host-1")-base[0] >= n {
			node = time.Since(start)
		}
		if bird == 0 && fibPrefixes(b, tb, "host-2")-base[1] >= n {
			bird = time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if node == 0 || bird == 0 {
		b.Fatalf("%d routes not in the kernels after 120s: terrace-node %d, bird %d", n,
			routeCount(tb, "host-1", "81"), routeCount(tb, "host-2", "bird"))
	}
	return node, bird
}

// fibPrefixes is the number of prefixes in a host's main IPv4 FIB, from /proc/net/fib_triestat.
func fibPrefixes(b *testing.B, tb *testbed.Testbed, host string) int {
	out, err := tb.Output(context.Background(), host, "cat", "/proc/net/fib_triestat")
	if err != nil {
		b.Fatalf("read %s's FIB statistics: %v", host, err)
	}
	n, err := parseTrieStat(out)
	if err != nil {
		b.Fatalf("%s: %v", host, err)
	}
	return n
}

// parseTrieStat returns the "Prefixes:" figure of the Main section of /proc/net/fib_triestat.
func parseTrieStat(s string) (int, error) {
	inMain := false
	for _, l := range strings.Split(s, "\n") {
		switch t := strings.TrimSpace(l); {
		case t == "Main:":
			inMain = true
		case strings.HasSuffix(t, ":") && !strings.Contains(t, " "):
			inMain = false // the next table (Local:)
		case inMain && strings.HasPrefix(t, "Prefixes:"):
			return strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(t, "Prefixes:")))
		}
	}
	return 0, fmt.Errorf("parse fib_triestat: no Prefixes line in the Main table")
}

func waitZero(b *testing.B, tb *testbed.Testbed) {
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		if routeCount(tb, "host-1", "81") == 0 && routeCount(tb, "host-2", "bird") == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatal("withdrawn routes still in the kernels after 120s")
}

// peakRSS is a process's high-water resident set in MB (VmHWM).
func peakRSS(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkBGPMeshConvergence: 20 hosts in a full mesh; in each trial the first pod on one more
// host gives it a new block. The clock runs from the moment the CNI ADD has returned (the block is
// claimed by then) until the block is in every other host's kernel, read through netlink in each
// host's namespace every 2 ms; the time from the start of the pod add is reported too, as an upper
// bound that includes the ADD. Trials start once every mesh session is established. Reports p50
// and p99 over the 20 trials.
func BenchmarkBGPMeshConvergence(b *testing.B) {
	const hosts = 20
	tb := testbed.StartForTest(b, testbed.Options{Hosts: hosts, LogLevel: "warn"})
	ctx := context.Background()
	handles := make([]*netlink.Handle, 0, hosts)
	for _, h := range tb.Hosts() {
		ns, err := tb.Namespace(h)
		if err != nil {
			b.Fatal(err)
		}
		nsh, err := netns.GetFromName(ns)
		if err != nil {
			b.Fatalf("open namespace of %s: %v", h, err)
		}
		hd, err := netlink.NewHandleAt(nsh)
		nsh.Close()
		if err != nil {
			b.Fatalf("open netlink in %s: %v", h, err)
		}
		b.Cleanup(hd.Close)
		handles = append(handles, hd)
	}
	waitMesh(b, tb, hosts-1)
	for range b.N {
		var fromAdded, fromStart []time.Duration
		for i, h := range tb.Hosts() {
			start := time.Now()
			p, err := tb.AddPod(ctx, testbed.PodSpec{Host: h, Name: "conv"})
			if err != nil {
				b.Fatal(err)
			}
			added := time.Now()
			block := netip.PrefixFrom(netip.MustParseAddr(p.IPv4), 26).Masked()
			deadline := start.Add(30 * time.Second)
			for !blockEverywhere(b, handles, i, block) {
				if time.Now().After(deadline) {
					b.Fatalf("block %s of %s not in every kernel after 30s", block, h)
				}
				time.Sleep(2 * time.Millisecond)
			}
			fromAdded = append(fromAdded, time.Since(added))
			fromStart = append(fromStart, time.Since(start))
		}
		slices.Sort(fromAdded)
		slices.Sort(fromStart)
		last := len(fromAdded) - 1 // 20 samples: p99 is the worst
		_ = benchfmt.Fprint(os.Stdout, benchfmt.New("bgp-mesh-convergence-20", "p50", float64(fromAdded[last/2+last%2].Milliseconds()), "ms"))
		_ = benchfmt.Fprint(os.Stdout, benchfmt.New("bgp-mesh-convergence-20", "p99", float64(fromAdded[last].Milliseconds()), "ms").
			WithNote("20 trials, one new block each, from the CNI ADD's return (block claimed) to the block in all 19 other kernels"))
		_ = benchfmt.Fprint(os.Stdout, benchfmt.New("bgp-mesh-convergence-20-from-pod-add", "p99", float64(fromStart[last].Milliseconds()), "ms").
			WithNote(fmt.Sprintf("upper bound including the pod add; p50 %d ms", fromStart[last/2+last%2].Milliseconds())))
		b.ReportMetric(float64(fromAdded[last].Milliseconds()), "p99-ms")
	}
}

// blockEverywhere reports whether every host but skip has a BGP route (protocol 81) for block.
func blockEverywhere(b *testing.B, handles []*netlink.Handle, skip int, block netip.Prefix) bool {
	dst := &net.IPNet{IP: net.IP(block.Addr().AsSlice()), Mask: net.CIDRMask(block.Bits(), 32)}
	for j, hd := range handles {
		if j == skip {
			continue
		}
		rs, err := hd.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Protocol: 81},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			b.Fatalf("list routes: %v", err)
		}
		if len(rs) == 0 {
			return false
		}
	}
	return true
}

// waitMesh waits until every host reports want established mesh sessions.
func waitMesh(b *testing.B, tb *testbed.Testbed, want int) {
	deadline := time.Now().Add(120 * time.Second)
	for _, h := range tb.Hosts() {
		for {
			st, ok := bgpStatus(b, tb, h)
			up := 0
			for _, p := range st.Peers {
				if p.Type == speaker.PeerTypeMesh && p.State == "established" {
					up++
				}
			}
			if ok && up >= want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s has %d of %d mesh sessions established after 120s", h, up, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

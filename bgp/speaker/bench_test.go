package speaker

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/terracenet/terrace/internal/benchfmt"
)

// benchPrefixes returns n distinct /32s in the benchmarking range 198.18.0.0/15.
func benchPrefixes(n int) map[netip.Prefix]Advert {
	m := make(map[netip.Prefix]Advert, n)
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		m[netip.PrefixFrom(a, 32)] = Advert{NextHop: addrA}
	}
	return m
}

// countingSink records when it first holds want routes.
type countingSink struct {
	want  int
	done  chan time.Time
	mu    sync.Mutex
	table map[netip.Prefix][]netip.Addr
	first time.Time // first delivery that carried routes
}

func (c *countingSink) UpdateLearnedRoutes(m map[netip.Prefix][]netip.Addr, full bool) {
	c.mu.Lock()
	c.table = ApplyRouteChanges(c.table, m, full)
	n := len(c.table)
	if c.first.IsZero() && n > 0 {
		c.first = time.Now()
	}
	c.mu.Unlock()
	if os.Getenv("BGP_BENCH_TRACE") != "" {
		fmt.Fprintf(os.Stderr, "%s sink %d\n", time.Now().Format("15:04:05.000"), n)
	}
	if n >= c.want {
		select {
		case c.done <- time.Now():
		default:
		}
	}
}

// BenchmarkLearn measures how long a speaker takes from session configuration until its sink
// holds every prefix another in-process speaker already had in its RIB, and the heap in use
// afterwards (both speakers live in this process: the heap figure covers sender and receiver).
// Run: go test -run '^$' -bench BenchmarkLearn -benchtime 1x ./bgp/speaker/
func BenchmarkLearn(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			for range b.N {
				learnOnce(b, n)
			}
		})
	}
}

func learnOnce(b *testing.B, n int) {
	b.StopTimer()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	port := freePort(b, addrA, addrB)
	sender := startSpeaker(b, addrA, asn, port, nil)
	sink := &countingSink{want: n, done: make(chan time.Time, 1)}
	receiver := startSpeaker(b, addrB, asn, port, func(o *Options, _ *Global) { o.Sink = sink })
	prefixes := benchPrefixes(n)
	t0 := time.Now()
	advertise(b, sender, prefixes)
	addTime := time.Since(t0)
	// Let the sender's own best-path watch drain its 100k local-path events and collect the
	// garbage of the setup, so the timed part measures the receive path.
	time.Sleep(time.Second)
	runtime.GC()

	cpu0 := cpuTime()
	b.StartTimer()
	start := time.Now()
	setPeers(b, receiver, peerOf(receiver, sender))
	setPeers(b, sender, peerOf(sender, receiver))
	var end time.Time
	select {
	case end = <-sink.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("sink never held %d routes", n)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	elapsed := end.Sub(start)
	sink.mu.Lock()
	first := sink.first
	sink.mu.Unlock()

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse-min(after.HeapInuse, before.HeapInuse)) / (1 << 20)
	b.ReportMetric(float64(elapsed.Milliseconds()), "ms-to-sink")
	b.ReportMetric(heap, "MB-heap")
	scenario := fmt.Sprintf("bgp-learn-%dk", n/1000)
	out := benchfmt.Printer{W: os.Stdout, Scenario: scenario}
	out.Value("time_to_sink", float64(elapsed.Milliseconds()), "ms")
	// From the first delivery that carried routes (at most one debounce after the first route
	// arrived) to the one that held them all: the receive pipeline without session setup.
	out.Value("first_to_all", float64(end.Sub(first).Milliseconds()), "ms")
	// CPU time of the whole process in the timed window: unlike wall time it does not depend on
	// what else the machine runs.
	out.Value("cpu_both_speakers", float64(cpu.Milliseconds()), "ms")
	out.Value("heap_inuse_both_speakers", float64(int(heap+0.5)), "MB")
	out.Value("sender_addpath", float64(addTime.Milliseconds()), "ms")
	receiver.Stop()
	sender.Stop()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

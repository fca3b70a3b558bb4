package speaker

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// slowSink takes a long time per call, like a route writer stuck behind the kernel.
type slowSink struct {
	mu    sync.Mutex
	delay time.Duration
	calls []int // size of each delivered map
}

func (s *slowSink) SetLearnedRoutes(m map[netip.Prefix][]netip.Addr) {
	time.Sleep(s.delay)
	s.mu.Lock()
	s.calls = append(s.calls, len(m))
	s.mu.Unlock()
}

func (s *slowSink) get() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.calls...)
}

func pathFor(t testing.TB, i int) *api.Path {
	p, err := buildPath(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32), Advert{NextHop: addrB})
	if err != nil {
		t.Fatal(err)
	}
	p.NeighborIp = addrB.String()
	return p
}

func TestSlowSinkGetsLatestStateOnly(t *testing.T) {
	sink := &slowSink{delay: 200 * time.Millisecond}
	l := newLearnedRoutes(sink, 5*time.Millisecond, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	defer func() { cancel(); <-done }()

	const n = 2000
	for i := range n {
		l.apply([]*api.Path{pathFor(t, i)})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		calls := sink.get()
		if len(calls) > 0 && calls[len(calls)-1] == n {
			// 2000 changes while the sink is busy must collapse into a handful of calls.
			if len(calls) > 5 {
				t.Errorf("sink called %d times for one burst: %v", len(calls), calls)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink never received all %d routes: calls %v", n, calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSteadyChangesStillDelivered(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	sink := sinkFunc(func(map[netip.Prefix][]netip.Addr) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
	})
	l := newLearnedRoutes(sink, 20*time.Millisecond, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	defer func() { cancel(); <-done }()

	// A change every 5 ms never leaves 20 ms of quiet; maxDelay must still force deliveries.
	start := time.Now()
	for i := 0; time.Since(start) < 600*time.Millisecond; i++ {
		l.apply([]*api.Path{pathFor(t, i)})
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	got := len(times)
	mu.Unlock()
	if got < 3 {
		t.Errorf("only %d deliveries during 600 ms of continuous change with maxDelay 100 ms", got)
	}
}

type sinkFunc func(map[netip.Prefix][]netip.Addr)

func (f sinkFunc) SetLearnedRoutes(m map[netip.Prefix][]netip.Addr) { f(m) }

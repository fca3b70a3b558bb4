package ipam

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/internal/benchfmt"
)

// The benchmarks do a fixed amount of work whatever b.N is (`make bench` runs -benchtime 1x) and
// print one BENCH line per figure (CONVENTIONS.md).

// benchEnv stores the pools in etcd and gives allocators the real typed client, so every
// allocation pays for reading pools and IPAM configuration as it does in production.
func benchEnv(b *testing.B) *testEnv {
	e := newTestEnv(b)
	e.real = true
	ds := datastore.New(e.store(), embedded.TestLogger())
	for _, p := range []struct{ name, cidr string }{{"p4", "198.18.0.0/16"}, {"p6", "2001:db8:1000::/48"}} {
		pool := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
			Metadata: api.ObjectMeta{Name: p.name}, Spec: api.IPPoolSpec{CIDR: p.cidr}}
		if _, err := ds.Create(context.Background(), pool); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

func BenchmarkSequentialAllocation(b *testing.B) {
	e := benchEnv(b)
	a := e.allocator()
	ctx := context.Background()
	const n = 2000
	lat := make([]time.Duration, 0, n)
	b.ResetTimer()
	for i := range n {
		start := time.Now()
		if _, err := a.AutoAssign(ctx, AutoAssignArgs{Node: "host-1", Handle: fmt.Sprintf("seq-%d", i), Num4: 1}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	p50, p99 := lat[n/2], lat[n*99/100]
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	out := benchfmt.Printer{W: os.Stdout, Scenario: "ipam-sequential"}
	out.Anchored("p50", ms(p50), "ms", 2)
	out.Value("p99", ms(p99), "ms")
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	if held := snapshot(b, e.store()); len(held) != n {
		b.Fatalf("%d held, want %d", len(held), n)
	}
}

// concurrent runs hosts × perHost goroutines allocating for d on one Allocator per host and
// reports allocations per second and compare-and-swap retries per allocation.
func concurrent(b *testing.B, scenario string, hosts, perHost int, d time.Duration) {
	e := benchEnv(b)
	var allocs atomic.Int64
	var allocators []*Allocator
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, hosts*perHost)
	b.ResetTimer()
	start := time.Now()
	for h := range hosts {
		a := e.allocator()
		allocators = append(allocators, a)
		node := fmt.Sprintf("host-%d", h+1)
		for g := range perHost {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					_, err := a.AutoAssign(context.Background(), AutoAssignArgs{Node: node, Handle: fmt.Sprintf("%s-%d-%d", node, g, i), Num4: 1})
					if err != nil {
						errs <- err
						return
					}
					allocs.Add(1)
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	var retries, commits int64
	for _, a := range allocators {
		retries += a.Retries()
		commits += a.commits.Load()
	}
	n := allocs.Load()
	held := snapshot(b, e.store())
	dups := n - int64(len(held)) // snapshot fails the benchmark on any address held twice
	rate := float64(n) / elapsed.Seconds()
	out := benchfmt.Printer{W: os.Stdout, Scenario: scenario}
	out.Anchored("allocs", rate, "/s", 1000)
	out.Value("retries", float64(retries)/float64(n), "/alloc")
	out.Value("duplicates", float64(dups), "")
	out.Value("batch", float64(n)/float64(commits), "/commit")
	b.ReportMetric(rate, "allocs/s")
	b.ReportMetric(float64(retries)/float64(n), "retries/alloc")
	if dups != 0 {
		b.Fatalf("%d allocations, %d addresses held", n, len(held))
	}
}

func BenchmarkConcurrentOneHost(b *testing.B) {
	concurrent(b, "ipam-1host-x8", 1, 8, 3*time.Second)
}

func BenchmarkConcurrentFourHosts(b *testing.B) {
	concurrent(b, "ipam-4hosts-x8", 4, 8, 3*time.Second)
}

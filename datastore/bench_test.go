package datastore

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

type revChan struct {
	once   sync.Once
	inSync chan struct{}
	revs   chan int64
}

func (r *revChan) OnStatus(s kv.Status) {
	if s == kv.StatusInSync {
		r.once.Do(func() { close(r.inSync) })
	}
}

func (r *revChan) OnUpdates(ups []ResourceUpdate) {
	for _, u := range ups {
		r.revs <- u.Revision
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / float64(time.Millisecond) }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkTypedSyncerLatency is the raw put of a stored IPPool to its decoded delivery through the
// typed syncer: kv.Syncer plus key parsing and JSON decoding.
func BenchmarkTypedSyncerLatency(b *testing.B) {
	c := newClientB(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	created, err := c.Create(ctx, pool("bench", "198.18.0.0/24"))
	if err != nil {
		b.Fatal(err)
	}
	created.GetObjectMeta().ResourceVersion = ""
	data, err := api.Marshal(created)
	if err != nil {
		b.Fatal(err)
	}
	sig := &revChan{inSync: make(chan struct{}), revs: make(chan int64, 1024)}
	y := NewSyncer(c, []string{"ippool"}, sig, nil)
	done := make(chan struct{})
	go func() { y.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-sig.inSync
	key := Key(mustKind(b, "ippool"), "", "bench")
	lat := make([]time.Duration, 0, 4096)
	for b.Loop() {
		t0 := time.Now()
		rev, err := c.Store().Put(ctx, key, data)
		if err != nil {
			b.Fatal(err)
		}
		for got := int64(0); got < rev; {
			got = <-sig.revs
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat)
}

// BenchmarkApply is a full typed write: defaults, validation, overlap check and CAS.
func BenchmarkApply(b *testing.B) {
	c := newClientB(b)
	ctx := context.Background()
	p := pool("bench", "198.18.0.0/24")
	lat := make([]time.Duration, 0, 4096)
	for i := 0; b.Loop(); i++ {
		p.Spec.NATOutgoing = i%2 == 0
		t0 := time.Now()
		if _, _, err := c.Apply(ctx, p); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat)
}

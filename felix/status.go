package felix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/kv"
)

const (
	// statusBatch keeps a transaction below etcd's default limit of 128 operations; a start with
	// 1,000 endpoints is then 10 requests instead of 1,000.
	statusBatch = 100
	// statusWorkers transactions are in flight at once, so etcd's fsyncs overlap.
	statusWorkers = 4
)

// statusWriter writes endpoint status keys from its own goroutine, so etcd latency never holds
// up the dataplane loop. Only the latest wanted state matters: a burst of applies costs one pass.
type statusWriter struct {
	store   StatusStore
	prefix  string
	log     *slog.Logger
	metrics *metrics
	health  *health

	mu   sync.Mutex
	want map[string]int64
	kick chan struct{}

	// Owned by run.
	have   map[string]int64 // what etcd holds, as far as we know
	loaded bool
}

func newStatusWriter(store StatusStore, prefix string, log *slog.Logger, m *metrics, h *health) *statusWriter {
	return &statusWriter{store: store, prefix: prefix, log: log, metrics: m, health: h,
		kick: make(chan struct{}, 1), have: map[string]int64{}}
}

// set replaces the wanted statuses (key => WorkloadEndpoint revision).
func (s *statusWriter) set(want map[string]int64) {
	s.mu.Lock()
	s.want = want
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *statusWriter) run(ctx context.Context) error {
	var retry <-chan time.Time
	delay := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-retry:
		}
		s.mu.Lock()
		want := s.want
		s.mu.Unlock()
		if want == nil {
			continue
		}
		err := s.sync(ctx, want)
		s.health.setWriterErr("status", err)
		if err == nil {
			delay, retry = 0, nil
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		s.metrics.writerError("status")
		delay = min(max(2*delay, DefaultRetryMin), 10*time.Second)
		s.log.Warn("writing endpoint status failed; retrying", "retry_in", delay.String(), "err", err)
		retry = time.After(delay)
	}
}

// sync brings etcd in line with want: stale keys of endpoints that went away are deleted, and
// keys are written only where the revision differs.
func (s *statusWriter) sync(ctx context.Context, want map[string]int64) error {
	if !s.loaded {
		// Statuses of a previous run are kept where still right and removed where not.
		kvs, _, err := s.store.List(ctx, s.prefix)
		if err != nil {
			return fmt.Errorf("list endpoint status: %w", err)
		}
		for _, e := range kvs {
			st, err := datastore.ParseEndpointStatus(e.Value)
			if err != nil || !st.Programmed {
				st.Revision = -1
			}
			s.have[e.Key] = st.Revision
		}
		s.loaded = true
	}
	var puts []string
	for k, rev := range want {
		if have, ok := s.have[k]; !ok || have != rev {
			puts = append(puts, k)
		}
	}
	slices.Sort(puts)
	var dels []string
	for k := range s.have {
		if _, ok := want[k]; !ok {
			dels = append(dels, k)
		}
	}
	slices.Sort(dels)
	return errors.Join(s.put(ctx, puts, want), s.delete(ctx, dels))
}

func (s *statusWriter) put(ctx context.Context, keys []string, want map[string]int64) error {
	ops := make([]kv.Op, len(keys))
	for i, k := range keys {
		ops[i] = kv.Op{Kind: kv.OpPut, Key: k, Value: datastore.EndpointStatus{Programmed: true, Revision: want[k]}.Marshal()}
	}
	return s.commit(ctx, ops, "write", func(op kv.Op) { s.have[op.Key] = want[op.Key] }, &s.metrics.statusWrites)
}

func (s *statusWriter) delete(ctx context.Context, keys []string) error {
	ops := make([]kv.Op, len(keys))
	for i, k := range keys {
		ops[i] = kv.Op{Kind: kv.OpDelete, Key: k}
	}
	return s.commit(ctx, ops, "delete", func(op kv.Op) { delete(s.have, op.Key) }, &s.metrics.statusDeletes)
}

// commit writes ops in transactions of statusBatch, statusWorkers at a time; done records each
// op of a transaction that went through. Batches fail independently.
func (s *statusWriter) commit(ctx context.Context, ops []kv.Op, verb string, done func(kv.Op), count *atomic.Uint64) error {
	if len(ops) == 0 {
		return nil
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan []kv.Op)
	for range min(statusWorkers, (len(ops)+statusBatch-1)/statusBatch) {
		wg.Go(func() {
			for chunk := range work {
				_, err := s.store.Commit(ctx, chunk...)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s %d endpoint statuses from %s: %w", verb, len(chunk), chunk[0].Key, err))
				} else {
					for _, op := range chunk {
						done(op)
					}
					s.metrics.add(count, uint64(len(chunk)))
				}
				mu.Unlock()
			}
		})
	}
	for chunk := range slices.Chunk(ops, statusBatch) {
		work <- chunk
	}
	close(work)
	wg.Wait()
	return errors.Join(errs...)
}

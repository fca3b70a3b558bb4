package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

var errConnLost = errors.New("connection to etcd lost")

// maxBatch caps how many queued watch responses are folded into one OnUpdates call, so a
// consumer sees progress during a burst instead of one enormous slice at its end.
const maxBatch = 512

// Syncer lists then watches prefixes and keeps consumers in step, relisting after compaction or
// a lost connection and emitting the difference (including deletes) before InSync again.
//
// All prefixes are watched through one watch on their longest common prefix, so updates across
// prefixes arrive in etcd's revision order.
type Syncer struct {
	store    *Store
	prefixes []string
	cb       Callbacks
	log      *slog.Logger

	watchKey string
	known    map[string]int64 // key -> mod revision of what the consumer was last told
	status   Status
	sent     bool // whether any status was emitted yet

	minBackoff, maxBackoff time.Duration
	lostAfter              time.Duration // connection not ready this long counts as lost
	afterList              func(rev int64)
}

// NewSyncer makes a syncer; Run starts it.
func NewSyncer(s *Store, prefixes []string, cb Callbacks, log *slog.Logger) *Syncer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ps := dedupePrefixes(prefixes)
	return &Syncer{
		store:      s,
		prefixes:   ps,
		cb:         cb,
		log:        log,
		watchKey:   commonPrefix(ps),
		known:      map[string]int64{},
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 5 * time.Second,
		lostAfter:  3 * time.Second,
	}
}

// dedupePrefixes sorts prefixes and drops those covered by a shorter one, so no key is listed twice.
func dedupePrefixes(prefixes []string) []string {
	ps := append([]string(nil), prefixes...)
	sort.Strings(ps)
	var out []string
	for _, p := range ps {
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

func commonPrefix(ps []string) string {
	c := ps[0]
	for _, p := range ps[1:] {
		n := 0
		for n < len(c) && n < len(p) && c[n] == p[n] {
			n++
		}
		c = c[:n]
	}
	return c
}

func (y *Syncer) wanted(key string) bool {
	for _, p := range y.prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

func (y *Syncer) setStatus(st Status) {
	if y.sent && y.status == st {
		return
	}
	y.status, y.sent = st, true
	y.log.Debug("syncer status", "status", st.String())
	y.cb.OnStatus(st)
}

// Run blocks until ctx is done, calling the callbacks from this goroutine only. It returns nil
// when ctx ends; failures of etcd are retried with backoff, never returned.
func (y *Syncer) Run(ctx context.Context) error {
	y.setStatus(StatusWaitForDatastore)
	backoff := y.minBackoff
	for {
		rev, err := y.resync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			y.log.Warn("syncer cannot list, retrying", "error", err, "backoff", backoff)
			y.setStatus(StatusWaitForDatastore)
		} else {
			started := time.Now()
			err = y.watch(ctx, rev)
			if ctx.Err() != nil {
				return nil
			}
			y.log.Warn("syncer watch ended, resyncing", "error", err, "revision", rev)
			if errors.Is(err, errConnLost) {
				y.setStatus(StatusWaitForDatastore)
			}
			if time.Since(started) > 10*time.Second {
				backoff = y.minBackoff
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, y.maxBackoff)
	}
}

// resync lists every prefix at one revision and tells the consumer the difference from what it
// was told before: puts for new or changed keys, deletes for keys that vanished.
func (y *Syncer) resync(ctx context.Context) (int64, error) {
	lctx, cancel := y.store.reqCtx(ctx)
	defer cancel()
	var (
		all []KV
		rev int64
	)
	for _, p := range y.prefixes {
		kvs, r, err := y.store.listAt(lctx, p, rev)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", p, err)
		}
		rev = r
		all = append(all, kvs...)
	}
	y.setStatus(StatusResyncInProgress)
	var ups []Update
	seen := make(map[string]int64, len(all))
	for _, kv := range all {
		seen[kv.Key] = kv.Revision
		if y.known[kv.Key] != kv.Revision {
			ups = append(ups, Update{Type: UpdatePut, KV: kv})
		}
	}
	var gone []string
	for k := range y.known {
		if _, ok := seen[k]; !ok {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		ups = append(ups, Update{Type: UpdateDelete, KV: KV{Key: k, Revision: rev}})
	}
	y.known = seen
	if len(ups) > 0 {
		y.cb.OnUpdates(ups)
	}
	y.setStatus(StatusInSync)
	if y.afterList != nil {
		y.afterList(rev)
	}
	return rev, nil
}

// watch delivers changes after rev until the watch fails, the connection is lost or ctx ends.
func (y *Syncer) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRev(rev + 1)}
	key := y.watchKey
	if key == "" {
		key = "\x00"
		opts = append(opts, clientv3.WithFromKey())
	} else {
		opts = append(opts, clientv3.WithPrefix())
	}
	// The monitor starts first: Watch itself blocks while a silent server never confirms the
	// watch, and the monitor's cancel is what ends that wait.
	lost := y.monitor(wctx, cancel)
	wch := y.store.cli.Watch(wctx, key, opts...)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lost:
			return errConnLost
		case resp, ok := <-wch:
			var ups []Update
			flush := func() {
				if len(ups) > 0 {
					y.cb.OnUpdates(ups)
				}
			}
			for n := 0; ; n++ {
				if !ok {
					flush()
					select {
					case <-lost: // the monitor's cancel closed the watch
						return errConnLost
					default:
					}
					return errors.New("watch channel closed")
				}
				if err := resp.Err(); err != nil {
					// Deliver what came before the failure so the consumer's view stays ordered.
					flush()
					return fmt.Errorf("watch %s from revision %d: %w", key, rev+1, err)
				}
				ups = y.convert(ups, resp.Events)
				if n >= maxBatch {
					break
				}
				// Fold responses already queued into this batch: fewer, larger callbacks under load.
				more := false
				select {
				case resp, ok = <-wch:
					more = true
				default:
				}
				if !more {
					break
				}
			}
			flush()
		}
	}
}

func (y *Syncer) convert(ups []Update, evs []*clientv3.Event) []Update {
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if !y.wanted(key) {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(y.known, key)
			ups = append(ups, Update{Type: UpdateDelete, KV: KV{Key: key, Revision: ev.Kv.ModRevision}})
			continue
		}
		y.known[key] = ev.Kv.ModRevision
		ups = append(ups, Update{Type: UpdatePut, KV: fromPB(ev.Kv)})
	}
	return ups
}

// monitor closes the returned channel once the client's connection has not been ready for
// lostAfter, or a ready-looking connection stops answering. etcd's watch would silently wait for
// the server to come back; the consumer should instead learn that it is no longer in sync.
func (y *Syncer) monitor(ctx context.Context, onLost func()) <-chan struct{} {
	lost := make(chan struct{})
	conn := y.store.cli.ActiveConnection()
	if conn == nil {
		return lost
	}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		lastReady, lastProbe := time.Now(), time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			switch conn.GetState() {
			case connectivity.Ready:
				// A connection stays "ready" while its peer is silently gone (a host that died
				// without closing its sockets) until TCP keepalive notices, 15s later. A
				// cheap read now and then finds that out within lostAfter.
				if time.Since(lastProbe) >= y.lostAfter/2 {
					lastProbe = time.Now()
					if !y.probe(ctx) {
						if ctx.Err() == nil {
							close(lost)
							onLost()
						}
						return
					}
				}
				lastReady = time.Now()
			default:
				if time.Since(lastReady) > y.lostAfter {
					close(lost)
					onLost()
					return
				}
			}
		}
	}()
	return lost
}

// probe reads at most one key name under the watched prefix, a read the syncer is allowed to
// make anyway, and reports false only when etcd did not answer within lostAfter.
func (y *Syncer) probe(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, y.lostAfter)
	defer cancel()
	key, opts := "\x00", []clientv3.OpOption{clientv3.WithFromKey()}
	if y.watchKey != "" {
		key, opts = y.watchKey, []clientv3.OpOption{clientv3.WithPrefix()}
	}
	opts = append(opts, clientv3.WithLimit(1), clientv3.WithKeysOnly(), clientv3.WithSerializable())
	_, err := y.store.cli.Get(pctx, key, opts...)
	return err == nil || pctx.Err() == nil
}

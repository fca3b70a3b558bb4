package datastore

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// ResourceUpdate is one typed change. Resource is nil on delete.
type ResourceUpdate struct {
	Type      kv.UpdateType
	Kind      string
	Namespace string
	Name      string
	Resource  api.Resource
	Revision  int64
}

// SyncCallbacks receive a Syncer's output, always from one goroutine, in order.
type SyncCallbacks interface {
	OnStatus(kv.Status)
	OnUpdates([]ResourceUpdate)
}

// Syncer keeps a consumer in step with the resources of some kinds.
type Syncer struct {
	inner *kv.Syncer
	err   error
}

// NewSyncer watches the given kinds (any name LookupKind accepts; none = every kind). An unknown
// kind makes Run fail at once.
func NewSyncer(c *Client, kinds []string, cb SyncCallbacks, log *slog.Logger) *Syncer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefixes := []string{KeyPrefix}
	if len(kinds) > 0 {
		prefixes = prefixes[:0]
		for _, k := range kinds {
			info, err := lookup(k)
			if err != nil {
				return &Syncer{err: fmt.Errorf("start syncer: %w", err)}
			}
			prefixes = append(prefixes, kindPrefix(info, ""))
		}
	}
	a := &adapter{cb: cb, log: log}
	return &Syncer{inner: kv.NewSyncer(c.store, prefixes, a, log)}
}

// Run blocks until ctx is done; see kv.Syncer.Run.
func (y *Syncer) Run(ctx context.Context) error {
	if y.err != nil {
		return y.err
	}
	return y.inner.Run(ctx)
}

// adapter decodes kv updates for the typed consumer.
type adapter struct {
	cb  SyncCallbacks
	log *slog.Logger
}

func (a *adapter) OnStatus(s kv.Status) { a.cb.OnStatus(s) }

func (a *adapter) OnUpdates(ups []kv.Update) {
	out := make([]ResourceUpdate, 0, len(ups))
	for _, u := range ups {
		info, ns, name, err := ParseKey(u.KV.Key)
		if err != nil {
			// Not a resource key (e.g. something else under /terrace/v1/): not ours to report.
			a.log.Debug("syncer ignores key", "key", u.KV.Key, "error", err)
			continue
		}
		ru := ResourceUpdate{Type: u.Type, Kind: info.Kind, Namespace: ns, Name: name, Revision: u.KV.Revision}
		if u.Type == kv.UpdatePut {
			r, err := decode(u.KV)
			if err != nil {
				// A consumer must not keep acting on an older version of something now unreadable,
				// so it is told the resource is gone.
				a.log.Warn("undecodable resource reported as deleted", "key", u.KV.Key, "error", err)
				ru.Type = kv.UpdateDelete
			} else {
				ru.Resource = r
			}
		}
		out = append(out, ru)
	}
	if len(out) > 0 {
		a.cb.OnUpdates(out)
	}
}

package ipam

import (
	"log/slog"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/kv"
)

// New returns an Allocator on store (IPAM keys) and ds (pools, IPAM configuration, nodes and
// workload endpoints, read only).
func New(store *kv.Store, ds *datastore.Client, log *slog.Logger) *Allocator {
	var r resources
	if ds != nil {
		r = ds
	}
	return newAllocator(store, r, log)
}

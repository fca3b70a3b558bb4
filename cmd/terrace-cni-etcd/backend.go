package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/terracenet/terrace/cni"
	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

// dialTimeout bounds the connection attempt: a runtime retries a plugin that says "try again
// later" sooner than it would kill one that hangs.
const dialTimeout = 5 * time.Second

// backend is cni.Backend on etcd: the typed datastore client for WorkloadEndpoints, ipam for
// addresses, kv for raw status keys.
type backend struct {
	store *kv.Store
	ds    *datastore.Client
	alloc *ipam.Allocator
}

func connect(ctx context.Context, cfg cni.EtcdConfig, log *slog.Logger) (cni.Backend, error) {
	store, err := kv.Open(ctx, kv.Config{
		Endpoints: cfg.Endpoints, CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.Key,
		DialTimeout: dialTimeout,
	}, log)
	if errors.Is(err, kv.ErrTLSConfig) {
		return nil, fmt.Errorf("%w: %w", cni.ErrBadDatastoreConfig, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", cni.ErrUnavailable, err)
	}
	ds := datastore.New(store, log)
	return &backend{store: store, ds: ds, alloc: ipam.New(store, ds, log)}, nil
}

func (b *backend) Close() error { return b.store.Close() }

// dsError is a datastore error also matching the cni sentinel it means; its message is the
// datastore's own.
type dsError struct{ err, sentinel error }

func (e dsError) Error() string   { return e.err.Error() }
func (e dsError) Unwrap() []error { return []error{e.err, e.sentinel} }

// mark adds the cni sentinel a datastore error means (package cni does not link kv, so it cannot
// match kv's errors itself).
func mark(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kv.ErrNotFound):
		return dsError{err, cni.ErrNotFound}
	case errors.Is(err, kv.ErrExists):
		return dsError{err, cni.ErrExists}
	case errors.Is(err, kv.ErrConflict):
		return dsError{err, cni.ErrConflict}
	}
	return err
}

func (b *backend) GetEndpoint(ctx context.Context, namespace, name string) (*api.WorkloadEndpoint, error) {
	r, err := b.ds.Get(ctx, "WorkloadEndpoint", namespace, name)
	if err != nil {
		return nil, mark(err)
	}
	return asEndpoint(r)
}

func asEndpoint(r api.Resource) (*api.WorkloadEndpoint, error) {
	w, ok := r.(*api.WorkloadEndpoint)
	if !ok {
		return nil, fmt.Errorf("read workload endpoint: got %T", r)
	}
	return w, nil
}

func (b *backend) CreateEndpoint(ctx context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	r, err := b.ds.Create(ctx, w)
	if err != nil {
		return nil, mark(err)
	}
	return asEndpoint(r)
}

func (b *backend) UpdateEndpoint(ctx context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	r, err := b.ds.Update(ctx, w)
	if err != nil {
		return nil, mark(err)
	}
	return asEndpoint(r)
}

func (b *backend) DeleteEndpoint(ctx context.Context, namespace, name, rv string) error {
	_, err := b.ds.Delete(ctx, "WorkloadEndpoint", namespace, name, rv)
	return mark(err)
}

func (b *backend) ListEndpoints(ctx context.Context) ([]*api.WorkloadEndpoint, error) {
	rs, err := b.ds.List(ctx, "WorkloadEndpoint", "")
	if err != nil {
		return nil, mark(err)
	}
	out := make([]*api.WorkloadEndpoint, 0, len(rs))
	for _, r := range rs {
		if w, ok := r.(*api.WorkloadEndpoint); ok {
			out = append(out, w)
		}
	}
	return out, nil
}

// ipamErr adds the cni sentinel an ipam error means, so the plugin can choose the CNI code.
func ipamErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipam.ErrPoolsExhausted):
		return fmt.Errorf("%w: %w", cni.ErrPoolsExhausted, err)
	case errors.Is(err, ipam.ErrNoPools), errors.Is(err, ipam.ErrPoolDisabled):
		return fmt.Errorf("%w: %w", cni.ErrNoPools, err)
	case errors.Is(err, ipam.ErrAddressInUse):
		return fmt.Errorf("%w: %w", cni.ErrAddressInUse, err)
	case errors.Is(err, ipam.ErrAddressNotInPool):
		return fmt.Errorf("%w: %w", cni.ErrAddressNotInPool, err)
	case errors.Is(err, ipam.ErrTooManyRetries):
		// Lost every compare-and-swap race and wrote nothing: the runtime may try again.
		return fmt.Errorf("%w: %w", cni.ErrUnavailable, err)
	}
	return mark(err)
}

func (b *backend) AutoAssign(ctx context.Context, req cni.AssignRequest) (v4, v6 []netip.Addr, err error) {
	if len(req.IPs) > 0 {
		got, err := b.alloc.AssignIPs(ctx, ipam.AssignIPsArgs{IPs: req.IPs, Handle: req.Handle, Node: req.Node, Attrs: req.Attrs})
		if err != nil {
			return nil, nil, ipamErr(err)
		}
		return got.IPv4, got.IPv6, nil
	}
	got, err := b.alloc.AutoAssign(ctx, ipam.AutoAssignArgs{
		Node: req.Node, Handle: req.Handle, Num4: req.Num4, Num6: req.Num6, Attrs: req.Attrs,
		IPv4Pools: req.IPv4Pools, IPv6Pools: req.IPv6Pools,
	})
	if err != nil {
		return nil, nil, ipamErr(err)
	}
	return got.IPv4, got.IPv6, nil
}

func (b *backend) ReleaseIPs(ctx context.Context, ips ...netip.Addr) error {
	_, err := b.alloc.ReleaseIPs(ctx, ips...)
	return mark(err)
}

func (b *backend) ReleaseHandle(ctx context.Context, handle string) error {
	_, err := b.alloc.ReleaseByHandle(ctx, handle)
	if errors.Is(err, ipam.ErrHandleNotFound) {
		return nil
	}
	return mark(err)
}

func (b *backend) HandleAddrs(ctx context.Context, handle string) ([]netip.Addr, error) {
	ips, err := b.alloc.IPsByHandle(ctx, handle)
	if errors.Is(err, ipam.ErrHandleNotFound) {
		return nil, nil
	}
	return ips, mark(err)
}

func (b *backend) NodeAllocations(ctx context.Context, node string) ([]cni.Allocation, error) {
	kvs, _, err := b.store.List(ctx, ipam.BlockPrefix)
	if err != nil {
		return nil, err
	}
	var out []cni.Allocation
	for _, e := range kvs {
		blk, err := ipam.DecodeBlock(e.Value)
		if err != nil {
			return nil, fmt.Errorf("decode block %s: %w", e.Key, err)
		}
		for _, a := range blk.Allocated() {
			if a.Attrs[ipam.AttrNode] == node {
				out = append(out, cni.Allocation{IP: a.IP, Handle: a.Handle, Attrs: a.Attrs})
			}
		}
	}
	return out, nil
}

func (b *backend) GetRaw(ctx context.Context, key string) ([]byte, bool, error) {
	e, err := b.store.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return e.Value, true, nil
}

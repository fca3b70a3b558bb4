package cni

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/terracenet/terrace/datastore/api"
)

// AssignRequest asks IPAM for the addresses of one attachment: Num4 and Num6 addresses of its
// choosing, or, when IPs is set, exactly those addresses (all or nothing; Num4 and Num6 are then
// zero).
type AssignRequest struct {
	Node, Handle         string
	Num4, Num6           int
	IPs                  []netip.Addr
	Attrs                map[string]string
	IPv4Pools, IPv6Pools []string
}

// Allocation is one assigned address as IPAM records it.
type Allocation struct {
	IP     netip.Addr
	Handle string
	Attrs  map[string]string
}

// Backend is the datastore as the plugin uses it: WorkloadEndpoints through the typed client,
// addresses through ipam, and raw reads of status keys. The binary wires the real one
// (cmd/terrace-cni); errors wrap ErrNotFound, ErrExists, ErrUnavailable, ErrPoolsExhausted and
// ErrNoPools where they apply.
type Backend interface {
	GetEndpoint(ctx context.Context, namespace, name string) (*api.WorkloadEndpoint, error)
	CreateEndpoint(ctx context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error)
	UpdateEndpoint(ctx context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error)
	// DeleteEndpoint with resourceVersion "" deletes whatever is there.
	DeleteEndpoint(ctx context.Context, namespace, name, resourceVersion string) error
	ListEndpoints(ctx context.Context) ([]*api.WorkloadEndpoint, error)

	AutoAssign(ctx context.Context, req AssignRequest) (v4, v6 []netip.Addr, err error)
	ReleaseIPs(ctx context.Context, ips ...netip.Addr) error
	// ReleaseHandle frees every address of handle; a handle that does not exist is success.
	ReleaseHandle(ctx context.Context, handle string) error
	// HandleAddrs lists the addresses assigned to handle (none if it does not exist).
	HandleAddrs(ctx context.Context, handle string) ([]netip.Addr, error)
	// NodeAllocations lists the allocations whose "node" attribute is node.
	NodeAllocations(ctx context.Context, node string) ([]Allocation, error)

	// GetRaw reads one key: its value and whether it exists.
	GetRaw(ctx context.Context, key string) ([]byte, bool, error)
	Close() error
}

// Connector opens a Backend; a datastore that does not answer is an error wrapping ErrUnavailable.
type Connector func(ctx context.Context, cfg EtcdConfig, log *slog.Logger) (Backend, error)

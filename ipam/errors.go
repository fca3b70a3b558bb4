package ipam

import "errors"

// Sentinel errors callers distinguish with errors.Is; returned errors wrap them with context.
var (
	// ErrPoolsExhausted: the selected pools have no free address this node may use.
	ErrPoolsExhausted = errors.New("IP pools exhausted")
	// ErrNoPools: no enabled pool of the family selects this node (or none exists).
	ErrNoPools = errors.New("no IP pools available")
	// ErrPoolDisabled: a pool named explicitly, or holding a requested address, is disabled.
	ErrPoolDisabled = errors.New("IP pool disabled")
	// ErrAddressNotInPool: the address is in no configured pool (or outside the block asked for).
	ErrAddressNotInPool = errors.New("address not in any IP pool")
	// ErrAddressInUse: the requested address is already assigned.
	ErrAddressInUse = errors.New("address already in use")
	// ErrHandleNotFound: no allocation exists under that handle. Release by handle returns it
	// for a handle already released, so a repeated release is harmless: treat it as done.
	ErrHandleNotFound = errors.New("handle not found")
	// ErrPoolInUse: a pool still has allocated addresses and cannot be deleted.
	ErrPoolInUse = errors.New("IP pool still has allocations")
	// ErrNotAllocated: the address is in a pool but nobody holds it.
	ErrNotAllocated = errors.New("address not allocated")
	// ErrOtherNode: the allocation belongs to another node (its node attribute), which a
	// node-restricted release must not free.
	ErrOtherNode = errors.New("allocated to another node")
	// ErrTooManyRetries: compare-and-swap kept losing races; nothing was written by the attempt.
	ErrTooManyRetries = errors.New("too many concurrent updates")
)

package cni

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Plugin-specific error codes (the CNI spec leaves 100 and above to plugins).
const (
	// CodeInterfaceExists: CNI_IFNAME is already taken in the pod's namespace.
	CodeInterfaceExists uint = 100
	// CodePoolsExhausted: no free address in the pools this node may use.
	CodePoolsExhausted uint = 101
	// CodePolicyTimeout: the node agent did not report the endpoint's policy programmed in time.
	CodePolicyTimeout uint = 102
	// CodeCheckFailed: CHECK found the attachment differing from what ADD made.
	CodeCheckFailed uint = 103
	// CodeAddressInUse: a requested address is held by another attachment.
	CodeAddressInUse uint = 104
)

// Sentinels the backends wrap so the plugin can pick an error code without knowing them.
var (
	// ErrBadDatastoreConfig: the datastore settings cannot work (TLS files missing, unreadable,
	// not PEM): retrying will not help.
	ErrBadDatastoreConfig = errors.New("invalid datastore configuration")
	// ErrUnavailable: the datastore did not answer (connection refused, timeout).
	ErrUnavailable = errors.New("datastore unavailable")
	// ErrPoolsExhausted: IPAM found no free address.
	ErrPoolsExhausted = errors.New("IP pools exhausted")
	// ErrNoPools: no usable pool for this node and family (or a named pool does not exist or is disabled).
	ErrNoPools = errors.New("no usable IP pool")
	// ErrAddressInUse: a requested address is held by another attachment.
	ErrAddressInUse = errors.New("requested address in use")
	// ErrAddressNotInPool: a requested address is in no IP pool.
	ErrAddressNotInPool = errors.New("requested address in no IP pool")
	// ErrNotFound: the object does not exist. The plugin's own sentinels, not kv's, so that the
	// package links no etcd client; the direct backend marks datastore errors with them.
	ErrNotFound = errors.New("not found")
	// ErrExists: the object already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the object changed since it was read (resourceVersion mismatch).
	ErrConflict = errors.New("resource version conflict")
)

// toCNIError gives err the CNI code a runtime can act on; what is a plain bug stays ErrInternal.
// Every message keeps the wrapped chain so a person sees what failed and why.
func toCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	if e := asCNIError(err); e != nil {
		return e
	}
	code := types.ErrInternal
	switch {
	case errors.Is(err, ErrPoolsExhausted):
		code = CodePoolsExhausted
	case errors.Is(err, ErrAddressInUse):
		code = CodeAddressInUse
	case errors.Is(err, ErrNoPools), errors.Is(err, ErrAddressNotInPool):
		code = types.ErrInvalidNetworkConfig
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrConflict): // another writer changed the object meanwhile: a retry works
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, err.Error(), "")
}

// cniErrorf builds a coded error with a formatted message.
func cniErrorf(code uint, format string, a ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, a...), "")
}

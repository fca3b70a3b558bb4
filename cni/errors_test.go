package cni

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestToCNIError: what the plugin's callers see for each kind of failure.
func TestToCNIError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want uint
	}{
		{"pools exhausted", fmt.Errorf("assign: %w", ErrPoolsExhausted), CodePoolsExhausted},
		{"address in use", fmt.Errorf("assign: %w", ErrAddressInUse), CodeAddressInUse},
		{"no pools", fmt.Errorf("assign: %w", ErrNoPools), types.ErrInvalidNetworkConfig},
		{"not in a pool", fmt.Errorf("assign: %w", ErrAddressNotInPool), types.ErrInvalidNetworkConfig},
		{"unavailable", fmt.Errorf("connect: %w", ErrUnavailable), types.ErrTryAgainLater},
		{"deadline", fmt.Errorf("write: %w", context.DeadlineExceeded), types.ErrTryAgainLater},
		{"lost a race", fmt.Errorf("update endpoint: %w", ErrConflict), types.ErrTryAgainLater},
		{"coded already", types.NewError(CodeCheckFailed, "x", ""), CodeCheckFailed},
		{"anything else", errors.New("boom"), types.ErrInternal},
	}
	for _, tc := range tests {
		if got := toCNIError(tc.err); got.Code != tc.want {
			t.Errorf("%s: code %d, want %d", tc.name, got.Code, tc.want)
		}
	}
}

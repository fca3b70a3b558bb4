package main

import (
	"strings"
	"testing"
)

// TestBGPDebugListenRefused: the GoBGP gRPC API may only listen on loopback; anything else is
// bad usage (exit 2) before the daemon touches etcd or the network.
func TestBGPDebugListenRefused(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"192.0.2.1:50051", "not a loopback address"},
		{"0.0.0.0:50051", "not a loopback address"},
		{"localhost-ish", "parse --bgp-debug-listen"},
		{"[::]:50051", "not a loopback address"},
	}
	for _, tc := range tests {
		t.Run(tc.listen, func(t *testing.T) {
			var out, errOut strings.Builder
			code := execute([]string{"run", "--node-name", "n1", "--ip", "192.0.2.10", "--felix=false",
				"--etcd-endpoints", "http://127.0.0.1:1", "--node-socket", t.TempDir() + "/s.sock",
				"--bgp-debug-listen", tc.listen}, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tc.want)
			}
		})
	}
}

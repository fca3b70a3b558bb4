package main

import (
	"strings"
	"testing"
)

// TestBGPDebugListenRefused: the GoBGP gRPC API may only listen on loopback; anything else is
// bad usage (exit 2) before the daemon touches etcd or the network.
func TestBGPDebugListenRefused(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"192.0.2.1:50051", "is not on loopback"},
		{"0.0.0.0:50051", "is not on loopback"},
		{"localhost-ish", "parse debug listen address"},
		{"[::]:50051", "is not on loopback"},
		// What the speaker would refuse on every start, leaving the host without BGP.
		{"127.0.0.1:5o051", "invalid port"},
		{"127.0.0.1:", "parse debug listen address"},
		{"127.0.0.1:99999", "invalid port"},
		{"127.0.0.1:0", "port 0"},
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

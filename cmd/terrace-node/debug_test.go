package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/node"
)

// TestDebugPprofListenRefused: the profiler may only listen on loopback; anything else is bad
// usage (exit 2) before the daemon touches etcd or the network.
func TestDebugPprofListenRefused(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"0.0.0.0:6060", "not a loopback address"},
		{"192.0.2.1:6060", "not a loopback address"},
		{"6060", "parse --debug-pprof-listen"},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			var out, errOut strings.Builder
			code := execute([]string{"run", "--node-name", "n1", "--ip", "192.0.2.10", "--felix=false", "--bgp=false",
				"--etcd-endpoints", "http://127.0.0.1:1", "--node-socket", t.TempDir() + "/s.sock",
				"--debug-pprof-listen", tc.listen}, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tc.want)
			}
		})
	}
}

// TestDebugComponentServesProfiles: the component answers the profiler's index on its loopback
// address and stops with its context.
func TestDebugComponentServesProfiles(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the component binds it itself
	if err := parseDebugListen(addr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- debugComponent{listen: addr, log: slog.New(slog.DiscardHandler)}.Run(ctx, node.ComponentEnv{})
	}()
	var body string
	for i := 0; i < 50; i++ {
		resp, err := http.Get("http://" + addr + "/debug/pprof/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, "goroutine") {
		t.Fatalf("profiler index at %s: %q", addr, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("debug component did not stop with its context")
	}
}

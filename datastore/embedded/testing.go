package embedded

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
)

// StartForTest starts a member on a temporary directory and free loopback ports, stopped by
// t.Cleanup. etcd's log is discarded unless TERRACE_TEST_ETCD_LOG=1, which sends it to stderr
// (not t.Log: etcd goroutines may still log after the test has returned).
func StartForTest(t testing.TB) *Server {
	t.Helper()
	return StartForTestWith(t, Config{})
}

// StartForTestWith is StartForTest with TLS or other settings; DataDir and Logger are filled in
// when empty.
func StartForTestWith(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = TestLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A port FreeURL found free can be taken by another test process before etcd binds it; with
	// ports (and a data dir) of its own choosing the helper tries again with new ones.
	autoPorts := cfg.ListenClient == "" && cfg.ListenPeer == ""
	autoDir := cfg.DataDir == ""
	for attempt := 1; ; attempt++ {
		c := cfg
		if autoDir {
			c.DataDir = t.TempDir()
		}
		s, err := Start(ctx, c)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if !autoPorts || !autoDir || attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("start embedded etcd: %v", err)
		}
		t.Logf("start embedded etcd: %v; trying other ports", err)
	}
}

// TestLogger is the logger test helpers give etcd and Terrace code: silent unless
// TERRACE_TEST_ETCD_LOG=1.
func TestLogger() *slog.Logger {
	if os.Getenv("TERRACE_TEST_ETCD_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// RestartForTest stops and starts the member again on the same dir and ports.
func (s *Server) RestartForTest(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("restart embedded etcd: %v", err)
	}
}

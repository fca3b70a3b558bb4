package embedded

import (
	"context"
	"log/slog"
	"os"
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
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = TestLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
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

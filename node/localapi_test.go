package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLocalAPI(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	sock := filepath.Join(t.TempDir(), "run", "node.sock")
	// A stale socket from a dead daemon must be replaced, not refused.
	ln0, err := ListenSocket(sock, log)
	if err != nil {
		t.Fatal(err)
	}
	ln0.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	ln0.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket not left behind for the test: %v", err)
	}

	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	board := NewStatusBoard(Status{NodeName: "host-1", IPv4: "192.0.2.10/24", StartTime: start, Version: "v-test",
		Autodetection: AddressInfo{Method: "first-found", IPv4: "192.0.2.10/24", Interface: "eth0", Reason: "r"}})
	ln, err := ListenSocket(sock, log)
	if err != nil {
		t.Fatalf("listen over stale socket: %v", err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, want 0660", fi.Mode().Perm())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeAPI(ctx, ln, board, log) }()

	if _, err := ListenSocket(sock, log); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second listener: err = %v, want refusal", err)
	}

	board.SetComponent("felix", ComponentStatus{State: "in-sync", Since: start})
	got, err := QueryStatus(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	want := Status{NodeName: "host-1", IPv4: "192.0.2.10/24", StartTime: start, Version: "v-test",
		Autodetection: AddressInfo{Method: "first-found", IPv4: "192.0.2.10/24", Interface: "eth0", Reason: "r"},
		Components:    map[string]ComponentStatus{"felix": {State: "in-sync", Since: start}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeAPI: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still present after stop: %v", err)
	}
}

func TestListenSocketRefusesNonSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "node.sock")
	os.WriteFile(p, []byte("x"), 0o600)
	if _, err := ListenSocket(p, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v", err)
	}
}

func TestStatusBoardKeepsSince(t *testing.T) {
	b := NewStatusBoard(Status{})
	b.SetComponent("bgp", ComponentStatus{State: "running"})
	first := b.Snapshot().Components["bgp"].Since
	time.Sleep(2 * time.Millisecond)
	b.SetComponent("bgp", ComponentStatus{State: "running", Detail: "2 peers"})
	if got := b.Snapshot().Components["bgp"]; got.Since != first || got.Detail != "2 peers" {
		t.Errorf("same state: %+v, want since %v", got, first)
	}
	b.SetComponent("bgp", ComponentStatus{State: "failed"})
	if got := b.Snapshot().Components["bgp"]; got.Since == first {
		t.Errorf("state change kept since %v", got.Since)
	}
}

// TestListenSocketLock: the socket is held by a lock, not by whether it answers: a second daemon
// is refused even when the first one's socket file was removed behind its back, and the lock is
// free again once the first closes.
func TestListenSocketLock(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	sock := filepath.Join(t.TempDir(), "node.sock")
	ln, err := ListenSocket(sock, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	_, err = ListenSocket(sock, log)
	if err == nil || !strings.Contains(err.Error(), "another process") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second listener with the socket file gone: err = %v, want refusal naming pid %d", err, os.Getpid())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the refused listener created the socket: %v", err)
	}
	ln.Close()
	ln2, err := ListenSocket(sock, log)
	if err != nil {
		t.Fatalf("listen after the holder closed: %v", err)
	}
	ln2.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after close: %v", err)
	}
}

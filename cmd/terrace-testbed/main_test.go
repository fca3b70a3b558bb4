package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terracenet/terrace/testbed"
)

func execute(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), exitCode(err)
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{fmt.Errorf("up: %w", testbed.ErrInvalid), 2},
		{usageError{errors.New("bad flag")}, 2},
		{exitError{code: 7}, 7},
		{fmt.Errorf("wrapped: %w", exitError{code: 3}), 3},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	state := t.TempDir()
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"up", "--bogus"}, 2},
		{"hosts out of range", []string{"up", "--hosts", "0", "--state-dir", state}, 2},
		{"mesh and no-mesh", []string{"up", "--mesh", "--no-mesh", "--state-dir", state}, 2},
		{"exec without command", []string{"exec", "host-1", "--state-dir", state}, 2},
		{"pod add one arg", []string{"pod", "add", "host-1", "--state-dir", state}, 2},
		{"bad labels", []string{"pod", "add", "host-1", "web", "--labels", "nokey", "--state-dir", state}, 2},
		{"bad ip", []string{"pod", "add", "host-1", "web", "--ip", "198.18.0", "--state-dir", state}, 2},
		{"ip twice", []string{"pod", "add", "host-1", "web", "--ip", "198.18.0.9,198.18.0.9", "--state-dir", state}, 2},
		{"fault arity", []string{"link-down", "--state-dir", state}, 2},
		{"bad inject count", []string{"inject-routes", "tor-1", "many", "--state-dir", state}, 2},
		{"inject count in exponent form", []string{"inject-routes", "tor-1", "1e3", "--state-dir", state}, 2},
		{"inject count with trailing text", []string{"inject-routes", "tor-1", "10k", "--state-dir", state}, 2},
		{"negative inject count", []string{"inject-routes", "tor-1", "-1", "--state-dir", state}, 2},
		{"nothing up", []string{"status", "--state-dir", state}, 1},
		{"bad log level", []string{"status", "--log-level", "loud", "--state-dir", state}, 2},
		// Mistyped or missing commands: never the help with exit 0.
		{"unknown command", []string{"rnu", "--state-dir", state}, 2},
		{"no command", []string{"--state-dir", state}, 2},
		{"pod without a command", []string{"pod", "--state-dir", state}, 2},
		{"pod with an unknown command", []string{"pod", "bogus", "--state-dir", state}, 2},
		{"down with an argument", []string{"down", "extra", "--state-dir", state}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out, got := execute(t, tt.args...); got != tt.want {
				t.Errorf("%v: exit %d, want %d (%s)", tt.args, got, tt.want, out)
			}
		})
	}
}

func TestCheckRejectsBadExpectation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "expect")
	if err := os.WriteFile(file, []byte("* * * sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, got := execute(t, "check", "--expect", file, "--state-dir", t.TempDir()); got != 2 {
		t.Errorf("check with a bad expectation: exit %d, want 2 (%s)", got, out)
	}
}

func TestHelpListsCommands(t *testing.T) {
	out, code := execute(t, "--help")
	if code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	for _, c := range []string{"up", "down", "status", "exec", "pod", "check", "demo", "stop-node", "kill-node",
		"start-node", "link-down", "link-up", "stop-etcd", "start-etcd", "stop-tor", "start-tor"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("help does not list %q", c)
		}
	}
}

// TestRunForwarding: a SIGTERM sent to terrace-testbed while exec runs reaches the child (which
// would otherwise be left behind), and a child ended by a signal gives the shell's 128+N status.
func TestRunForwarding(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	c := exec.Command("sh", "-c", `: > "$1"; exec sleep 30`, "sh", ready)
	done := make(chan error, 1)
	go func() { done <- runForwarding(c, syscall.SIGTERM) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not start within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if got := exitCode(err); got != 128+int(syscall.SIGTERM) {
			t.Errorf("exit status %d (%v), want %d", got, err, 128+int(syscall.SIGTERM))
		}
	case <-time.After(10 * time.Second):
		_ = c.Process.Kill()
		t.Fatal("child still running 10s after SIGTERM was sent to the parent")
	}
	if err := runForwarding(exec.Command("sh", "-c", "exit 3")); exitCode(err) != 3 {
		t.Errorf("child exiting 3: got %v", err)
	}
}

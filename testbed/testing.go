package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// FindBinDir locates the project's built binaries for tests: $TERRACE_BIN_DIR, else bin/ next to
// the go.mod found walking up from the working directory (make test builds it first).
func FindBinDir() (string, error) {
	if d := os.Getenv("TERRACE_BIN_DIR"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find bin dir: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			bin := filepath.Join(dir, "bin")
			if _, err := os.Stat(filepath.Join(bin, "terrace-node")); err != nil {
				return "", fmt.Errorf("find bin dir: %s has no terrace-node (run make build): %w", bin, err)
			}
			return bin, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find bin dir: no go.mod above the working directory")
		}
		dir = parent
	}
}

// StartForTest builds a testbed for an end-to-end test and tears it down when the test ends. It
// skips the test (not fails) without root, ip or bird, or without built binaries. Each call gets its
// own namespace prefix and a short state directory (socket paths must stay under 108 bytes), so
// tests in different packages can run at the same time. Empty Prefix, StateDir and BinDir are filled in.
func StartForTest(t testing.TB, opts Options) *Testbed {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping under -short: the testbed needs root and network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("testbed tests need root (network namespaces); make test runs them as root")
	}
	for _, b := range []string{"ip", "bird", "birdc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (make deps): no testbed", b)
		}
	}
	if opts.BinDir == "" {
		bin, err := FindBinDir()
		if err != nil {
			t.Skipf("no built binaries: %v", err)
		}
		opts.BinDir = bin
	}
	if opts.Prefix == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		opts.Prefix = "tbt" + hex.EncodeToString(b) + "-"
	}
	if opts.StateDir == "" {
		dir, err := os.MkdirTemp("", "tb")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		opts.StateDir = dir
	}
	tb, err := Up(context.Background(), opts)
	if err != nil {
		t.Fatalf("start testbed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// Down removes the logs, so show their ends first.
			for _, p := range tb.st.procs() {
				t.Logf("%s (pid %d) output: %s", filepath.Base(p.Argv[0]), p.Pid, tailFile(p.Output, 10))
			}
			for _, h := range tb.st.Hosts {
				t.Logf("%s node log: %s", h.Name, tailFile(h.LogFile, 10))
			}
		}
		if err := tb.Down(context.Background()); err != nil {
			t.Errorf("tear down testbed: %v", err)
		}
	})
	return tb
}

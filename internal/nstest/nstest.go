// Package nstest gives privileged dataplane tests a fresh, named network namespace of their own
// (trctest-<random>), deleted when the test ends. It exists so no test ever touches the root
// namespace; it must never be imported by non-test code.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root and every named tool is on PATH, and under
// -short: `go test -short ./...` is the quick pass that changes nothing on the machine.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping under -short: privileged test (network namespaces, kernel state)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create a network namespace (run the tests as root)")
	}
	for _, tool := range append([]string{"ip", "nsenter"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
}

// New creates a network namespace and returns its name; it is deleted at cleanup.
func New(t testing.TB, tools ...string) string {
	t.Helper()
	RequireRoot(t, tools...)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "trctest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// Run runs a command inside the namespace and fails the test if it fails.
func Run(t testing.TB, ns string, args ...string) string {
	t.Helper()
	argv := append([]string{"netns", "exec", ns}, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v: %s", argv, err, out)
	}
	return string(out)
}

// RunInput is Run with stdin.
func RunInput(t testing.TB, ns string, stdin io.Reader, args ...string) string {
	t.Helper()
	argv := append([]string{"netns", "exec", ns}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v: %s", argv, err, out)
	}
	return string(out)
}

// Do runs f on an OS thread switched into the namespace and returns its error; a namespace that
// cannot be opened fails the test.
func Do(t testing.TB, ns string, f func() error) error {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	h.Close()
	return Enter(ns, f)
}

// Enter runs f on an OS thread switched into the namespace and returns its error. The thread is
// never unlocked, so Go discards it afterwards instead of reusing a thread in the wrong namespace.
// Sockets opened inside f stay in that namespace when used from other goroutines. Unlike Do it
// needs no *testing.T, so code running outside the test goroutine can use it.
func Enter(ns string, f func() error) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(h); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

// Handle opens the named namespace and a netlink handle in it, both closed when the test ends.
func Handle(t testing.TB, ns string) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatalf("open netlink in %s: %v", ns, err)
	}
	t.Cleanup(h.Close)
	return nsh, h
}

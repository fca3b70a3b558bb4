package felix

// felix/dataplane/internal/nstest is internal to felix/dataplane, so the agent's privileged test
// carries its own small copy of the namespace helpers.

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// newNetns skips unless root with the tools, then creates trctest-<random>, deleted at cleanup.
func newNetns(t testing.TB, tools ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create a network namespace (run the tests as root)")
	}
	for _, tool := range append([]string{"ip", "nsenter"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
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
	runNetns(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// runNetns runs a command inside the namespace and fails the test if it fails.
func runNetns(t testing.TB, ns string, args ...string) string {
	t.Helper()
	argv := append([]string{"--net=/run/netns/" + ns, "--"}, args...)
	out, err := exec.Command("nsenter", argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %v: %v: %s", argv, err, out)
	}
	return string(out)
}

// doNetns runs f on an OS thread switched into the namespace. The thread stays locked, so Go
// discards it afterwards instead of reusing a thread in the wrong namespace.
func doNetns(ns string, f func() error) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
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

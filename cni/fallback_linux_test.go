package cni

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/cni/shim"

	"github.com/containernetworking/cni/pkg/types"
)

// installAs copies the plugin under test into a fresh directory under the given names, as an
// installer that forgot or mixed up the fallback would.
func installAs(t *testing.T, src string, names ...string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, names[0])
}

// TestBinaryFallbackBroken: without an agent, a terrace-cni whose etcd fallback is missing, or is
// another shim, tells the runtime to try again later, says why, and leaves nothing behind.
func TestBinaryFallbackBroken(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	for _, c := range []struct {
		name, want string
		names      []string
	}{
		{"missing", shim.FallbackBinary + " is not installed beside terrace-cni", []string{"terrace-cni"}},
		{"shim in its place", "must be the etcd-linked plugin", []string{"terrace-cni", shim.FallbackBinary}},
	} {
		t.Run(c.name, func(t *testing.T) {
			plugin := installAs(t, e.plugin, c.names...)
			o := e.exec(call{cmd: "ADD", cid: "broken", netns: e.newPod(), stdin: e.conf("1.1.0", ""), argv0: plugin})
			if o.err == nil || o.err.Code != types.ErrTryAgainLater || !strings.Contains(o.err.Msg+o.err.Details, c.want) {
				t.Fatalf("ADD = %+v, want code 11 (try again later) mentioning %q", o.err, c.want)
			}
			e.assertClean()
		})
	}
}

// TestBinaryFallbackLargeInput: the fallback gets the runtime's whole standard input, also when
// it is larger than a pipe holds (a long prevResult or runtimeConfig), and the exec'd plugin does
// the work (its log says so).
func TestBinaryFallbackLargeInput(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	pad := `,"x-padding":"` + strings.Repeat("p", 256<<10) + `"`
	stdin := e.conf("1.1.0", pad)
	pod := e.newPod()
	e.mustOK(call{cmd: "ADD", cid: "large", netns: pod, stdin: stdin})
	e.mustOK(call{cmd: "DEL", cid: "large", netns: pod, stdin: stdin})
	e.assertClean()
	log, err := os.ReadFile(filepath.Join(e.logDir, "cni.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "handing it to "+shim.FallbackBinary); n != 2 {
		t.Errorf("the shim handed over %d commands, want 2 (ADD, DEL)", n)
	}
	if got := e.backendsLogged(); got["etcd"] != 2 {
		t.Errorf("backends used: %v, want etcd twice", got)
	}
}

// TestBinaryAboutWithoutInput: run without a command (an operator looking at the binary), the
// plugin says what it is at once; it must not wait for standard input, which it keeps for the
// fallback only when there is a command to hand over.
func TestBinaryAboutWithoutInput(t *testing.T) {
	plugin := buildPlugin(t)
	cmd := exec.Command(plugin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdin, err := cmd.StdinPipe() // never written to or closed until the end
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out // skel prints it on stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(out.String(), "CNI protocol versions supported") {
			t.Fatalf("terrace-cni without a command: %v, output %q", err, out.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("terrace-cni without a command waited for standard input")
	}
}

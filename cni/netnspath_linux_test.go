package cni

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryNetnsNotANamespace: a CNI_NETNS that names a FIFO, a directory or a device is refused
// at once, through the agent and through etcd alike, by every command: opening a FIFO would block
// the command (and, through the agent, one of its workers) until something wrote to it. ADD and
// CHECK fail naming what the path is; DEL, whose namespace may be gone, succeeds. Nothing is
// left behind.
func TestBinaryNetnsNotANamespace(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	fifo := filepath.Join(t.TempDir(), "netns-fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{fifo: "named pipe", t.TempDir(): "directory", "/dev/null": "character device"}
	confs := map[string][]byte{"agent": e.agentConf("host-a", ""), "etcd": e.conf("1.1.0", "")}
	for backend, stdin := range confs {
		for path, kind := range paths {
			t.Run(backend+" "+kind, func(t *testing.T) {
				for _, cmd := range []string{"ADD", "CHECK", "DEL"} {
					in := stdin
					if cmd == "CHECK" {
						in = []byte(strings.TrimSuffix(string(stdin), "}") + `,"prevResult":{"cniVersion":"1.1.0"}}`)
					}
					o := e.exec(call{cmd: cmd, cid: "badns", netns: path, stdin: in})
					if o.took > 10*time.Second {
						t.Errorf("%s took %s", cmd, o.took)
					}
					switch {
					case cmd == "DEL" && o.err != nil:
						t.Errorf("DEL = code %d %s (%s), want success", o.err.Code, o.err.Msg, o.err.Details)
					case cmd != "DEL" && o.err == nil:
						t.Errorf("%s succeeded with CNI_NETNS a %s", cmd, kind)
					case cmd != "DEL" && !strings.Contains(o.err.Msg+o.err.Details, kind):
						t.Errorf("%s = code %d %s (%s), want an error saying it is a %s", cmd, o.err.Code, o.err.Msg, o.err.Details, kind)
					}
				}
				e.assertClean()
			})
		}
	}
	if _, err := os.Stat(fifo); err != nil {
		t.Errorf("the FIFO is gone: %v", err)
	}
}

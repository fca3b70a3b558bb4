package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/internal/nstest"
	"github.com/terracenet/terrace/internal/syncbuf"
	"github.com/terracenet/terrace/node"
)

// TestRunWithFelix runs the embedded etcd and terrace-node with felix, both inside a fresh network
// namespace (root only), and checks felix programs its chains there and reports ready.
func TestRunWithFelix(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tool := range []string{"ip", "nsenter", "ipset", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := "trctest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	inNS := func(args ...string) []string {
		return append([]string{"--net=/run/netns/" + ns, "--", nodeBin}, args...)
	}
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}

	dir := t.TempDir()
	// Fixed ports are safe: nothing else listens in a namespace this test just made.
	const etcdURL = "http://127.0.0.1:23790"
	etcd := exec.Command("nsenter", inNS("etcd", "--data-dir", filepath.Join(dir, "etcd"), "--listen-client", etcdURL,
		"--listen-peer", "http://127.0.0.1:23800")...)
	etcdLogs := &syncbuf.Buffer{}
	etcd.Stdout, etcd.Stderr = etcdLogs, etcdLogs
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Process.Kill(); etcd.Wait() })

	sock := filepath.Join(dir, "node.sock")
	cmd := exec.Command("nsenter", inNS("run", "--node-name", "felix-node", "--ip", "192.0.2.10", "--etcd-endpoints", etcdURL,
		"--node-socket", sock, "--state-dir", filepath.Join(dir, "state"), "--run-dir", dir, "--rt-protos-file", "",
		"--felix-metrics-listen", "", "--log-level", "debug")...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(t, "felix ready on the status board", logs, func() bool {
		st, err := node.QueryStatus(ctx, sock)
		return err == nil && st.Components["felix"].State == "ready"
	})
	save, err := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "iptables-save", "-t", "filter").CombinedOutput()
	if err != nil || !strings.Contains(string(save), "-j trc-FORWARD") {
		t.Errorf("felix chains missing in the namespace (%v):\n%s", err, save)
	}
	stop(t, cmd, done, logs)
}

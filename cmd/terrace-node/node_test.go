package main

// These tests build the real terrace-node and run it against an in-process embedded etcd.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/internal/syncbuf"
	"github.com/terracenet/terrace/node"
)

var nodeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "terrace-node-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	nodeBin = filepath.Join(dir, "terrace-node")
	if out, err := exec.Command("go", "build", "-o", nodeBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build terrace-node: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func start(t *testing.T, args ...string) (*exec.Cmd, *syncbuf.Buffer, chan error) {
	t.Helper()
	return startWith(t, "", nil, args...)
}

// startWith runs terrace-node with a config file holding fileYAML and only env (plus PATH) in its
// environment, so the machine's /etc/terrace and TERRACE_* variables cannot leak in.
func startWith(t *testing.T, fileYAML string, env []string, args ...string) (*exec.Cmd, *syncbuf.Buffer, chan error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "terrace-node.yaml")
	if err := os.WriteFile(cfg, []byte(fileYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nodeBin, append(args, "--config", cfg)...)
	// Felix would program iptables and routes in the root namespace these tests run in.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "TERRACE_FELIX=false"}, env...)
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
	return cmd, logs, done
}

func stop(t *testing.T, cmd *exec.Cmd, done chan error, logs *syncbuf.Buffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\nlogs:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit 15s after SIGTERM\nlogs:\n%s", logs)
	}
}

func waitFor(t *testing.T, what string, logs *syncbuf.Buffer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\nlogs:\n%s", what, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRunRegistersAndServes(t *testing.T) {
	srv := embedded.StartForTest(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "node.sock")
	cmd, logs, done := start(t, "run", "--node-name", "test-node", "--ip", "192.0.2.10", "--as-number", "64512.7",
		"--etcd-endpoints", strings.Join(srv.Endpoints(), ","), "--node-socket", sock,
		"--state-dir", filepath.Join(dir, "state"), "--run-dir", filepath.Join(dir, "run"))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c := datastore.New(store, embedded.TestLogger())

	var n *api.Node
	waitFor(t, "the Node resource", logs, func() bool {
		r, err := c.Get(ctx, "Node", "", "test-node")
		if err != nil {
			return false
		}
		n = r.(*api.Node)
		return true
	})
	if n.Spec.BGP == nil || n.Spec.BGP.IPv4Address != "192.0.2.10/32" || n.Spec.BGP.ASNumber == nil || *n.Spec.BGP.ASNumber != 64512<<16+7 {
		t.Errorf("node spec: %+v", n.Spec.BGP)
	}
	ad := n.Status.Autodetection
	if ad == nil || ad.Method != "flag" || ad.IPv4 != "192.0.2.10" || !strings.Contains(ad.Reason, "given by the operator") {
		t.Errorf("node status: %+v", ad)
	}

	var st node.Status
	waitFor(t, "the node socket", logs, func() bool {
		st, err = node.QueryStatus(ctx, sock)
		return err == nil
	})
	if st.NodeName != "test-node" || st.IPv4 != "192.0.2.10/32" || st.Autodetection.Method != "flag" || st.Version == "" || st.StartTime.IsZero() {
		t.Errorf("status: %+v", st)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket: %v %v", fi.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "state", "nodename")); err != nil || string(b) != "test-node" {
		t.Errorf("nodename file: %q %v", b, err)
	}
	// The daemon logs the registration after etcd has answered, so the Node can be seen first.
	waitFor(t, "the registration's log line", logs, func() bool { return strings.Contains(logs.String(), "node registered") })
	for _, w := range []string{"IPv4 address chosen", "address=192.0.2.10/32", "method=flag", "felix disabled by configuration"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}

	// A second daemon for the same socket (here with another address) must stop before it
	// rewrites the Node the running one registered.
	_, logs2, done2 := start(t, "run", "--node-name", "test-node", "--ip", "192.0.2.99",
		"--etcd-endpoints", strings.Join(srv.Endpoints(), ","), "--node-socket", sock,
		"--state-dir", filepath.Join(dir, "state2"), "--run-dir", filepath.Join(dir, "run"))
	select {
	case err := <-done2:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(logs2.String(), "another process is serving it") {
			t.Errorf("second daemon: %v\n%s", err, logs2)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("second daemon did not exit:\n%s", logs2)
	}
	if r, err := c.Get(ctx, "Node", "", "test-node"); err != nil || r.(*api.Node).Spec.BGP.IPv4Address != "192.0.2.10/32" {
		t.Errorf("after the second daemon: %v %+v", err, r)
	}

	stop(t, cmd, done, logs)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
	if !strings.Contains(logs.String(), "stopped cleanly") {
		t.Errorf("log lacks clean stop:\n%s", logs)
	}
}

func TestRunWaitsForEtcd(t *testing.T) {
	// Nothing listens on the endpoint: the daemon must keep retrying, saying so, and still stop
	// cleanly on SIGTERM.
	url, err := embedded.FreeURL("http")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd, logs, done := start(t, "run", "--node-name", "n", "--ip", "192.0.2.10", "--etcd-endpoints", url,
		"--etcd-dial-timeout", "300ms", "--node-socket", filepath.Join(dir, "node.sock"),
		"--state-dir", filepath.Join(dir, "state"), "--run-dir", dir)
	waitFor(t, "a retry log line", logs, func() bool { return strings.Count(logs.String(), "etcd not reachable yet; retrying") >= 2 })
	// The local API already answers, so an operator can see what the waiting daemon chose.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := node.QueryStatus(ctx, filepath.Join(dir, "node.sock"))
	if err != nil || st.NodeName != "n" || st.IPv4 != "192.0.2.10/32" {
		t.Errorf("status while waiting for etcd: %+v %v", st, err)
	}
	// It says it waits for etcd, and BGP (on; felix is off in these tests) is waiting, not absent
	// (which `node status` would show as switched off).
	if st.Datastore.State != "connecting" || !strings.Contains(st.Datastore.Detail, "attempt") {
		t.Errorf("datastore status while waiting for etcd: %+v", st.Datastore)
	}
	if c, ok := st.Components["bgp"]; !ok || c.State != "waiting" {
		t.Errorf("bgp status while waiting for etcd: %+v (components %v)", c, st.Components)
	}
	if _, ok := st.Components["felix"]; ok {
		t.Errorf("felix is off, yet on the board: %v", st.Components)
	}
	stop(t, cmd, done, logs)
	if _, err := os.Stat(filepath.Join(dir, "node.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
}

func TestRunBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--ip-autodetection-method", "guess"}, "parse autodetection method"},
		{[]string{"run", "--ip", "999.1.1.1", "--node-name", "x"}, "parse IPv4 address"},
		{[]string{"run", "--ip6", "192.0.2.1", "--node-name", "x"}, "wrong family"},
		{[]string{"run", "--ip", "192.0.2.1", "--as-number", "0"}, "spec.bgp.asNumber"},
		{[]string{"run", "--ip", "192.0.2.1", "--as-number", "1.x"}, "parse --as-number"},
		{[]string{"run", "--ip", "192.0.2.1", "--node-name", "Bad_Name"}, "metadata.name"},
		{[]string{"run", "--etcd-cert", "/x"}, "--etcd-cert and --etcd-key"},
		{[]string{"run", "--bogus"}, "unknown flag"},
		{[]string{"etcd"}, "--data-dir is required"},
		{[]string{"etcd", "--data-dir", "/nonexistent/terrace", "--listen-client", "127.0.0.1:2379"}, `client URL "127.0.0.1:2379"`},
		{[]string{"etcd", "--data-dir", "/nonexistent/terrace", "--listen-client", "http://127.0.0.1:1", "--cert-file", "c.pem", "--key-file", "k.pem"}, "must be https"},
		{[]string{"etcd", "--data-dir", "/nonexistent/terrace", "--listen-client", "http://127.0.0.1:1", "--client-cert-auth", "--trusted-ca-file", "ca.pem"}, "needs a server certificate"},
		{[]string{"etcd", "extra"}, "takes no arguments"},
		{[]string{"run", "extra"}, "takes no arguments"},
		{[]string{"run", "--ip", "192.0.2.1", "--felix-resync-interval", "5ms"}, "want 0 (no periodic resync) or at least 1s"},
		{[]string{"run", "--ip", "192.0.2.1", "--felix-resync-interval", "-1s"}, "want 0 (no periodic resync) or at least 1s"},
		{[]string{"run", "--ip", "192.0.2.1", "--bgp-resync-interval", "500ms"}, "want at least 1s"},
		{[]string{"run", "--ip", "192.0.2.1", "--felix-iptables-backend", "nftables"}, "--felix-iptables-backend: parse iptables back end \"nftables\": want auto, legacy or nft"},
		{[]string{"run", "--ip", "192.0.2.1", "--felix-fast-path", "yes"}, "--felix-fast-path: parse fast path mode \"yes\": want auto, true or false"},
	}
	for _, tt := range tests {
		_, logs, done := start(t, tt.args...)
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("%v: no exit", tt.args)
		}
		ee, ok := err.(*exec.ExitError)
		// Each of these is bad usage, which CONVENTIONS.md gives exit status 2.
		if !ok || ee.ExitCode() != 2 || !strings.Contains(logs.String(), tt.want) {
			t.Errorf("%v: err %v, output:\n%s", tt.args, err, logs)
		}
	}
}

// TestRootCommandUsage: a mistyped or missing command is bad usage (exit 2), not the help with
// exit 0 that a unit file or script would take for success; --help stays 0.
func TestRootCommandUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rnu"}, 2, `unknown command "rnu"`},
		{nil, 2, "no command given"},
		{[]string{"version", "x"}, 2, "takes no arguments"},
		{[]string{"--help"}, 0, "Available Commands"},
	} {
		out, err := exec.Command(nodeBin, tt.args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tt.code || !strings.Contains(string(out), tt.want) {
			t.Errorf("terrace-node %v: exit %d, output:\n%s\nwant exit %d and %q", tt.args, code, out, tt.code, tt.want)
		}
	}
}

func TestEtcdCommand(t *testing.T) {
	url, err := embedded.FreeURL("http")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "etcd")
	run := func() (*exec.Cmd, *syncbuf.Buffer, chan error) {
		return start(t, "etcd", "--data-dir", dataDir, "--listen-client", url)
	}
	cmd, logs, done := run()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var store *kv.Store
	waitFor(t, "etcd to answer", logs, func() bool {
		store, err = kv.Open(ctx, kv.Config{Endpoints: []string{url}, DialTimeout: time.Second}, embedded.TestLogger())
		return err == nil
	})
	if _, err := store.Put(ctx, "/terrace/test/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	store.Close()
	stop(t, cmd, done, logs)

	// The data is on disk: a second run serves it.
	cmd, logs, done = run()
	waitFor(t, "etcd to answer again", logs, func() bool {
		store, err = kv.Open(ctx, kv.Config{Endpoints: []string{url}, DialTimeout: time.Second}, embedded.TestLogger())
		return err == nil
	})
	got, err := store.Get(ctx, "/terrace/test/k")
	store.Close()
	if err != nil || string(got.Value) != "v" {
		t.Errorf("after restart: %q %v", got.Value, err)
	}
	stop(t, cmd, done, logs)
}

func TestRunConfigPrecedence(t *testing.T) {
	srv := embedded.StartForTest(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "node.sock")
	// The file names the node and its address, the environment overrides the name and gives the
	// endpoints and socket, and a flag overrides the file's address.
	file := "node-name: file-node\nip: 192.0.2.11\nlog-level: debug\n"
	env := []string{"TERRACE_NODE_NAME=env-node", "TERRACE_ETCD_ENDPOINTS=" + strings.Join(srv.Endpoints(), ","),
		"TERRACE_NODE_SOCKET=" + sock}
	cmd, logs, done := startWith(t, file, env, "run", "--ip", "192.0.2.12", "--state-dir", filepath.Join(dir, "state"), "--run-dir", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st node.Status
	var err error
	waitFor(t, "the node socket", logs, func() bool {
		st, err = node.QueryStatus(ctx, sock)
		return err == nil
	})
	if st.NodeName != "env-node" || st.IPv4 != "192.0.2.12/32" {
		t.Errorf("status: name %q ip %q, want env-node 192.0.2.12/32", st.NodeName, st.IPv4)
	}
	// The lines are written before the socket opens, but the goroutine copying the daemon's
	// output may not have stored them yet.
	for _, w := range []string{"name=node-name value=env-node source=env", "name=ip value=192.0.2.12 source=flag"} {
		waitFor(t, "log line "+w, logs, func() bool { return strings.Contains(logs.String(), w) })
	}
	stop(t, cmd, done, logs)

	// A typo in the config file is refused rather than silently ignored.
	_, logs, done = startWith(t, "node-nmae: x\n", nil, "run")
	if err := <-done; err == nil || !strings.Contains(logs.String(), `unknown key "node-nmae"`) {
		t.Errorf("typo in config: %v\n%s", err, logs)
	}
	// One file serves every subcommand: etcd reads past run's keys (and fails here only on its
	// own bad flag, after the file was accepted).
	_, logs, done = startWith(t, "node-name: x\netcd-endpoints: http://127.0.0.1:1\n", nil, "etcd", "--data-dir", "/nonexistent/terrace", "--listen-client", "127.0.0.1:2379")
	if err := <-done; err == nil || strings.Contains(logs.String(), "unknown key") || !strings.Contains(logs.String(), `client URL "127.0.0.1:2379"`) {
		t.Errorf("etcd with a file written for run: %v\n%s", err, logs)
	}
}

// TestBGPFollowsLogSeverityScreen: without --log-level, the bgp part logs at BGPConfiguration's
// logSeverityScreen and follows a change while it runs; the node's other parts keep the flag's
// default level. The speaker listens on a high port: nothing peers with it.
func TestBGPFollowsLogSeverityScreen(t *testing.T) {
	srv := embedded.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c := datastore.New(store, embedded.TestLogger())
	conf := &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: "default"}, Spec: api.BGPConfigurationSpec{LogSeverityScreen: "Debug", ListenPort: 17919}}
	if _, err := c.Create(ctx, conf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd, logs, done := start(t, "run", "--node-name", "log-node", "--ip", "192.0.2.10",
		"--etcd-endpoints", strings.Join(srv.Endpoints(), ","), "--node-socket", filepath.Join(dir, "node.sock"),
		"--state-dir", filepath.Join(dir, "state"), "--run-dir", dir)
	waitFor(t, "a bgp debug line", logs, func() bool {
		return strings.Contains(logs.String(), "level=DEBUG") && strings.Contains(logs.String(), "component=bgp")
	})
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=DEBUG") && !strings.Contains(line, "component=bgp") {
			t.Errorf("a debug line outside the bgp part, at the default info level: %s", line)
		}
	}

	r, err := c.Get(ctx, api.KindBGPConfiguration, "", "default")
	if err != nil {
		t.Fatal(err)
	}
	conf = r.(*api.BGPConfiguration)
	conf.Spec.LogSeverityScreen = "Warning"
	if _, err := c.Update(ctx, conf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the level change", logs, func() bool {
		return strings.Contains(logs.String(), "setting=logSeverityScreen old=DEBUG new=WARN")
	})
	stop(t, cmd, done, logs)
	after := logs.String()[strings.Index(logs.String(), "new=WARN"):]
	for _, line := range strings.Split(after, "\n") {
		if strings.Contains(line, "component=bgp") && (strings.Contains(line, "level=DEBUG") || strings.Contains(line, "level=INFO")) {
			t.Errorf("bgp logged below warning after the change: %s", line)
		}
	}
}

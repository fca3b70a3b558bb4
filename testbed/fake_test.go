package testbed

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/terracenet/terrace/datastore/embedded"
)

// fakeCNILogEnv names the file the fake terrace-cni appends one JSON record per call to.
const fakeCNILogEnv = "TESTBED_FAKE_CNI_LOG"

// fakeCNIRecord is what the fake plugin saw: the runtime side of the CNI contract under test.
type fakeCNIRecord struct {
	Command, ContainerID, NetNS, IfName, Args string
	OwnNetNS                                  string // the namespace the plugin process ran in
	NodeSocket                                string
	Labels                                    []map[string]string
	Type                                      string
}

// fakeCNI wires a pod like the real plugin would, minus IPAM and the datastore.
func fakeCNI() int {
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		fmt.Println(`{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}`)
		return 0
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Type       string `json:"type"`
		Args       struct {
			CNI struct {
				Labels []map[string]string `json:"labels"`
			} `json:"cni"`
		} `json:"args"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&conf); err != nil {
		fmt.Printf(`{"cniVersion":"1.0.0","code":6,"msg":"decode config: %v"}`, err)
		return 1
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	rec := fakeCNIRecord{Command: cmd, ContainerID: os.Getenv("CNI_CONTAINERID"), NetNS: os.Getenv("CNI_NETNS"),
		IfName: os.Getenv("CNI_IFNAME"), Args: os.Getenv("CNI_ARGS"), OwnNetNS: own,
		NodeSocket: os.Getenv("TERRACE_NODE_SOCKET"), Labels: conf.Args.CNI.Labels, Type: conf.Type}
	if f, err := os.OpenFile(os.Getenv(fakeCNILogEnv), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
		_ = json.NewEncoder(f).Encode(rec)
		f.Close()
	}
	hostIf := "trc" + rec.ContainerID[:11]
	switch cmd {
	case "ADD":
		addr := fmt.Sprintf("198.18.200.%d", 2+int(rec.ContainerID[0])%200)
		for _, c := range [][]string{
			{"link", "add", hostIf, "type", "veth", "peer", "name", rec.IfName, "netns", filepath.Base(rec.NetNS)},
			{"link", "set", hostIf, "up"},
			{"-n", filepath.Base(rec.NetNS), "addr", "add", addr + "/32", "dev", rec.IfName},
			{"-n", filepath.Base(rec.NetNS), "link", "set", rec.IfName, "up"},
		} {
			if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
				fmt.Printf(`{"cniVersion":"1.0.0","code":11,"msg":%q}`, fmt.Sprint(c, err, string(out)))
				return 1
			}
		}
		fmt.Printf(`{"cniVersion":"1.0.0","interfaces":[{"name":%q},{"name":%q,"sandbox":%q}],"ips":[{"address":"%s/32","interface":1}]}`,
			hostIf, rec.IfName, rec.NetNS, addr)
	case "DEL":
		_ = exec.Command("ip", "link", "del", hostIf).Run() // DEL of something gone is success
	}
	return 0
}

// fakeFailEnv makes the fake terrace-node fail the named subcommand (tests of failures mid-up).
const fakeFailEnv = "TESTBED_FAKE_NODE_FAIL"

// TestMain lets the test binary stand in for terrace-node: the testbed tests link it as
// <bindir>/terrace-node, so they exercise the testbed against a real embedded etcd and a daemon that
// behaves predictably, whatever state the real terrace-node is in while it is being built.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case "terrace-node":
		os.Exit(fakeNode(os.Args[1:]))
	case "terrace-cni", "terrace", "terrace-ipam":
		os.Exit(fakeCNI())
	}
	os.Exit(m.Run())
}

func fakeNode(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "fake terrace-node: no subcommand")
		return 2
	}
	if os.Getenv(fakeFailEnv) == args[0] {
		fmt.Fprintf(os.Stderr, "fake terrace-node: %s fails as the test asked\n", args[0])
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "etcd":
		dataDir := fs.String("data-dir", "", "")
		client := fs.String("listen-client", "", "")
		peer := fs.String("listen-peer", "", "")
		fs.String("config", "", "")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		s, err := embedded.Start(ctx, embedded.Config{DataDir: *dataDir, ListenClient: *client, ListenPeer: *peer,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake terrace-node etcd:", err)
			return 1
		}
		<-ctx.Done()
		s.Stop()
		return 0
	case "run":
		sock := fs.String("node-socket", "", "")
		for _, f := range []string{"node-name", "ip", "ip6", "as-number", "etcd-endpoints", "state-dir", "run-dir", "log-level", "log-file", "config"} {
			fs.String(f, "", "")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		l, err := net.Listen("unix", *sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake terrace-node run:", err)
			return 1
		}
		<-ctx.Done()
		l.Close()
		return 0
	}
	fmt.Fprintln(os.Stderr, "fake terrace-node: unknown subcommand", args[0])
	return 2
}

package main

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/node"
)

func TestNodeStatusCommand(t *testing.T) {
	c, _ := newCLI(t)
	sock := filepath.Join(t.TempDir(), "node.sock")
	r := c.run("", "node", "status", "--node-socket", sock)
	if r.code != 1 || !strings.Contains(r.stderr, "is terrace-node running?") {
		t.Errorf("no daemon: exit %d stderr %q", r.code, r.stderr)
	}

	log := slog.New(slog.DiscardHandler)
	ln, err := node.ListenSocket(sock, log)
	if err != nil {
		t.Fatal(err)
	}
	board := node.NewStatusBoard(node.Status{NodeName: "host-1", IPv4: "192.0.2.1/24", StartTime: time.Now(), Version: "v-test",
		Autodetection: node.AddressInfo{Method: "flag", IPv4: "192.0.2.1/24", Reason: "given by the operator"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.ServeAPI(ctx, ln, board, log) }()
	defer func() { cancel(); <-done }()

	r = c.mustRun("", "node", "status", "--node-socket", sock)
	for _, w := range []string{"host-1", "192.0.2.1/24", "given by the operator", "BGP peers:", "not available"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("status lacks %q:\n%s", w, r.stdout)
		}
	}
	r = c.mustRun("", "node", "status", "-o", "json", "--node-socket", sock)
	if !strings.Contains(r.stdout, `"nodeName": "host-1"`) {
		t.Errorf("json status:\n%s", r.stdout)
	}
	r = c.mustRun("", "node", "status", "-o", "yaml", "--node-socket", sock)
	if !strings.Contains(r.stdout, "\nnodeName: host-1\n") {
		t.Errorf("yaml status:\n%s", r.stdout)
	}
	// A node still waiting for etcd: it says so, and BGP is waiting, not "disabled".
	board.SetDatastore("connecting", "http://192.0.2.9:2379: attempt 3 failed: context deadline exceeded")
	board.SetComponent("bgp", node.ComponentStatus{State: "waiting", Detail: "waiting for the datastore"})
	r = c.mustRun("", "node", "status", "--node-socket", sock)
	for _, w := range []string{"Datastore:", "connecting since", "attempt 3 failed", "bgp", "not available yet: BGP is waiting (waiting for the datastore)"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("status while waiting for etcd lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "disabled") {
		t.Errorf("status while waiting for etcd says something is disabled:\n%s", r.stdout)
	}
}

func TestGetNodeShowsAutodetection(t *testing.T) {
	c, srv := newCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg := node.Registration{Name: "host-1", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		IPv4: node.Choice{Method: "can-reach=192.0.2.254", Addr: netip.MustParsePrefix("192.0.2.1/24"), Interface: "eth0", Reason: "the kernel's source address for reaching 192.0.2.254"}}
	if _, err := node.Register(ctx, datastore.New(store, embedded.TestLogger()), reg, embedded.TestLogger()); err != nil {
		t.Fatal(err)
	}
	r := c.mustRun("", "get", "node", "host-1", "-o", "yaml")
	got, err := yamlToMap([]byte(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"method": "can-reach=192.0.2.254", "ipv4": "192.0.2.1", "interface": "eth0",
		"reason": "IPv4: the kernel's source address for reaching 192.0.2.254", "time": "2026-01-01T00:00:00Z"}
	if diff := cmp.Diff(want, got["status"].(map[string]any)["autodetection"]); diff != "" {
		t.Errorf("status.autodetection (-want +got):\n%s\n%s", diff, r.stdout)
	}
	r = c.mustRun("", "get", "nodes", "-o", "wide")
	if diff := cmp.Diff([]string{"NAME IPV4 IPV6 ASN METHOD INTERFACE RRCLUSTERID LABELS",
		"host-1 192.0.2.1/24 - - can-reach=192.0.2.254 eth0 - -"}, norm(r.stdout)); diff != "" {
		t.Errorf("wide (-want +got):\n%s", diff)
	}
}

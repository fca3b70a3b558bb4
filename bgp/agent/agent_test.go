package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/internal/syncbuf"
	"github.com/terracenet/terrace/ipam"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logOnFailure is a debug logger whose lines the test prints only if it fails: a session that
// never comes up is otherwise a bare timeout.
func logOnFailure(t *testing.T) (*slog.Logger, *syncbuf.Buffer) {
	logs := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), logs
}

func mustApply(t *testing.T, c *datastore.Client, r api.Resource) {
	t.Helper()
	if _, _, err := c.Apply(context.Background(), r); err != nil {
		t.Fatalf("apply %T: %v", r, err)
	}
}

// TestAgentWithPeer runs the whole agent against a real embedded etcd and a second in-process
// speaker (a stand-in ToR) on loopback high ports: the agent advertises its IPAM block, installs
// the peer's prefix, and withdraws the block when IPAM drops it. No root needed.
func TestAgentWithPeer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, logs := logOnFailure(t)
	store, c := testDatastore(t, log)
	tor, torPrefix := setUpToR(t, ctx, c, log, speaker.GracefulRestart{})
	blk := putBlock(t, store, "198.18.0.0/26", "host-1")

	w := newFakeWriter()
	nl := &fakeNetlink{table: underlay().table}
	nl.table = append(nl.table, underlay().table[0])
	nl.table[len(nl.table)-1].Dst = cidr("127.0.0.0/8")
	var last Status
	statusC := make(chan Status, 100)
	a, err := New(Config{NodeName: "host-1", Client: c, Writer: w, Netlink: nl, StopOnExit: true, Logger: log,
		StatusInterval: 100 * time.Millisecond, Publish: func(s Status) {
			select {
			case statusC <- s:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	waitUntil(t, 15*time.Second, "the peer learns the agent's block", func() bool {
		_, ok := tor.Learned()[blk.CIDR]
		return ok
	})
	waitUntil(t, 15*time.Second, "the agent installs the peer's prefix via 127.0.0.2", func() bool {
		tg, ok := w.get(torPrefix)
		return ok && slices.Equal(tg.Gateways, routes.Via(netip.MustParseAddr("127.0.0.2")))
	})
	waitUntil(t, 5*time.Second, "status shows the established peer", func() bool {
		for {
			select {
			case last = <-statusC:
			default:
				return last.State == "running" && len(last.Peers) == 1 && last.Peers[0].State == "established" &&
					last.Advertised == 1 && last.Routes.Installed == 1
			}
		}
	})

	// The Node gains an address: the speaker learns it in place, the session is not reset.
	upAt := last.Peers[0].EstablishedAt
	extra := netip.MustParseAddr("127.0.0.9")
	mustApply(t, c, &api.Node{Metadata: api.ObjectMeta{Name: "host-1"},
		Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "127.0.0.1/8"}, Addresses: []api.NodeAddress{{Address: extra.String()}}}})
	waitUntil(t, 15*time.Second, "the agent takes the Node's new address", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return slices.Contains(a.global.LocalAddresses, extra)
	})
	if strings.Contains(logs.String(), "restarting the speaker") {
		t.Error("a new Node address restarted the speaker")
	}
	waitUntil(t, 5*time.Second, "status after the address change", func() bool {
		for {
			select {
			case last = <-statusC:
			default:
				return len(last.Peers) == 1 && last.Peers[0].State == "established" && last.Peers[0].EstablishedAt.Equal(upAt)
			}
		}
	})

	if _, err := store.Delete(ctx, ipam.BlockKey(blk.CIDR), 0); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the peer sees the block withdrawn", func() bool {
		_, ok := tor.Learned()[blk.CIDR]
		return !ok
	})
	if err := tor.SetAdvertised(ctx, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the agent drops the withdrawn prefix", func() bool {
		_, ok := w.get(torPrefix)
		return !ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %s: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentRereadsPasswords: password files live outside the datastore, so the agent reads them
// again on its own (RecheckInterval) and a rotated password needs no unrelated change to apply.
func TestAgentRereadsPasswords(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, c := testDatastore(t, embedded.TestLogger())
	asn := api.ASNumber(64512)
	mesh := false
	mustApply(t, c, &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: "default"},
		Spec: api.BGPConfigurationSpec{NodeToNodeMeshEnabled: &mesh, ASNumber: &asn, ListenPort: freePort(t)}})
	mustApply(t, c, &api.Node{Metadata: api.ObjectMeta{Name: "host-1"},
		Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "127.0.0.1/8"}}})
	mustApply(t, c, &api.BGPPeer{Metadata: api.ObjectMeta{Name: "tor"},
		Spec: api.BGPPeerSpec{Node: "host-1", PeerIP: fmt.Sprintf("127.0.0.2:%d", freePort(t)), ASNumber: 65000,
			Password: &api.BGPPassword{File: "/nonexistent/terrace-test-password"}}})
	var mu sync.Mutex
	reads := 0
	a, err := New(Config{NodeName: "host-1", Client: c, Writer: newFakeWriter(), Netlink: &fakeNetlink{table: underlay().table},
		StopOnExit: true, Logger: embedded.TestLogger(), RecheckInterval: 100 * time.Millisecond,
		Password: func(*api.BGPPassword) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			reads++
			return fmt.Sprintf("secret-%d", reads), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return reads
	}
	waitUntil(t, 15*time.Second, "the first read of the password", func() bool { return count() > 0 })
	first := count()
	waitUntil(t, 5*time.Second, "the password read again with nothing changed in the datastore", func() bool { return count() >= first+3 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestMeshAcrossListenPorts: two agents in a node-to-node mesh, each listening on the port its
// own BGPConfiguration gives (the cluster default for one, a node.<name> override for the other):
// the dialing side must use the other node's port, and each learns the other's block.
func TestMeshAcrossListenPorts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, _ := logOnFailure(t)
	store, c := testDatastore(t, embedded.TestLogger())
	asn := api.ASNumber(64512)
	mustApply(t, c, &api.IPPool{Metadata: api.ObjectMeta{Name: "pool"}, Spec: api.IPPoolSpec{CIDR: "198.18.0.0/15"}})
	mustApply(t, c, &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: "default"},
		Spec: api.BGPConfigurationSpec{ASNumber: &asn, ListenPort: freePort(t)}})
	mustApply(t, c, &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: "node.host-2"},
		Spec: api.BGPConfigurationSpec{ListenPort: freePort(t)}})
	blocks := map[string]netip.Prefix{"host-1": netip.MustParsePrefix("198.18.0.0/26"), "host-2": netip.MustParsePrefix("198.18.0.64/26")}
	writers := map[string]*fakeWriter{}
	var wg sync.WaitGroup
	for i, name := range []string{"host-1", "host-2"} {
		mustApply(t, c, &api.Node{Metadata: api.ObjectMeta{Name: name},
			Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: fmt.Sprintf("127.0.0.%d/8", i+1)}}})
		putBlock(t, store, blocks[name].String(), name)
		nl := &fakeNetlink{table: append(underlay().table[:0:0], underlay().table[0])}
		nl.table[0].Dst = cidr("127.0.0.0/8")
		writers[name] = newFakeWriter()
		a, err := New(Config{NodeName: name, Client: c, Writer: writers[name], Netlink: nl, StopOnExit: true,
			Logger: log.With("node", name)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				t.Errorf("%s: Run = %v", name, err)
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	for name, other := range map[string]string{"host-1": "host-2", "host-2": "host-1"} {
		waitUntil(t, 30*time.Second, name+" installs "+other+"'s block", func() bool {
			_, ok := writers[name].get(blocks[other])
			return ok
		})
	}
}

// testDatastore starts an embedded etcd for the test and opens a store and a typed client on it.
func testDatastore(t *testing.T, log *slog.Logger) (*kv.Store, *datastore.Client) {
	t.Helper()
	srv := embedded.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store, datastore.New(store, log)
}

// putBlock writes an IPAM block affine to host, as IPAM would after a claim.
func putBlock(t *testing.T, store *kv.Store, cidr, host string) *ipam.Block {
	t.Helper()
	blk, err := ipam.NewBlock(netip.MustParsePrefix(cidr), host)
	if err != nil {
		t.Fatal(err)
	}
	data, err := ipam.EncodeBlock(blk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(context.Background(), ipam.BlockKey(blk.CIDR), data); err != nil {
		t.Fatal(err)
	}
	return blk
}

// TestFollowLogLevel: logSeverityScreen sets the bgp part's level, "" goes back to the starting
// one, a value that does not parse changes nothing, and a fixed level (no LevelVar) stays.
func TestFollowLogLevel(t *testing.T) {
	level := new(slog.LevelVar)
	level.Set(slog.LevelInfo)
	a := &Agent{cfg: Config{LogLevel: level}, log: slog.New(slog.DiscardHandler), baseLevel: slog.LevelInfo}
	for _, st := range []struct {
		name string
		want slog.Level
	}{{"Debug", slog.LevelDebug}, {"nonsense", slog.LevelDebug}, {"Warning", slog.LevelWarn}, {"", slog.LevelInfo}, {"fatal", slog.LevelError}} {
		a.followLogLevel(st.name)
		if got := level.Level(); got != st.want {
			t.Errorf("after %q: level %v, want %v", st.name, got, st.want)
		}
	}
	fixed := &Agent{log: slog.New(slog.DiscardHandler)}
	fixed.followLogLevel("Debug") // must not panic or change anything
}

// setUpToR writes what an agent for host-1 (127.0.0.1) needs to peer with a ToR (127.0.0.2, AS
// 65000) and nothing else, starts that ToR as an in-process speaker with gr towards the agent,
// and has it advertise one prefix, which it returns.
func setUpToR(t *testing.T, ctx context.Context, c *datastore.Client, log *slog.Logger, gr speaker.GracefulRestart) (*speaker.Speaker, netip.Prefix) {
	t.Helper()
	agentPort, torPort := freePort(t), freePort(t)
	asn := api.ASNumber(64512)
	mesh := false
	mustApply(t, c, &api.IPPool{Metadata: api.ObjectMeta{Name: "pool"}, Spec: api.IPPoolSpec{CIDR: "198.18.0.0/15"}})
	mustApply(t, c, &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: "default"},
		Spec: api.BGPConfigurationSpec{NodeToNodeMeshEnabled: &mesh, ASNumber: &asn, ListenPort: agentPort}})
	mustApply(t, c, &api.Node{Metadata: api.ObjectMeta{Name: "host-1"},
		Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "127.0.0.1/8"}}})
	mustApply(t, c, &api.BGPPeer{Metadata: api.ObjectMeta{Name: "tor"},
		Spec: api.BGPPeerSpec{Node: "host-1", PeerIP: fmt.Sprintf("127.0.0.2:%d", torPort), ASNumber: 65000}})
	tor := speaker.New(speaker.Options{Logger: log})
	if err := tor.Start(ctx, speaker.Global{ASN: 65000, RouterID: netip.MustParseAddr("127.0.0.2"), ListenPort: int32(torPort),
		ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tor.Stop)
	if err := tor.SetPeers(ctx, []speaker.Peer{{Address: netip.MustParseAddr("127.0.0.1"), Port: uint16(agentPort), ASN: 64512,
		Type: speaker.PeerTypeGlobal, SourceAddress: netip.MustParseAddr("127.0.0.2"), Families: speaker.Families{IPv4: true},
		GracefulRestart: gr}}); err != nil {
		t.Fatal(err)
	}
	torPrefix := netip.MustParsePrefix("198.18.100.0/26")
	if err := tor.SetAdvertised(ctx, map[netip.Prefix]speaker.Advert{torPrefix: {}}); err != nil {
		t.Fatal(err)
	}
	return tor, torPrefix
}

// TestStaleRoutesGoAtEndOfRIB: with a peer that restarts gracefully (and so says when it has sent
// its whole table), routes left from a previous run may go once it has, long before the sync
// grace (a minute here) ends.
func TestStaleRoutesGoAtEndOfRIB(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, _ := logOnFailure(t)
	_, c := testDatastore(t, log)
	_, torPrefix := setUpToR(t, ctx, c, log, speaker.GracefulRestart{Enabled: true, RestartTime: 60})
	w := newFakeWriter()
	nl := &fakeNetlink{table: []netlink.Route{{Dst: cidr("127.0.0.0/8"), Type: unix.RTN_UNICAST}}}
	a, err := New(Config{NodeName: "host-1", Client: c, Writer: w, Netlink: nl, StopOnExit: true, Logger: log,
		SyncGrace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	start := time.Now()
	waitUntil(t, 20*time.Second, "in sync before the grace ends", func() bool { return a.prog.Stats().InSync })
	if _, ok := w.get(torPrefix); !ok {
		t.Errorf("in sync after %s without the peer's prefix", time.Since(start))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// Go 1.24+ listeners default to MPTCP, and an MPTCP socket refuses TCP_MD5SIG (ENOPROTOOPT), so
// GoBGP could not set BGP passwords on its listener. Every binary embedding the speaker needs the
// same directive (terrace-node's main package).
//
//go:debug multipathtcp=0
package speaker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
)

// recordingSink keeps the latest learned routes and counts calls.
type recordingSink struct {
	mu     sync.Mutex
	routes map[netip.Prefix][]netip.Addr
	calls  int
	ch     chan struct{}
}

func newRecordingSink() *recordingSink {
	return &recordingSink{routes: map[netip.Prefix][]netip.Addr{}, ch: make(chan struct{}, 1)}
}

func (r *recordingSink) UpdateLearnedRoutes(m map[netip.Prefix][]netip.Addr, full bool) {
	r.mu.Lock()
	r.routes = ApplyRouteChanges(r.routes, m, full)
	r.calls++
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recordingSink) get() map[netip.Prefix][]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.routes)
}

// waitFor polls cond until it holds or the timeout passes, then fails with what it last saw.
func (r *recordingSink) waitFor(t *testing.T, timeout time.Duration, what string, cond func(map[netip.Prefix][]netip.Addr) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := r.get()
		if cond(got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; sink holds %d prefixes: %v", timeout, what, len(got), truncate(got))
		}
		select {
		case <-r.ch:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func truncate(m map[netip.Prefix][]netip.Addr) string {
	if len(m) > 10 {
		return fmt.Sprintf("(%d entries)", len(m))
	}
	return fmt.Sprint(m)
}

// freePort finds a TCP port that is free on every given loopback address at once.
func freePort(t testing.TB, addrs ...netip.Addr) uint16 {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", netip.AddrPortFrom(addrs[0], 0).String())
		if err != nil {
			t.Fatalf("probe free port: %v", err)
		}
		port := uint16(l.Addr().(*net.TCPAddr).Port)
		ok := true
		var others []net.Listener
		for _, a := range addrs[1:] {
			o, err := net.Listen("tcp", netip.AddrPortFrom(a, port).String())
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		l.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on all test addresses")
	return 0
}

var (
	addrA = netip.MustParseAddr("127.0.0.2")
	addrB = netip.MustParseAddr("127.0.0.3")
	addrC = netip.MustParseAddr("127.0.0.4")
)

type testSpeaker struct {
	*Speaker
	addr netip.Addr
	asn  uint32
	port uint16
	sink *recordingSink
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BGP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startSpeaker(t testing.TB, addr netip.Addr, asn uint32, port uint16, mod func(*Options, *Global)) *testSpeaker {
	t.Helper()
	sink := newRecordingSink()
	opts := Options{Logger: testLogger(t).With("speaker", addr.String()), Sink: sink}
	g := Global{ASN: asn, RouterID: addr, ListenPort: int32(port), ListenAddresses: []netip.Addr{addr}}
	if mod != nil {
		mod(&opts, &g)
	}
	s := New(opts)
	if err := s.Start(context.Background(), g); err != nil {
		t.Fatalf("start speaker %v: %v", addr, err)
	}
	t.Cleanup(s.Stop)
	return &testSpeaker{Speaker: s, addr: addr, asn: asn, port: port, sink: sink}
}

// peerOf is the Peer that makes from's session towards to. As bgp/config does for the mesh, only
// the lower address dials: two GoBGP speakers that both dial can lock into a cycle where each
// connects while the other sits in its 5 s idle hold.
func peerOf(from, to *testSpeaker) Peer {
	typ := PeerTypeMesh
	if from.asn != to.asn {
		typ = PeerTypeGlobal
	}
	return Peer{Address: to.addr, Port: to.port, ASN: to.asn, Type: typ, SourceAddress: from.addr,
		KeepaliveSeconds: 3, HoldSeconds: 9, Passive: to.addr.Less(from.addr)}
}

func setPeers(t testing.TB, s *testSpeaker, peers ...Peer) {
	t.Helper()
	if err := s.SetPeers(context.Background(), peers); err != nil {
		t.Fatalf("set peers on %v: %v", s.addr, err)
	}
}

func statusOf(t testing.TB, s *testSpeaker, peer netip.Addr) PeerStatus {
	t.Helper()
	sts, err := s.PeerStatus(context.Background())
	if err != nil {
		t.Fatalf("peer status on %v: %v", s.addr, err)
	}
	for _, st := range sts {
		if st.Address == peer {
			return st
		}
	}
	t.Fatalf("speaker %v has no status for peer %v (has %v)", s.addr, peer, sts)
	return PeerStatus{}
}

func waitEstablished(t testing.TB, s *testSpeaker, peer netip.Addr) PeerStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := statusOf(t, s, peer)
		if st.State == "established" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %v -> %v not established: %+v", s.addr, peer, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func advertise(t testing.TB, s *testSpeaker, m map[netip.Prefix]Advert) {
	t.Helper()
	if err := s.SetAdvertised(context.Background(), m); err != nil {
		t.Fatalf("advertise on %v: %v", s.addr, err)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// netOpts lets go-cmp compare netip values, which have unexported fields but are comparable.
var netOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore/embedded"
)

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; nil: valid
	}{
		{"defaults", Config{}, nil},
		{"addresses and methods", Config{NodeName: "n1", IPv4: "192.0.2.1/24", IPv6: "2001:db8::1",
			IPv6Method: "can-reach=2001:db8::9", ASNumber: "1.10"}, nil},
		{"none and autodetect", Config{IPv4: "none", IPv6: "autodetect", IPv6Method: "interface=eth.*"}, nil},
		{"bad address", Config{IPv4: "192.0.2.999"}, []string{`parse IPv4 address "192.0.2.999"`}},
		{"wrong family", Config{IPv6: "192.0.2.1"}, []string{"wrong family"}},
		{"bad method", Config{IPv4Method: "skip-interface=eth0"}, []string{"parse autodetection method"}},
		{"bad regex", Config{IPv6: "autodetect", IPv6Method: "interface=(("}, []string{"missing closing )"}},
		{"AS zero", Config{ASNumber: "0"}, []string{"spec.bgp.asNumber"}},
		{"AS malformed", Config{ASNumber: "65536.1"}, []string{"parse --as-number"}},
		{"IPv6 only", Config{IPv4: "none", IPv6: "autodetect"}, nil},
		{"no family left", Config{IPv4: "none"}, []string{"no address family is enabled"}},
		{"both none", Config{IPv4: "none", IPv6: "none"}, []string{"no address family is enabled"}},
		{"method none", Config{IPv4Method: "none", IPv6Method: "none"}, []string{"no address family is enabled"}},
		{"can-reach of the other family", Config{IPv6: "autodetect", IPv6Method: "can-reach=192.0.2.1"}, []string{"the can-reach target is not an IPv6 address"}},
		{"loopback address", Config{IPv4: "127.0.0.1"}, []string{"not a unicast address other hosts can reach"}},
		{"bad name and address together", Config{NodeName: "Host_1", IPv4: "x"},
			[]string{"metadata.name", `parse IPv4 address "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Check()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check accepted %+v", tt.cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestWatchDatastoreFollowsEtcd: the board's datastore line says when etcd stops answering after
// start, and when it is back.
func TestWatchDatastoreFollowsEtcd(t *testing.T) {
	srv := embedded.StartForTest(t)
	store := openTestStore(t, srv)
	board := NewStatusBoard(Status{NodeName: "host-a"})
	board.SetDatastore("connected", "ep")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchDatastore(ctx, store, board, "ep", 100*time.Millisecond, embedded.TestLogger())
	}()
	defer func() { cancel(); <-done }()

	time.Sleep(300 * time.Millisecond)
	if st := board.Snapshot().Datastore; st.State != "connected" {
		t.Fatalf("with etcd up: %+v", st)
	}
	srv.Stop()
	waitUntil(t, 20*time.Second, "the board to say unreachable", func() bool {
		st := board.Snapshot().Datastore
		return st.State == "unreachable" && strings.HasPrefix(st.Detail, "ep: ")
	})
	if err := srv.StartAgain(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the board to say connected again", func() bool { return board.Snapshot().Datastore.State == "connected" })
}

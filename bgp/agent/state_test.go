package agent

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func block(t *testing.T, cidr, node string, assign map[string]string) kv.Update {
	t.Helper()
	b, err := ipam.NewBlock(netip.MustParsePrefix(cidr), node)
	if err != nil {
		t.Fatal(err)
	}
	for ip, holder := range assign {
		if err := b.AssignIP(netip.MustParseAddr(ip), "h-"+ip, map[string]string{ipam.AttrNode: holder}); err != nil {
			t.Fatal(err)
		}
	}
	data, err := ipam.EncodeBlock(b)
	if err != nil {
		t.Fatal(err)
	}
	return kv.Update{Type: kv.UpdatePut, KV: kv.KV{Key: ipam.BlockKey(b.CIDR), Value: data}}
}

func TestInputsBlocksAndBorrowed(t *testing.T) {
	kicks := 0
	in := newInputs("host-1", slog.New(slog.DiscardHandler), func() { kicks++ })
	bc := blockCallbacks{in}
	bc.OnUpdates([]kv.Update{
		block(t, "198.18.0.0/26", "host-1", map[string]string{"198.18.0.1": "host-1"}),
		block(t, "198.18.0.64/26", "host-2", map[string]string{"198.18.0.65": "host-2", "198.18.0.66": "host-1"}),
		block(t, "2001:db8:1000::/122", "host-1", nil),
		{Type: kv.UpdatePut, KV: kv.KV{Key: ipam.BlockPrefix + "garbage", Value: []byte("{")}},
	})
	ci := in.snapshot(nil)
	wantBlocks := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:1000::/122")}
	if diff := cmp.Diff(wantBlocks, ci.Blocks, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("blocks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("198.18.0.66")}, ci.Borrowed,
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("borrowed (-want +got):\n%s", diff)
	}
	bc.OnUpdates([]kv.Update{{Type: kv.UpdateDelete, KV: kv.KV{Key: ipam.BlockKey(netip.MustParsePrefix("198.18.0.64/26"))}}})
	if got := in.snapshot(nil).Borrowed; len(got) != 0 {
		t.Errorf("borrowed after the block went: %v, want none", got)
	}
	// A known block rewritten in a form this version cannot read (a newer writer during an
	// upgrade) stays advertised as last read: other hosts keep their route to its pods.
	bc.OnUpdates([]kv.Update{{Type: kv.UpdatePut, KV: kv.KV{Key: ipam.BlockKey(netip.MustParsePrefix("198.18.0.0/26")), Value: []byte(`{"cidr":7}`)}}})
	if diff := cmp.Diff(wantBlocks, in.snapshot(nil).Blocks, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("blocks after an unreadable rewrite (-want +got):\n%s", diff)
	}
	if kicks != 3 {
		t.Errorf("kicks = %d, want one per batch (3)", kicks)
	}
}

func TestInputsResourcesAndSync(t *testing.T) {
	in := newInputs("host-1", slog.New(slog.DiscardHandler), func() {})
	rc, bc := resourceCallbacks{in}, blockCallbacks{in}
	n := &api.Node{Metadata: api.ObjectMeta{Name: "host-1"}}
	p := &api.BGPPeer{Metadata: api.ObjectMeta{Name: "tor"}}
	c := &api.BGPConfiguration{Metadata: api.ObjectMeta{Name: "default"}}
	pool := &api.IPPool{Metadata: api.ObjectMeta{Name: "pool"}}
	rc.OnUpdates([]datastore.ResourceUpdate{
		{Type: kv.UpdatePut, Kind: "Node", Name: "host-1", Resource: n},
		{Type: kv.UpdatePut, Kind: "BGPPeer", Name: "tor", Resource: p},
		{Type: kv.UpdatePut, Kind: "BGPConfiguration", Name: "default", Resource: c},
		{Type: kv.UpdatePut, Kind: "IPPool", Name: "pool", Resource: pool},
	})
	ci := in.snapshot(nil)
	if len(ci.Nodes) != 1 || len(ci.Peers) != 1 || len(ci.Configs) != 1 || len(ci.Pools) != 1 || ci.NodeName != "host-1" {
		t.Fatalf("snapshot = %+v", ci)
	}
	rc.OnUpdates([]datastore.ResourceUpdate{{Type: kv.UpdateDelete, Kind: "BGPPeer", Name: "tor"}})
	if got := in.snapshot(nil).Peers; len(got) != 0 {
		t.Errorf("peers after delete: %v", got)
	}
	tests := []struct {
		ds, ipam kv.Status
		want     bool
	}{
		{kv.StatusWaitForDatastore, kv.StatusWaitForDatastore, false},
		{kv.StatusInSync, kv.StatusResyncInProgress, false},
		{kv.StatusResyncInProgress, kv.StatusInSync, false},
		{kv.StatusInSync, kv.StatusInSync, true},
	}
	for _, tc := range tests {
		rc.OnStatus(tc.ds)
		bc.OnStatus(tc.ipam)
		if got := in.inSync(); got != tc.want {
			t.Errorf("inSync(ds=%v, ipam=%v) = %v, want %v", tc.ds, tc.ipam, got, tc.want)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	st := Status{ASN: 64512, RouterID: "192.0.2.1", Advertised: 3, Routes: RouteStats{Learned: 2, Installed: 2},
		Warnings: []string{"w"}}
	// Through JSON, as the local API serves it.
	got, err := StatusFromDetails("running", "", roundTrip(t, st.Details()))
	if err != nil {
		t.Fatal(err)
	}
	st.State = "running"
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if _, err := StatusFromDetails("x", "", map[string]any{"peers": "not a list"}); err == nil {
		t.Error("malformed details accepted")
	}
}

func roundTrip(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

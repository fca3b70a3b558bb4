package felix

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

// TestAgentWithEtcd runs the agent's own syncers against a real embedded etcd (no root needed):
// resources and this node's affinities reach the calculator, and status keys land in etcd.
func TestAgentWithEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, client := startTestDatastore(t, ctx)
	block := mustPrefix(t, "198.18.0.64/26")
	if _, err := store.Put(ctx, ipam.AffinityKey(testNode, block), fmt.Appendf(nil, `{"state":"confirmed","node":%q,"cidr":%q}`, testNode, block)); err != nil {
		t.Fatal(err)
	}
	// Another node's affinity must not be watched at all.
	if _, err := store.Put(ctx, ipam.AffinityKey(testNode+"x", mustPrefix(t, "198.18.1.0/26")), []byte(`{"state":"confirmed"}`)); err != nil {
		t.Fatal(err)
	}
	w, err := client.Create(ctx, &api.WorkloadEndpoint{Metadata: api.ObjectMeta{Name: "w1", Namespace: "ns1"},
		Spec: api.WorkloadEndpointSpec{Node: testNode, Orchestrator: "k8s", Pod: "p", Endpoint: "eth0",
			InterfaceName: "trc0123456789a", IPNetworks: []string{"198.18.0.65/32"}}})
	if err != nil {
		t.Fatal(err)
	}
	dp, fc := newFakeDP(), &fakeCalc{node: testNode}
	a := New(Config{NodeName: testNode, Client: client, ApplyInterval: 5 * time.Millisecond, Refresh: noRefresh, Logger: testLogger(t)}, dp.dataplane(), fc)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "ready", func() bool { ok, _ := a.Ready(); return ok })
	if _, ok := dp.routes.inKernel("198.18.0.65/32"); !ok {
		t.Errorf("workload route missing: %v", dp.routes.kernelKeys())
	}
	fc.mu.Lock()
	blocks := fmt.Sprint(fc.blocks)
	fc.mu.Unlock()
	if blocks != "[198.18.0.64/26]" {
		t.Errorf("blocks = %s, want only this node's", blocks)
	}
	key := datastore.EndpointStatusKey(testNode, "ns1", "w1")
	waitFor(t, "status key", func() bool {
		e, err := store.Get(ctx, key)
		if err != nil {
			return false
		}
		st, err := datastore.ParseEndpointStatus(e.Value)
		return err == nil && fmt.Sprint(st.Revision) == w.(*api.WorkloadEndpoint).Metadata.ResourceVersion
	})
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startTestDatastore starts an embedded etcd for the test and returns a store and client on it,
// both closed when the test ends.
func startTestDatastore(t *testing.T, ctx context.Context) (*kv.Store, *datastore.Client) {
	t.Helper()
	srv := embedded.StartForTest(t)
	store, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, testLogger(t))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return store, datastore.New(store, testLogger(t))
}

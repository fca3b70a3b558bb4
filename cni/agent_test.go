package cni

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/node"
)

// serveAgent serves node's datastore API for nodeName on a fresh unix socket, ready on store
// unless store is nil, and returns the socket's path.
func serveAgent(t testing.TB, nodeName string, store *kv.Store, ds *datastore.Client) string {
	t.Helper()
	return serveAgentWith(t, nodeName, store, ds, true)
}

// serveAgentWith serves the node agent's API for nodeName on a fresh socket; with commands, it
// also runs whole CNI commands (with failure points, as terrace-node never does), as terrace-node
// does; without, it is an agent that serves only the datastore calls.
func serveAgentWith(t testing.TB, nodeName string, store *kv.Store, ds *datastore.Client, commands bool) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "node.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	a := node.NewDatastoreAPI(nodeName, embedded.TestLogger())
	if store != nil {
		a.SetDatastore(store, ds)
	}
	if commands {
		cs := &CommandServer{Node: nodeName, Dataplane: NewLinuxDataplane(), Datastore: a.Handler(http.NotFoundHandler()), FailPoints: true}
		a.SetCommandRunner(cs.Run)
	}
	srv := &http.Server{Handler: a.Handler(node.NewStatusBoard(node.Status{NodeName: nodeName}).Handler())}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestDialAgentRefuses(t *testing.T) {
	ctx := context.Background()
	notReady := serveAgent(t, "host-a", nil, nil)
	tests := []struct{ name, socket, node string }{
		{"no socket", filepath.Join(t.TempDir(), "none.sock"), "host-a"},
		{"not connected to etcd", notReady, "host-a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			be, err := DialAgent(ctx, tc.socket, tc.node, nil)
			if err == nil {
				be.Close()
				t.Fatal("DialAgent succeeded")
			}
			if d := time.Since(start); d > agentProbeTimeout+time.Second {
				t.Errorf("refusal took %s", d)
			}
		})
	}
}

// testStore starts an embedded etcd for one test and opens the raw and typed clients on it.
func testStore(t *testing.T) (*kv.Store, *datastore.Client) {
	t.Helper()
	srv := embedded.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, datastore.New(st, embedded.TestLogger())
}

func TestAgentBackend(t *testing.T) {
	st, ds := testStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: "p4"}, Spec: api.IPPoolSpec{CIDR: "198.18.0.0/30", BlockSize: 30}}
	if _, err := ds.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	sock := serveAgent(t, "host-a", st, ds)

	if be, err := DialAgent(ctx, sock, "host-b", nil); err == nil {
		be.Close()
		t.Fatal("DialAgent accepted an agent of another node")
	}
	directOpened := 0
	be, err := DialAgent(ctx, sock, "host-a", func(context.Context) (Backend, error) {
		directOpened++
		return &etcdLike{st: st}, nil
	})
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer be.Close()

	// Addresses: assign until exhausted, read the handle, release by address and by handle.
	var got []netip.Addr
	for i := range 4 {
		v4, v6, err := be.AutoAssign(ctx, AssignRequest{Node: "host-a", Handle: "net.c" + string(rune('0'+i)), Num4: 1})
		if err != nil {
			t.Fatalf("assign %d: %v", i, err)
		}
		if len(v4) != 1 || len(v6) != 0 {
			t.Fatalf("assign %d gave %v %v", i, v4, v6)
		}
		got = append(got, v4[0])
	}
	if _, _, err := be.AutoAssign(ctx, AssignRequest{Node: "host-a", Handle: "net.full", Num4: 1}); !errors.Is(err, ErrPoolsExhausted) {
		t.Errorf("assign on a full pool: %v, want ErrPoolsExhausted", err)
	}
	if _, _, err := be.AutoAssign(ctx, AssignRequest{Node: "host-a", Handle: "net.x", Num4: 1, IPv4Pools: []string{"nope"}}); !errors.Is(err, ErrNoPools) {
		t.Errorf("assign from an unknown pool: %v, want ErrNoPools", err)
	}
	held, err := be.HandleAddrs(ctx, "net.c0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]netip.Addr{got[0]}, held, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("handle addresses (-want +got):\n%s", diff)
	}
	if err := be.ReleaseIPs(ctx, got[1]); err != nil {
		t.Errorf("release by address: %v", err)
	}
	for range 2 {
		if err := be.ReleaseHandle(ctx, "net.c0"); err != nil {
			t.Errorf("release by handle: %v", err)
		}
	}
	if held, err := be.HandleAddrs(ctx, "net.c0"); err != nil || len(held) != 0 {
		t.Errorf("released handle holds %v (%v)", held, err)
	}
	if _, _, err := be.AutoAssign(ctx, AssignRequest{Node: "host-a", Handle: "net.again", Num4: 2}); err != nil {
		t.Errorf("the two freed addresses are not assignable again: %v", err)
	}

	// Endpoints, with the sentinels the plugin relies on.
	w := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: "host--a-cni-p-eth0", Namespace: "default"},
		Spec:     api.WorkloadEndpointSpec{Node: "host-a", Orchestrator: "cni", Pod: "p", Endpoint: "eth0", ContainerID: "c", IPNetworks: []string{got[2].String() + "/32"}}}
	if _, err := be.GetEndpoint(ctx, "default", w.Metadata.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("get missing: %v, want ErrNotFound", err)
	}
	created, err := be.CreateEndpoint(ctx, w)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := be.CreateEndpoint(ctx, w); !errors.Is(err, ErrExists) {
		t.Errorf("create twice: %v, want ErrExists", err)
	}
	read, err := be.GetEndpoint(ctx, "default", w.Metadata.Name)
	if err != nil || read.Metadata.ResourceVersion != created.Metadata.ResourceVersion || read.Spec.ContainerID != "c" {
		t.Fatalf("get = %+v, %v", read, err)
	}
	w.Spec.ContainerID = "c2"
	w.Metadata.ResourceVersion = created.Metadata.ResourceVersion
	updated, err := be.UpdateEndpoint(ctx, w)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := be.UpdateEndpoint(ctx, w); !errors.Is(err, ErrConflict) {
		t.Errorf("update at a stale revision: %v, want conflict", err)
	}
	key := EndpointStatusKey("host-a", "default", w.Metadata.Name)
	if _, ok, err := be.GetRaw(ctx, key); ok || err != nil {
		t.Errorf("status before felix wrote it: ok=%v err=%v", ok, err)
	}
	if _, err := st.Put(ctx, key, []byte(`{"programmed":true,"revision":3}`)); err != nil {
		t.Fatal(err)
	}
	if data, ok, err := be.GetRaw(ctx, key); !ok || err != nil || string(data) != `{"programmed":true,"revision":3}` {
		t.Errorf("status = %q %v %v", data, ok, err)
	}
	if directOpened != 0 {
		t.Errorf("the direct backend was opened %d times for calls the agent serves", directOpened)
	}
	if err := be.DeleteEndpoint(ctx, "default", w.Metadata.Name, updated.Metadata.ResourceVersion); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := be.DeleteEndpoint(ctx, "default", w.Metadata.Name, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete twice: %v, want ErrNotFound", err)
	}
	// What the agent does not serve goes to etcd, opened once.
	if _, err := be.NodeAllocations(ctx, "host-a"); err != nil {
		t.Error(err)
	}
	if _, _, err := be.GetRaw(ctx, "/terrace/status/v1/host-b/endpoints/default/x"); err != nil {
		t.Error(err)
	}
	if directOpened != 1 {
		t.Errorf("direct backend opened %d times, want 1", directOpened)
	}
}

// etcdLike is the small part of the direct backend the agent backend falls back to.
type etcdLike struct {
	Backend
	st *kv.Store
}

func (e *etcdLike) NodeAllocations(context.Context, string) ([]Allocation, error) { return nil, nil }

func (e *etcdLike) GetRaw(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := e.st.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v.Value, true, nil
}

func (e *etcdLike) Close() error { return nil }

package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
)

// fakeResources stands in for the typed datastore client: IPAM only reads resources, and keeping
// them in memory lets a test create thousands of endpoints without writing them to etcd.
type fakeResources struct {
	mu    sync.Mutex
	items map[string]api.Resource
}

func newFakeResources() *fakeResources { return &fakeResources{items: map[string]api.Resource{}} }

func resKey(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

func (f *fakeResources) Get(_ context.Context, kind, ns, name string) (api.Resource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.items[resKey(kind, ns, name)]
	if !ok {
		return nil, fmt.Errorf("get %s %s/%s: %w", kind, ns, name, kv.ErrNotFound)
	}
	return r, nil
}

func (f *fakeResources) List(_ context.Context, kind, ns string) ([]api.Resource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k, r := range f.items {
		if r.GetTypeMeta().Kind == kind && (ns == "" || r.GetObjectMeta().Namespace == ns) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]api.Resource, 0, len(keys))
	for _, k := range keys {
		out = append(out, f.items[k])
	}
	return out, nil
}

func (f *fakeResources) put(r api.Resource) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := r.GetObjectMeta()
	f.items[resKey(r.GetTypeMeta().Kind, m.Namespace, m.Name)] = r
}

func (f *fakeResources) del(kind, ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.items, resKey(kind, ns, name))
}

func (f *fakeResources) addPool(name, cidr string, blockSize int, mutate ...func(*api.IPPoolSpec)) {
	p := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name}, Spec: api.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
	for _, m := range mutate {
		m(&p.Spec)
	}
	f.put(p)
}

func (f *fakeResources) setConfig(strict bool, maxBlocks int) {
	f.put(&api.IPAMConfiguration{TypeMeta: api.TypeMeta{Kind: "IPAMConfiguration", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: api.IPAMConfigurationName},
		Spec:     api.IPAMConfigurationSpec{StrictAffinity: strict, MaxBlocksPerHost: maxBlocks}})
}

func (f *fakeResources) addNode(name string, labels map[string]string) {
	f.put(&api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name, Labels: labels}})
}

func (f *fakeResources) addWEP(ns, name, pod string, ips ...netip.Addr) {
	w := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name, Namespace: ns}}
	w.Spec.Pod = pod
	for _, ip := range ips {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.PrefixFrom(ip, ip.BitLen()).String())
	}
	f.put(w)
}

// testEnv is one embedded etcd plus the resources the allocators read.
type testEnv struct {
	t    testing.TB
	srv  *embedded.Server
	res  *fakeResources
	real bool // allocators read resources from etcd through the typed client
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	return &testEnv{t: t, srv: embedded.StartForTest(t), res: newFakeResources()}
}

func (e *testEnv) store() *kv.Store {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := kv.Open(ctx, kv.Config{Endpoints: e.srv.Endpoints(), RequestTimeout: 3 * time.Second, DialTimeout: 2 * time.Second},
		embedded.TestLogger())
	if err != nil {
		e.t.Fatalf("open store: %v", err)
	}
	e.t.Cleanup(func() { s.Close() })
	return s
}

// allocator returns a new Allocator on its own connection, as a separate process would have.
func (e *testEnv) allocator() *Allocator {
	s := e.store()
	if e.real {
		return New(s, datastore.New(s, embedded.TestLogger()), embedded.TestLogger())
	}
	return newAllocator(s, e.res, embedded.TestLogger())
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// snapshot reads every block and handle and checks the records agree with each other: each
// address appears in one block under one handle, and each handle's counts match its blocks.
// It returns address -> handle.
func snapshot(t testing.TB, s *kv.Store) map[netip.Addr]string {
	t.Helper()
	ctx := ctxT(t)
	blocks, _, err := s.List(ctx, BlockPrefix)
	if err != nil {
		t.Fatalf("list blocks: %v", err)
	}
	handles, _, err := s.List(ctx, HandlePrefix)
	if err != nil {
		t.Fatalf("list handles: %v", err)
	}
	held := map[netip.Addr]string{}
	counts := map[string]map[string]int{}
	for _, e := range blocks {
		b, err := DecodeBlock(e.Value)
		if err != nil {
			t.Fatalf("block %s: %v", e.Key, err)
		}
		for _, al := range b.Allocated() {
			if prev, dup := held[al.IP]; dup {
				t.Errorf("%v held twice: %s and %s", al.IP, prev, al.Handle)
			}
			held[al.IP] = al.Handle
			if counts[al.Handle] == nil {
				counts[al.Handle] = map[string]int{}
			}
			counts[al.Handle][b.CIDR.String()]++
		}
	}
	recorded := map[string]map[string]int{}
	for _, e := range handles {
		h, err := DecodeHandle(e.Value)
		if err != nil {
			t.Fatalf("handle %s: %v", e.Key, err)
		}
		recorded[h.ID] = h.Blocks
	}
	for id, c := range counts {
		if fmt.Sprint(c) != fmt.Sprint(recorded[id]) {
			t.Errorf("handle %s: blocks hold %v, record says %v", id, c, recorded[id])
		}
	}
	for id, c := range recorded {
		if counts[id] == nil {
			t.Errorf("handle %s records %v but holds nothing", id, c)
		}
	}
	return held
}

// client is a typed datastore client on its own connection, for writing resources to etcd.
func (e *testEnv) client() *datastore.Client {
	return datastore.New(e.store(), embedded.TestLogger())
}

// addPool stores the pool where the allocators read it: in etcd through the typed client (which
// validates it) when the environment is real, else in the stand-in.
func (e *testEnv) addPool(name, cidr string, blockSize int, mutate ...func(*api.IPPoolSpec)) {
	e.t.Helper()
	if !e.real {
		e.res.addPool(name, cidr, blockSize, mutate...)
		return
	}
	p := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name}, Spec: api.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
	for _, m := range mutate {
		m(&p.Spec)
	}
	if _, err := e.client().Create(ctxT(e.t), p); err != nil {
		e.t.Fatalf("create pool %s: %v", name, err)
	}
}

func (e *testEnv) addNode(name string) {
	e.t.Helper()
	if !e.real {
		e.res.addNode(name, nil)
		return
	}
	n := &api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.GroupVersion}, Metadata: api.ObjectMeta{Name: name}}
	if _, err := e.client().Create(ctxT(e.t), n); err != nil {
		e.t.Fatalf("create node %s: %v", name, err)
	}
}

package datastore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
)

func mustKind(t testing.TB, name string) api.KindInfo {
	t.Helper()
	info, err := api.LookupKind(name)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestKeyRoundTrip(t *testing.T) {
	tests := []struct {
		kind, ns, name string
		key            string
	}{
		{"IPPool", "", "pool-a", "/terrace/v1/ippools/pool-a"},
		{"ippool", "ignored", "pool-a", "/terrace/v1/ippools/pool-a"},
		{"NetworkPolicy", "prod", "allow-dns", "/terrace/v1/networkpolicies/prod/allow-dns"},
		{"gnp", "", "deny.all", "/terrace/v1/globalnetworkpolicies/deny.all"},
		{"wep", "ns1", "host--1-k8s-pod-eth0", "/terrace/v1/workloadendpoints/ns1/host--1-k8s-pod-eth0"},
		{"node", "", "host-1", "/terrace/v1/nodes/host-1"},
		{"filter", "", "my-filter", "/terrace/v1/bgpfilters/my-filter"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			info := mustKind(t, tc.kind)
			if got := Key(info, tc.ns, tc.name); got != tc.key {
				t.Fatalf("Key = %s, want %s", got, tc.key)
			}
			gi, ns, name, err := ParseKey(tc.key)
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			wantNS := ""
			if info.Namespaced {
				wantNS = tc.ns
			}
			if diff := cmp.Diff([]string{info.Kind, wantNS, tc.name}, []string{gi.Kind, ns, name}); diff != "" {
				t.Fatalf("ParseKey (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseKeyRejects(t *testing.T) {
	for _, key := range []string{
		"", "/terrace/v1/", "/terrace/v2/ippools/a", "/terrace/v1/unknown/a", "/terrace/v1/ippools/",
		"/terrace/v1/ippools/a/b", "/terrace/v1/networkpolicies/a", "/terrace/v1/networkpolicies//a",
		"/terrace/v1/networkpolicies/ns/a/b", "/terrace/ipam/v1/blocks/10.0.0.0-26",
	} {
		if info, ns, name, err := ParseKey(key); err == nil {
			t.Errorf("ParseKey(%q) = %s %q %q, want error", key, info.Kind, ns, name)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	f.Add("/terrace/v1/ippools/a")
	f.Add("/terrace/v1/networkpolicies/ns/p")
	f.Add("/terrace/v1/nodes//")
	f.Fuzz(func(t *testing.T, key string) {
		info, ns, name, err := ParseKey(key)
		if err != nil {
			return
		}
		if name == "" || (info.Namespaced && ns == "") {
			t.Fatalf("ParseKey(%q) accepted an empty segment", key)
		}
		if again := Key(info, ns, name); again != key {
			t.Fatalf("Key(ParseKey(%q)) = %q", key, again)
		}
	})
}

func newClient(t *testing.T) *Client { return newClientB(t) }

func newClientB(t testing.TB) *Client {
	t.Helper()
	srv := embedded.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return New(s, embedded.TestLogger())
}

func pool(name, cidr string) *api.IPPool {
	return &api.IPPool{
		TypeMeta: api.TypeMeta{Kind: api.KindIPPool, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.IPPoolSpec{CIDR: cidr},
	}
}

func TestCreateGetUpdateDelete(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()

	in := pool("pool-a", "198.18.0.0/24")
	created, err := c.Create(ctx, in)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if in.Metadata.UID != "" || in.Spec.BlockSize != 0 {
		t.Errorf("Create modified the caller's resource: %+v", in)
	}
	cm := created.GetObjectMeta()
	if cm.UID == "" || cm.CreationTimestamp == "" || cm.ResourceVersion == "" {
		t.Fatalf("created metadata lacks uid/creationTimestamp/resourceVersion: %+v", cm)
	}
	if got := created.(*api.IPPool).Spec.BlockSize; got != 26 {
		t.Errorf("defaults not applied: blockSize %d, want 26", got)
	}
	if _, err := c.Create(ctx, in); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}

	got, err := c.Get(ctx, "ippools", "", "pool-a")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if diff := cmp.Diff(created, got); diff != "" {
		t.Fatalf("get differs from create's result (-create +get):\n%s", diff)
	}

	// Update at the version just read succeeds and keeps the object's identity.
	upd := got.(*api.IPPool)
	upd.Spec.NATOutgoing = true
	upd.Metadata.UID = "someone-elses"
	v2, err := c.Update(ctx, upd)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	m2 := v2.GetObjectMeta()
	if m2.UID != cm.UID || m2.CreationTimestamp != cm.CreationTimestamp {
		t.Errorf("update changed identity: %+v, was %+v", m2, cm)
	}
	if m2.ResourceVersion == cm.ResourceVersion {
		t.Errorf("update did not change resourceVersion %s", m2.ResourceVersion)
	}

	// The same stale object again must conflict and write nothing.
	upd.Spec.Disabled = true
	if _, err := c.Update(ctx, upd); !errors.Is(err, ErrConflict) {
		t.Fatalf("update with stale resourceVersion: got %v, want ErrConflict", err)
	}
	if now, _ := c.Get(ctx, "ippool", "", "pool-a"); now.(*api.IPPool).Spec.Disabled {
		t.Fatal("conflicting update was written")
	}

	// Without a resourceVersion the update is against what it reads.
	upd.Metadata.ResourceVersion = ""
	if _, err := c.Update(ctx, upd); err != nil {
		t.Fatalf("update without resourceVersion: %v", err)
	}
	if _, err := c.Update(ctx, pool("missing", "198.18.1.0/24")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of missing pool: got %v, want ErrNotFound", err)
	}

	if _, err := c.Delete(ctx, "ippool", "", "pool-a", cm.ResourceVersion); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete at stale version: got %v, want ErrConflict", err)
	}
	cur, _ := c.Get(ctx, "pool", "", "pool-a")
	del, err := c.Delete(ctx, "pool", "", "pool-a", cur.GetObjectMeta().ResourceVersion)
	if err != nil {
		t.Fatalf("delete at current version: %v", err)
	}
	if diff := cmp.Diff(cur, del); diff != "" {
		t.Errorf("delete returned something else than was stored (-stored +returned):\n%s", diff)
	}
	if _, err := c.Get(ctx, "ippool", "", "pool-a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: got %v, want ErrNotFound", err)
	}
	if _, err := c.Delete(ctx, "ippool", "", "pool-a", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of missing: got %v, want ErrNotFound", err)
	}
	var ve *api.ValidationError
	if _, err := c.Delete(ctx, "ippool", "", "pool-a", "not-a-number"); !errors.As(err, &ve) || ve.Fields[0].Path != "metadata.resourceVersion" {
		t.Fatalf("delete with a malformed resourceVersion: got %v, want a validation error on metadata.resourceVersion", err)
	}
	if _, err := c.Get(ctx, "nosuchkind", "", "x"); err == nil {
		t.Fatal("get of an unknown kind succeeded")
	}
}

func TestWritesValidate(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	bad := pool("Bad_Name", "198.18.0.0/24")
	bad.Spec.IPIPMode = "Always"
	_, err := c.Create(ctx, bad)
	var ve *api.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("create of invalid pool: got %v, want *api.ValidationError", err)
	}
	paths := map[string]bool{}
	for _, f := range ve.Fields {
		paths[f.Path] = true
	}
	if !paths["metadata.name"] || !paths["spec.ipipMode"] {
		t.Errorf("validation error fields %v lack metadata.name and spec.ipipMode", ve.Fields)
	}
	if all, err := c.List(ctx, "", ""); err != nil || len(all) != 0 {
		t.Fatalf("invalid create wrote something: %d resources, %v", len(all), err)
	}

	if _, err := c.Create(ctx, pool("a", "198.18.0.0/16")); err != nil {
		t.Fatal(err)
	}
	_, err = c.Create(ctx, pool("b", "198.18.4.0/24"))
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("overlapping pool: got %v, want a validation error about overlap", err)
	}
	_, _, err = c.Apply(ctx, pool("c", "198.18.4.0/24"))
	if !errors.As(err, &ve) {
		t.Fatalf("apply of overlapping pool: got %v, want *api.ValidationError", err)
	}
	// A pool's CIDR is fixed once blocks may have been carved from it.
	_, _, err = c.Apply(ctx, pool("a", "198.18.0.0/17"))
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "spec.cidr") {
		t.Fatalf("apply changing pool a's cidr: got %v, want a validation error on spec.cidr", err)
	}
	if got, err := c.Get(ctx, "ippool", "", "a"); err != nil || got.(*api.IPPool).Spec.CIDR != "198.18.0.0/16" {
		t.Fatalf("refused update changed pool a: %v, %v", got, err)
	}
	if _, err := c.Create(ctx, pool("b", "198.19.0.0/24")); err != nil {
		t.Fatalf("disjoint pool: %v", err)
	}
}

// TestBGPFilterStored checks a BGPFilter is written, read back and listed before the BGPPeer that
// names it, which is the order in which a dump of the store applies cleanly.
func TestBGPFilterStored(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	peer := &api.BGPPeer{
		Metadata: api.ObjectMeta{Name: "tor-1"},
		Spec:     api.BGPPeerSpec{PeerIP: "192.0.2.254", ASNumber: 65001, Filters: []string{"no-transit"}},
	}
	filter := &api.BGPFilter{
		Metadata: api.ObjectMeta{Name: "no-transit"},
		Spec: api.BGPFilterSpec{ExportV4: []api.BGPFilterRule{
			{Action: api.BGPFilterReject, Source: api.BGPFilterSourceRemotePeers},
			{Action: api.BGPFilterAccept, MatchOperator: api.BGPFilterIn, CIDR: "198.18.0.0/15"},
		}},
	}
	if _, err := c.Create(ctx, peer); err != nil {
		t.Fatalf("create peer: %v", err)
	}
	created, err := c.Create(ctx, filter)
	if err != nil {
		t.Fatalf("create filter: %v", err)
	}
	got, err := c.Get(ctx, "bgpfilters", "", "no-transit")
	if err != nil {
		t.Fatalf("get filter: %v", err)
	}
	if diff := cmp.Diff(created, got); diff != "" {
		t.Errorf("get (-created +got):\n%s", diff)
	}
	all, err := c.List(ctx, "", "")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var kinds []string
	for _, r := range all {
		kinds = append(kinds, r.GetTypeMeta().Kind)
	}
	if diff := cmp.Diff([]string{api.KindBGPFilter, api.KindBGPPeer}, kinds); diff != "" {
		t.Errorf("list order (-want +got):\n%s", diff)
	}
	bad := &api.BGPFilter{Metadata: api.ObjectMeta{Name: "bad"},
		Spec: api.BGPFilterSpec{ImportV4: []api.BGPFilterRule{{Action: api.BGPFilterAccept, Interface: "eth0"}}}}
	var ve *api.ValidationError
	if _, err := c.Create(ctx, bad); !errors.As(err, &ve) || !strings.Contains(err.Error(), "spec.importV4[0].interface") {
		t.Errorf("create of a filter matching by interface: got %v, want a validation error on spec.importV4[0].interface", err)
	}
}

// TestConcurrentOverlappingPools races writers of pools that overlap each other: the overlap
// check and the write are one transaction, so exactly one may win.
func TestConcurrentOverlappingPools(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Create(ctx, pool(fmt.Sprintf("p%d", i), fmt.Sprintf("198.18.0.0/%d", 16+i)))
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	pools, err := c.List(ctx, "ippool", "")
	if err != nil {
		t.Fatal(err)
	}
	if ok != 1 || len(pools) != 1 {
		t.Fatalf("%d creates succeeded and %d pools stored, want 1 and 1; errors: %v", ok, len(pools), errs)
	}
}

func TestApplyOutcomes(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	p := pool("pool-a", "198.18.0.0/24")
	steps := []struct {
		name   string
		mutate func(*api.IPPool)
		want   ApplyOutcome
	}{
		{"first apply creates", func(*api.IPPool) {}, Created},
		{"same again is unchanged", func(*api.IPPool) {}, Unchanged},
		{"explicit default is unchanged", func(p *api.IPPool) { p.Spec.BlockSize = 26 }, Unchanged},
		{"a change updates", func(p *api.IPPool) { p.Spec.NATOutgoing = true }, Updated},
		{"label change updates", func(p *api.IPPool) { p.Metadata.Labels = map[string]string{"zone": "a"} }, Updated},
		{"and then is unchanged", func(*api.IPPool) {}, Unchanged},
	}
	var lastRV string
	for _, s := range steps {
		s.mutate(p)
		got, outcome, err := c.Apply(ctx, p)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if outcome != s.want {
			t.Errorf("%s: outcome %v, want %v", s.name, outcome, s.want)
		}
		rv := got.GetObjectMeta().ResourceVersion
		if (outcome == Unchanged) != (rv == lastRV) {
			t.Errorf("%s: resourceVersion %s after %s", s.name, rv, lastRV)
		}
		lastRV = rv
	}
	stale := pool("pool-a", "198.18.0.0/24")
	stale.Metadata.ResourceVersion = "1"
	if _, _, err := c.Apply(ctx, stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("apply with stale resourceVersion: got %v, want ErrConflict", err)
	}
	// A version from elsewhere (a backup restored into a fresh datastore) on an object that is
	// not stored: created, as calicoctl does.
	restored := pool("pool-b", "198.19.0.0/24")
	restored.Metadata.ResourceVersion = "999999"
	got, outcome, err := c.Apply(ctx, restored)
	if err != nil || outcome != Created {
		t.Fatalf("apply of a restored object: %v %v, want Created", outcome, err)
	}
	if got.GetObjectMeta().ResourceVersion == "999999" {
		t.Error("the restored object kept the foreign resourceVersion")
	}
}

func netset(ns, name string) *api.NetworkSet {
	return &api.NetworkSet{
		TypeMeta: api.TypeMeta{Kind: api.KindNetworkSet, APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Namespace: ns, Name: name},
		Spec:     api.NetworkSetSpec{Nets: []string{"198.18.0.0/24"}},
	}
}

func TestNamespacesAndListing(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	for _, r := range []api.Resource{
		netset("", "in-default"), netset("prod", "b"), netset("prod", "a"), netset("dev", "a"),
		pool("p1", "198.18.0.0/24"),
	} {
		if _, err := c.Create(ctx, r); err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	names := func(rs []api.Resource) []string {
		var out []string
		for _, r := range rs {
			m := r.GetObjectMeta()
			out = append(out, fmt.Sprintf("%s:%s/%s", r.GetTypeMeta().Kind, m.Namespace, m.Name))
		}
		return out
	}
	tests := []struct {
		kind, ns string
		want     []string
	}{
		{"netset", "", []string{"NetworkSet:default/in-default", "NetworkSet:dev/a", "NetworkSet:prod/a", "NetworkSet:prod/b"}},
		{"networksets", "prod", []string{"NetworkSet:prod/a", "NetworkSet:prod/b"}},
		{"NetworkSet", "nowhere", nil},
		{"ippool", "prod", []string{"IPPool:/p1"}},
		{"", "", []string{"IPPool:/p1", "NetworkSet:default/in-default", "NetworkSet:dev/a", "NetworkSet:prod/a", "NetworkSet:prod/b"}},
		{"", "dev", []string{"IPPool:/p1", "NetworkSet:dev/a"}},
	}
	for _, tc := range tests {
		t.Run(tc.kind+"/"+tc.ns, func(t *testing.T) {
			rs, err := c.List(ctx, tc.kind, tc.ns)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, names(rs)); diff != "" {
				t.Fatalf("list (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := c.Get(ctx, "netset", "", "in-default"); err != nil {
		t.Errorf("get in the default namespace without naming it: %v", err)
	}
	if _, err := c.Get(ctx, "netset", "prod", "in-default"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get in the wrong namespace: got %v, want ErrNotFound", err)
	}

	// A corrupt stored value is reported, not silently dropped, and the rest still listed.
	if _, err := c.Store().Put(ctx, "/terrace/v1/networksets/prod/corrupt", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	rs, err := c.List(ctx, "netset", "prod")
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("list with a corrupt value: err %v, want one naming the key", err)
	}
	if len(rs) != 2 {
		t.Errorf("list with a corrupt value returned %d resources, want 2", len(rs))
	}
	// Get names it as undecodable; deleting it is a success (the key was what the caller meant).
	if _, err := c.Get(ctx, "netset", "prod", "corrupt"); !errors.Is(err, ErrUndecodable) {
		t.Errorf("get of a corrupt value: %v, want ErrUndecodable", err)
	}
	if r, err := c.Delete(ctx, "netset", "prod", "corrupt", ""); err != nil || r != nil {
		t.Errorf("delete of a corrupt value = %v, %v; want nil, nil", r, err)
	}
	if _, err := c.Get(ctx, "netset", "prod", "corrupt"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v, want ErrNotFound", err)
	}
}

type typedRecorder struct {
	mu     sync.Mutex
	state  map[string]api.Resource
	status kv.Status
}

func (r *typedRecorder) OnStatus(s kv.Status) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

func (r *typedRecorder) OnUpdates(ups []ResourceUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range ups {
		k := u.Kind + ":" + u.Namespace + "/" + u.Name
		if u.Type == kv.UpdateDelete {
			delete(r.state, k)
			continue
		}
		r.state[k] = u.Resource
	}
}

func TestTypedSyncer(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	if _, err := c.Create(ctx, pool("p1", "198.18.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, netset("prod", "ns1")); err != nil {
		t.Fatal(err)
	}
	rec := &typedRecorder{state: map[string]api.Resource{}}
	y := NewSyncer(c, []string{"ippools", "netset"}, rec, embedded.TestLogger())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- y.Run(rctx) }()
	defer func() { cancel(); <-done }()

	check := func(what string) {
		t.Helper()
		want := map[string]api.Resource{}
		for _, kind := range []string{"ippool", "netset"} {
			rs, err := c.List(ctx, kind, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				m := r.GetObjectMeta()
				want[r.GetTypeMeta().Kind+":"+m.Namespace+"/"+m.Name] = r
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			rec.mu.Lock()
			diff := cmp.Diff(want, rec.state)
			st := rec.status
			rec.mu.Unlock()
			if diff == "" && st == kv.StatusInSync {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: syncer state differs (-store +syncer):\n%s", what, diff)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	check("initial list")
	if _, err := c.Create(ctx, pool("p2", "198.19.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "netset", "prod", "ns1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, &api.GlobalNetworkSet{
		TypeMeta: api.TypeMeta{Kind: api.KindGlobalNetworkSet},
		Metadata: api.ObjectMeta{Name: "not-watched"},
	}); err != nil {
		t.Fatal(err)
	}
	check("after watch updates")
	rec.mu.Lock()
	_, leaked := rec.state["GlobalNetworkSet:/not-watched"]
	rec.mu.Unlock()
	if leaked {
		t.Error("syncer delivered a kind it was not asked for")
	}

	bad := NewSyncer(c, []string{"nosuchkind"}, rec, nil)
	if err := bad.Run(ctx); err == nil {
		t.Error("syncer for an unknown kind ran")
	}
}

package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
	"github.com/terracenet/terrace/node/nodeapi"
)

// apiEnv is the datastore API of node "host-a" on a real embedded etcd with one small pool.
type apiEnv struct {
	t     *testing.T
	api   *DatastoreAPI
	srv   *httptest.Server
	store *kv.Store
	ds    *datastore.Client
	etcd  *embedded.Server
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	srv := embedded.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := embedded.TestLogger()
	st, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, log)
	if err != nil {
		t.Fatalf("open etcd: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ds := datastore.New(st, log)
	for _, p := range []struct{ name, cidr string }{{"pool4", "198.18.0.0/28"}, {"pool6", "2001:db8:1000::/120"}} {
		pool := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
			Metadata: api.ObjectMeta{Name: p.name}, Spec: api.IPPoolSpec{CIDR: p.cidr, BlockSize: 28}}
		if strings.Contains(p.cidr, ":") {
			pool.Spec.BlockSize = 122
		}
		if _, err := ds.Create(ctx, pool); err != nil {
			t.Fatalf("create pool: %v", err)
		}
	}
	a := NewDatastoreAPI("host-a", log)
	board := NewStatusBoard(Status{NodeName: "host-a"})
	hs := httptest.NewServer(a.Handler(board.Handler()))
	t.Cleanup(hs.Close)
	return &apiEnv{t: t, api: a, srv: hs, store: st, ds: ds, etcd: srv}
}

// call sends body (a string sent as is) and returns the status and the response body.
func (e *apiEnv) call(method, path, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func errCode(t *testing.T, data []byte) string {
	t.Helper()
	var ae APIError
	if err := json.Unmarshal(data, &ae); err != nil {
		t.Fatalf("error body %q: %v", data, err)
	}
	if ae.Message == "" {
		t.Errorf("error body %s has no message", data)
	}
	return ae.Code
}

func wepJSON(t *testing.T, node, name, rv string) string {
	t.Helper()
	w := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name, Namespace: "default", ResourceVersion: rv},
		Spec: api.WorkloadEndpointSpec{Orchestrator: "cni", Node: node, ContainerID: "c1", Pod: "p1", Endpoint: "eth0",
			InterfaceName: "trc0123456789a", IPNetworks: []string{"198.18.0.1/32"}}}
	data, err := api.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestDatastoreAPINotReady(t *testing.T) {
	a := NewDatastoreAPI("host-a", embedded.TestLogger())
	hs := httptest.NewServer(a.Handler(NewStatusBoard(Status{NodeName: "host-a"}).Handler()))
	defer hs.Close()
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/datastore", ""},
		{"POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1}`},
		{"GET", "/v1/endpoints/default/x", ""},
	} {
		req, _ := http.NewRequest(tc.method, hs.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || errCode(t, data) != CodeUnavailable {
			t.Errorf("%s %s before the datastore = %d %s, want 503 unavailable", tc.method, tc.path, resp.StatusCode, data)
		}
	}
	// The status board still answers behind the API.
	resp, err := http.Get(hs.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/status = %d", resp.StatusCode)
	}
}

func TestDatastoreAPIBadInput(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"not JSON", "POST", "/v1/ipam/assign", `{`, 400, CodeInvalid},
		{"unknown field", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1,"bogus":1}`, 400, CodeInvalid},
		{"trailing data", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1} {}`, 400, CodeInvalid},
		{"no handle", "POST", "/v1/ipam/assign", `{"node":"host-a","num4":1}`, 400, CodeInvalid},
		{"nothing to assign", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h"}`, 400, CodeInvalid},
		{"negative", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":-1,"num6":1}`, 400, CodeInvalid},
		{"too many", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1000}`, 400, CodeInvalid},
		{"empty pool name", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1,"ipv4Pools":[""]}`, 400, CodeInvalid},
		{"other node", "POST", "/v1/ipam/assign", `{"node":"host-b","handle":"h","num4":1}`, 403, CodeWrongNode},
		{"unknown pool", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1,"ipv4Pools":["nope"]}`, 422, CodeNoPools},
		{"ips and numbers", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1,"ips":["198.18.0.9"]}`, 400, CodeInvalid},
		{"ips repeated", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","ips":["198.18.0.9","198.18.0.9"]}`, 400, CodeInvalid},
		{"ips not addresses", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","ips":["198.18.0"]}`, 400, CodeInvalid},
		{"ips too many", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","ips":[` + manyIPs(maxAssign+1) + `]}`, 400, CodeInvalid},
		{"ips in no pool", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","ips":["203.0.113.9"]}`, 422, CodeNotInPool},
		{"release both", "POST", "/v1/ipam/release", `{"handle":"h","ips":["198.18.0.1"]}`, 400, CodeInvalid},
		{"release neither", "POST", "/v1/ipam/release", `{}`, 400, CodeInvalid},
		{"release bad address", "POST", "/v1/ipam/release", `{"ips":["198.18.0.300"]}`, 400, CodeInvalid},
		{"release too many", "POST", "/v1/ipam/release", `{"ips":[` + manyIPs(maxReleaseIPs+1) + `]}`, 400, CodeInvalid},
		{"endpoint not JSON", "POST", "/v1/endpoints", `nope`, 400, CodeInvalid},
		{"endpoint of another kind", "POST", "/v1/endpoints", `{"kind":"IPPool","apiVersion":"terrace.dev/v1","metadata":{"name":"x"},"spec":{"cidr":"198.19.0.0/24"}}`, 400, CodeInvalid},
		{"endpoint of another node", "POST", "/v1/endpoints", wepJSON(t, "host-b", "x", ""), 403, CodeWrongNode},
		{"endpoint invalid", "POST", "/v1/endpoints", strings.Replace(wepJSON(t, "host-a", "x", ""), "198.18.0.1/32", "not-a-cidr", 1), 422, CodeInvalid},
		{"missing endpoint", "GET", "/v1/endpoints/default/missing", "", 404, CodeNotFound},
		{"delete missing endpoint", "DELETE", "/v1/endpoints/default/missing", "", 404, CodeNotFound},
		{"delete bad revision", "DELETE", "/v1/endpoints/default/missing?resourceVersion=abc", "", 404, CodeNotFound},
		{"missing status", "GET", "/v1/endpoints/default/missing/status", "", 404, CodeNotFound},
		{"ips repeated, one mapped", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","ips":["198.18.0.9","::ffff:198.18.0.9"]}`, 400, CodeInvalid},
		{"ips with a zone", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","ips":["fe80::1%eth0"]}`, 400, CodeInvalid},
		{"handle with a slash", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"net/../x","num4":1}`, 400, CodeInvalid},
		{"handle too long", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"` + strings.Repeat("h", 513) + `","num4":1}`, 400, CodeInvalid},
		{"attribute too long", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1,"attrs":{"pod":"` + strings.Repeat("x", 1025) + `"}}`, 400, CodeInvalid},
		{"too many attributes", "POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1,"attrs":{` + manyAttrs(17) + `}}`, 400, CodeInvalid},
		{"wrong method", "GET", "/v1/ipam/assign", "", 405, CodeInvalid},
		{"wrong method on endpoints", "PATCH", "/v1/endpoints", "", 405, CodeInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, data := e.call(tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("status = %d (%s), want %d", status, data, tc.status)
			}
			if got := errCode(t, data); got != tc.code {
				t.Errorf("code = %q, want %q (%s)", got, tc.code, data)
			}
		})
	}
	// Nothing of the refused requests reached etcd.
	hs, _, err := e.store.List(context.Background(), "/terrace/ipam/v1/handles/")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 0 {
		t.Errorf("refused requests left handles: %v", hs)
	}
}

func TestDatastoreAPIAssignRelease(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	status, data := e.call("GET", "/v1/datastore", "")
	if status != 200 {
		t.Fatalf("GET /v1/datastore = %d %s", status, data)
	}
	var info DatastoreInfo
	if err := json.Unmarshal(data, &info); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DatastoreInfo{NodeName: "host-a", Ready: true}, info); diff != "" {
		t.Errorf("info (-want +got):\n%s", diff)
	}

	// Concurrent assignments all succeed with distinct addresses: the one allocator batches them.
	const n = 12
	got := make([]AssignResponse, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body, _ := json.Marshal(AssignRequest{Node: "host-a", Handle: "net.c" + string(rune('a'+i)), Num4: 1, Attrs: map[string]string{"pod": "p"}})
			status, data := e.call("POST", "/v1/ipam/assign", string(body))
			if status != 200 {
				t.Errorf("assign %d = %d %s", i, status, data)
				return
			}
			if err := json.Unmarshal(data, &got[i]); err != nil {
				t.Errorf("decode %s: %v", data, err)
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, r := range got {
		if len(r.IPv4) != 1 || len(r.IPv6) != 0 {
			t.Fatalf("assign %d gave %+v", i, r)
		}
		if seen[r.IPv4[0]] || !netip.MustParsePrefix("198.18.0.0/28").Contains(r.IPv4[0]) {
			t.Errorf("assign %d gave %s (duplicate or outside the pool)", i, r.IPv4[0])
		}
		seen[r.IPv4[0]] = true
	}
	// The /28 has 16 addresses: four more, then it is exhausted.
	for i := range 5 {
		body, _ := json.Marshal(AssignRequest{Node: "host-a", Handle: "net.x" + string(rune('a'+i)), Num4: 1})
		status, data := e.call("POST", "/v1/ipam/assign", string(body))
		if i < 4 && status != 200 {
			t.Fatalf("assign x%d = %d %s", i, status, data)
		}
		if i == 4 && (status != 409 || errCode(t, data) != CodePoolsExhausted) {
			t.Fatalf("assign on a full pool = %d %s, want 409 pools-exhausted", status, data)
		}
	}

	// Handle read, release by address, release by handle (twice: idempotent).
	status, data = e.call("GET", "/v1/ipam/handles/net.ca", "")
	var h HandleResponse
	if status != 200 || json.Unmarshal(data, &h) != nil {
		t.Fatalf("GET handle = %d %s", status, data)
	}
	if diff := cmp.Diff(got[0].IPv4, h.IPs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("handle addresses (-want +got):\n%s", diff)
	}
	body, _ := json.Marshal(ReleaseRequest{IPs: got[1].IPv4})
	if status, data := e.call("POST", "/v1/ipam/release", string(body)); status != 200 {
		t.Fatalf("release by address = %d %s", status, data)
	}
	for range 2 {
		if status, data := e.call("POST", "/v1/ipam/release", `{"handle":"net.ca"}`); status != 200 {
			t.Fatalf("release by handle = %d %s", status, data)
		}
	}
	status, data = e.call("GET", "/v1/ipam/handles/net.ca", "")
	if status != 200 || !bytes.Contains(data, []byte(`"ips":[]`)) {
		t.Errorf("released handle = %d %s, want no addresses", status, data)
	}
	// A freed address can be asked for by name (with an IPv6 one beside it), once.
	want := AssignResponse{IPv4: got[1].IPv4, IPv6: []netip.Addr{netip.MustParseAddr("2001:db8:1000::9")}}
	body, _ = json.Marshal(AssignRequest{Node: "host-a", Handle: "net.req", IPs: slices.Concat(want.IPv4, want.IPv6)})
	status, data = e.call("POST", "/v1/ipam/assign", string(body))
	var req AssignResponse
	if status != 200 || json.Unmarshal(data, &req) != nil {
		t.Fatalf("assign requested addresses = %d %s", status, data)
	}
	if diff := cmp.Diff(want, req, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("requested addresses (-want +got):\n%s", diff)
	}
	body, _ = json.Marshal(AssignRequest{Node: "host-a", Handle: "net.req2", IPs: want.IPv6})
	if status, data := e.call("POST", "/v1/ipam/assign", string(body)); status != 409 || errCode(t, data) != CodeAddressInUse ||
		!bytes.Contains(data, []byte("net.req")) {
		t.Errorf("assign a held address = %d %s, want 409 %s naming the holder", status, data, CodeAddressInUse)
	}
	// The other freed address can be assigned again; then the pool is full.
	for i, hd := range []string{"net.y1", "net.y2"} {
		body, _ := json.Marshal(AssignRequest{Node: "host-a", Handle: hd, Num4: 1})
		status, data := e.call("POST", "/v1/ipam/assign", string(body))
		if i == 0 && status != 200 {
			t.Errorf("assign after release = %d %s", status, data)
		}
		if i == 1 && status != 409 {
			t.Errorf("assign on a full pool = %d %s, want 409", status, data)
		}
	}
}

// TestDatastoreAPIReadinessFollowsEtcd: the readiness probe asks etcd each time, so with etcd
// gone it answers 503 within seconds instead of "ready" followed by an assignment that waits 30 s.
func TestDatastoreAPIReadinessFollowsEtcd(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	if status, data := e.call("GET", "/v1/datastore", ""); status != 200 {
		t.Fatalf("GET /v1/datastore with etcd up = %d %s", status, data)
	}
	e.etcd.Stop()
	start := time.Now()
	status, data := e.call("GET", "/v1/datastore", "")
	if status != 503 || errCode(t, data) != CodeUnavailable || !bytes.Contains(data, []byte("does not answer")) {
		t.Errorf("GET /v1/datastore with etcd stopped = %d %s, want 503 %s", status, data, CodeUnavailable)
	}
	if took := time.Since(start); took > 2*infoPingTimeout {
		t.Errorf("the probe took %s with etcd stopped", took)
	}
}

// TestDatastoreAPIReleaseOnlyOwnNode: the agent of host-a frees no address another node's pod
// holds, whether named by handle or by address (403 wrong-node, nothing released), and still
// frees its own, including one borrowed from host-b's block.
func TestDatastoreAPIReleaseOnlyOwnNode(t *testing.T) {
	e := newAPIEnv(t)
	ctx := context.Background()
	alloc := ipam.New(e.store, e.ds, embedded.TestLogger())
	theirs, err := alloc.AutoAssign(ctx, ipam.AutoAssignArgs{Node: "host-b", Handle: "net.b1", Num4: 1})
	if err != nil {
		t.Fatal(err)
	}
	// host-a's pod with an address from host-b's block (borrowed).
	borrowed := theirs.IPv4[0].Next()
	if err := alloc.AssignIP(ctx, ipam.AssignIPArgs{IP: borrowed, Handle: "net.a1", Node: "host-a"}); err != nil {
		t.Fatal(err)
	}
	e.api.SetDatastore(e.store, e.ds)
	for _, body := range []string{`{"handle":"net.b1"}`, fmt.Sprintf(`{"ips":[%q]}`, theirs.IPv4[0]), fmt.Sprintf(`{"ips":[%q,%q]}`, theirs.IPv4[0], borrowed)} {
		status, data := e.call("POST", "/v1/ipam/release", body)
		if status != 403 || errCode(t, data) != CodeWrongNode || !bytes.Contains(data, []byte("another node")) {
			t.Errorf("release %s = %d %s, want 403 %s", body, status, data, CodeWrongNode)
		}
	}
	if got, err := alloc.IPsByHandle(ctx, "net.b1"); err != nil || len(got) != 1 {
		t.Errorf("host-b's address after host-a's refused releases: %v %v", got, err)
	}
	// The mixed request above released host-a's own address and refused only host-b's.
	if _, err := alloc.IPsByHandle(ctx, "net.a1"); !errors.Is(err, ipam.ErrHandleNotFound) {
		t.Errorf("host-a's borrowed address was not released with the mixed request: %v", err)
	}
	if err := alloc.AssignIP(ctx, ipam.AssignIPArgs{IP: borrowed, Handle: "net.a2", Node: "host-a"}); err != nil {
		t.Fatal(err)
	}
	if status, data := e.call("POST", "/v1/ipam/release", `{"handle":"net.a2"}`); status != 200 || !bytes.Contains(data, []byte(borrowed.String())) {
		t.Errorf("release of host-a's own handle = %d %s", status, data)
	}
}

func TestDatastoreAPIEndpoints(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	ctx := context.Background()
	status, data := e.call("POST", "/v1/endpoints", wepJSON(t, "host-a", "w1", ""))
	if status != http.StatusCreated {
		t.Fatalf("create = %d %s", status, data)
	}
	created, err := api.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	rv := created.GetObjectMeta().ResourceVersion
	stored, err := e.ds.Get(ctx, "WorkloadEndpoint", "default", "w1")
	if err != nil {
		t.Fatalf("endpoint not in etcd: %v", err)
	}
	if stored.GetObjectMeta().ResourceVersion != rv || rv == "" {
		t.Errorf("returned resourceVersion %q, stored %q", rv, stored.GetObjectMeta().ResourceVersion)
	}
	if status, data := e.call("POST", "/v1/endpoints", wepJSON(t, "host-a", "w1", "")); status != 409 || errCode(t, data) != CodeExists {
		t.Errorf("create twice = %d %s, want 409 exists", status, data)
	}
	status, data = e.call("GET", "/v1/endpoints/default/w1", "")
	if status != 200 {
		t.Fatalf("get = %d %s", status, data)
	}
	if got, _ := api.Unmarshal(data); got == nil || got.GetObjectMeta().ResourceVersion != rv {
		t.Errorf("get returned %s", data)
	}
	if status, data := e.call("PUT", "/v1/endpoints", wepJSON(t, "host-a", "w1", "1")); status != 409 || errCode(t, data) != CodeConflict {
		t.Errorf("update at a stale revision = %d %s, want 409 conflict", status, data)
	}
	status, data = e.call("PUT", "/v1/endpoints", wepJSON(t, "host-a", "w1", rv))
	if status != 200 {
		t.Fatalf("update = %d %s", status, data)
	}
	updated, _ := api.Unmarshal(data)

	// The status felix writes is served for this node's endpoints only.
	key := datastore.EndpointStatusKey("host-a", "default", "w1")
	if _, err := e.store.Put(ctx, key, []byte(`{"programmed":true,"revision":7}`)); err != nil {
		t.Fatal(err)
	}
	if status, data := e.call("GET", "/v1/endpoints/default/w1/status", ""); status != 200 || string(data) != `{"programmed":true,"revision":7}` {
		t.Errorf("status = %d %s", status, data)
	}

	// An endpoint of another node is neither served nor deleted.
	other := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: "w2", Namespace: "default"},
		Spec:     api.WorkloadEndpointSpec{Node: "host-b", Orchestrator: "cni", Pod: "p", Endpoint: "eth0"}}
	if _, err := e.ds.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if status, data := e.call(m, "/v1/endpoints/default/w2", ""); status != 403 || errCode(t, data) != CodeWrongNode {
			t.Errorf("%s of another node's endpoint = %d %s, want 403", m, status, data)
		}
	}
	// Nor taken over by an update naming this node, with or without a revision.
	for _, rv := range []string{"", "0"} {
		if status, data := e.call("PUT", "/v1/endpoints", wepJSON(t, "host-a", "w2", rv)); status != 403 || errCode(t, data) != CodeWrongNode {
			t.Errorf("update of another node's endpoint to this one (rv %q) = %d %s, want 403", rv, status, data)
		}
	}
	if r, err := e.ds.Get(ctx, "WorkloadEndpoint", "default", "w2"); err != nil || r.(*api.WorkloadEndpoint).Spec.Node != "host-b" {
		t.Errorf("another node's endpoint is gone or moved: %v %+v", err, r)
	}

	if status, data := e.call("DELETE", "/v1/endpoints/default/w1?resourceVersion=abc", ""); status != 400 || errCode(t, data) != CodeInvalid {
		t.Errorf("delete at a malformed revision = %d %s, want 400", status, data)
	}
	if status, data := e.call("DELETE", "/v1/endpoints/default/w1?resourceVersion="+rv, ""); status != 409 || errCode(t, data) != CodeConflict {
		t.Errorf("delete at a stale revision = %d %s, want 409", status, data)
	}
	if status, data := e.call("DELETE", "/v1/endpoints/default/w1?resourceVersion="+updated.GetObjectMeta().ResourceVersion, ""); status != 204 {
		t.Fatalf("delete = %d %s", status, data)
	}
	if _, err := e.ds.Get(ctx, "WorkloadEndpoint", "default", "w1"); err == nil {
		t.Error("endpoint still in etcd after delete")
	}
}

// FuzzAssignRequest feeds arbitrary bodies to the assign request parser and checks: no panic, and
// whatever is accepted is a request the allocator may see.
func FuzzAssignRequest(f *testing.F) {
	for _, s := range []string{`{"node":"host-a","handle":"h","num4":1}`, `{"node":"host-a","handle":"h","num6":2,"ipv6Pools":["p"]}`,
		`{`, `{"node":"host-a","handle":"h","num4":1}{}`, `{"num4":-5}`, `null`, `[]`} {
		f.Add(s)
	}
	a := NewDatastoreAPI("host-a", embedded.TestLogger())
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/v1/ipam/assign", strings.NewReader(body))
		var req AssignRequest
		err := decode(r, httptest.NewRecorder(), &req)
		if err == nil {
			err = a.CheckAssign(req)
		}
		if err != nil {
			if status, code := classify(err); status/100 != 4 || code == "" {
				t.Fatalf("rejected %q with %d %q, want a 4xx code", body, status, code)
			}
			return
		}
		if req.Node != "host-a" || req.Handle == "" || req.Num4 < 0 || req.Num6 < 0 || req.Num4+req.Num6 == 0 ||
			req.Num4 > maxAssign || req.Num6 > maxAssign {
			t.Fatalf("accepted %q as %+v", body, req)
		}
	})
}

// TestRunServesDatastoreAPI runs the daemon: its socket serves the datastore API, ready once the
// node is registered, and assignments through it land in etcd.
func TestRunServesDatastoreAPI(t *testing.T) {
	srv := embedded.StartForTest(t)
	sock := filepath.Join(t.TempDir(), "node.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{NodeName: "host-a", IPv4: "192.0.2.1/24", Etcd: kv.Config{Endpoints: srv.Endpoints()},
			Socket: sock, Lister: fakeLister{}}, embedded.TestLogger())
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	var info DatastoreInfo
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://terrace-node/v1/datastore")
		if err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if err := json.Unmarshal(data, &info); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the datastore API did not become ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info.NodeName != "host-a" || !info.Ready {
		t.Fatalf("info = %+v", info)
	}
	st, err := kv.Open(context.Background(), kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ds := datastore.New(st, embedded.TestLogger())
	pool := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: "p"}, Spec: api.IPPoolSpec{CIDR: "198.18.0.0/24"}}
	if _, err := ds.Create(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post("http://terrace-node/v1/ipam/assign", "application/json", strings.NewReader(`{"node":"host-a","handle":"net.c1","num4":1}`))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("assign = %d %s", resp.StatusCode, data)
	}
	hs, _, err := st.List(context.Background(), "/terrace/ipam/v1/handles/net.c1")
	if err != nil || len(hs) != 1 {
		t.Errorf("handle in etcd: %v %v", hs, err)
	}
}

// TestCNICommandRoute: POST /v1/cni hands the decoded request to the runner and answers what it
// gives; without a runner, or when the runner refuses, the status tells the plugin to do the
// command itself (404, 403) or that the request was wrong (400).
func TestCNICommandRoute(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	body := `{"command":"ADD","containerID":"c1","netns":"/run/netns/p","ifName":"eth0","stdinData":"e30="}`
	if status, data := e.call("POST", "/v1/cni", body); status != http.StatusNotFound || errCode(t, data) != CodeNotFound {
		t.Errorf("without a runner: %d %s, want 404 not-found", status, data)
	}
	var got []nodeapi.CNIRequest
	e.api.SetCommandRunner(func(_ context.Context, req nodeapi.CNIRequest) (nodeapi.CNIResponse, error) {
		got = append(got, req)
		switch req.ContainerID {
		case "other-node":
			return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: CodeWrongNode, Message: "serves host-a"}
		case "malformed":
			return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: CodeInvalid, Message: "no such command"}
		case "failed":
			return nodeapi.CNIResponse{Error: &nodeapi.CNIError{Code: 11, Msg: "try again"}}, nil
		}
		return nodeapi.CNIResponse{Result: []byte(`{"cniVersion":"1.1.0"}`)}, nil
	})
	tests := []struct {
		name, body string
		wantStatus int
		wantCode   string // API error code, when not 200
		want       nodeapi.CNIResponse
	}{
		{"result", body, 200, "", nodeapi.CNIResponse{Result: []byte(`{"cniVersion":"1.1.0"}`)}},
		{"the command's failure", strings.Replace(body, `"c1"`, `"failed"`, 1), 200, "", nodeapi.CNIResponse{Error: &nodeapi.CNIError{Code: 11, Msg: "try again"}}},
		{"another node's", strings.Replace(body, `"c1"`, `"other-node"`, 1), 403, CodeWrongNode, nodeapi.CNIResponse{}},
		{"refused as malformed", strings.Replace(body, `"c1"`, `"malformed"`, 1), 400, CodeInvalid, nodeapi.CNIResponse{}},
		{"unknown field", strings.Replace(body, `"ifName"`, `"ifname2"`, 1), 400, CodeInvalid, nodeapi.CNIResponse{}},
		{"not JSON", `{"command":`, 400, CodeInvalid, nodeapi.CNIResponse{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, data := e.call("POST", "/v1/cni", tc.body)
			if status != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, data, tc.wantStatus)
			}
			if tc.wantCode != "" {
				if c := errCode(t, data); c != tc.wantCode {
					t.Fatalf("code %q, want %q", c, tc.wantCode)
				}
				return
			}
			var resp nodeapi.CNIResponse
			if err := json.Unmarshal(data, &resp); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, resp); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if len(got) == 0 || got[0].Netns != "/run/netns/p" || string(got[0].StdinData) != "{}" {
		t.Errorf("the runner got %+v, want the request as sent", got)
	}
}

// TestCNICommandsDrain: stopping refuses new commands with "stopping" (the plugin then does them
// itself) and waits for the ones running, which still get their answer.
func TestCNICommandsDrain(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	started, release, releaseDel := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var ran atomic.Int32
	e.api.SetCommandRunner(func(_ context.Context, req nodeapi.CNIRequest) (nodeapi.CNIResponse, error) {
		if ran.Add(1) == 1 {
			close(started)
		}
		if req.Command == "DEL" {
			<-releaseDel
		} else {
			<-release
		}
		return nodeapi.CNIResponse{Result: []byte("{}")}, nil
	})
	body := `{"command":"ADD","containerID":"c1","netns":"/run/netns/p","ifName":"eth0","stdinData":"e30="}`
	answered := make(chan int, 1)
	go func() {
		// Not e.call: it may t.Fatal, which must not happen off the test's goroutine.
		resp, err := http.Post(e.srv.URL+"/v1/cni", "application/json", strings.NewReader(body))
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.api.DrainCommands(ctx); err == nil {
		t.Fatal("DrainCommands returned while a command was running")
	}
	if status, data := e.call("POST", "/v1/cni", strings.Replace(body, "c1", "c2", 1)); status != http.StatusServiceUnavailable || errCode(t, data) != nodeapi.CodeStopping {
		t.Errorf("a command while stopping: %d %s, want 503 stopping", status, data)
	}
	// The DEL of the attachment whose ADD is still running is taken (it queues behind the ADD
	// in the runner), not handed to the fallback to run beside it; the drain waits for it too.
	delAnswered := make(chan int, 1)
	go func() {
		resp, err := http.Post(e.srv.URL+"/v1/cni", "application/json", strings.NewReader(strings.Replace(body, "ADD", "DEL", 1)))
		if err != nil {
			delAnswered <- 0
			return
		}
		resp.Body.Close()
		delAnswered <- resp.StatusCode
	}()
	for deadline := time.Now().Add(10 * time.Second); ran.Load() < 2; time.Sleep(time.Millisecond) {
		select {
		case status := <-delAnswered:
			close(release)
			close(releaseDel)
			t.Fatalf("the DEL of the attachment in flight was answered %d before its ADD finished, want it queued and run by the agent", status)
		default:
		}
		if time.Now().After(deadline) {
			close(release)
			close(releaseDel)
			t.Fatal("the DEL of the attachment in flight never reached the runner")
		}
	}
	close(release)
	if status := <-answered; status != http.StatusOK {
		t.Errorf("the running command was answered %d, want 200", status)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if err := e.api.DrainCommands(short); err == nil {
		t.Error("DrainCommands returned while the queued DEL was still running")
	}
	close(releaseDel)
	if err := e.api.DrainCommands(context.Background()); err != nil {
		t.Fatalf("DrainCommands after the command ended: %v", err)
	}
	if status := <-delAnswered; status != http.StatusOK {
		t.Errorf("the DEL of the attachment in flight was answered %d, want 200 (run by the agent)", status)
	}
	if status, data := e.call("POST", "/v1/cni", strings.Replace(body, "ADD", "DEL", 1)); status != http.StatusServiceUnavailable || errCode(t, data) != nodeapi.CodeStopping {
		t.Errorf("a DEL once nothing is in flight: %d %s, want 503 stopping", status, data)
	}
}

// TestDatastoreRequestsDrain: once stopping, the API says it is not ready (a plugin probing then
// uses etcd itself), while the requests of a plugin that started through the agent before are
// still served, and the drain waits until they have been quiet for a moment.
func TestDatastoreRequestsDrain(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	if status, data := e.call("GET", "/v1/datastore", ""); status != http.StatusOK {
		t.Fatalf("info before stopping: %d %s", status, data)
	}
	// A plugin's sequence of requests, begun before stopping, keeps the drain waiting.
	get := func() (int, []byte) { return e.call("GET", "/v1/ipam/handles/net.c1", "") }
	if status, data := get(); status != http.StatusOK && status != http.StatusNotFound {
		t.Fatalf("request before stopping: %d %s", status, data)
	}
	drained := make(chan error, 1)
	go func() { drained <- e.api.DrainCommands(context.Background()) }()
	for i := 0; i < 5; i++ {
		time.Sleep(drainQuiet / 3)
		if status, data := get(); status != http.StatusOK && status != http.StatusNotFound {
			t.Fatalf("request %d while stopping: %d %s", i, status, data)
		}
		select {
		case err := <-drained:
			t.Fatalf("drain ended (%v) during a sequence of requests (request %d)", err, i)
		default:
		}
	}
	if status, data := e.call("GET", "/v1/datastore", ""); status != http.StatusServiceUnavailable || errCode(t, data) != nodeapi.CodeStopping {
		t.Errorf("info while stopping: %d %s, want 503 stopping", status, data)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not end once requests stopped")
	}
}

// TestCNICommandsOnlyForRoot: a caller on the socket who is not root cannot have the agent run
// a command; the uid comes from the socket's peer credentials.
// TestMutatingRoutesOnlyForPrivileged: a member of the socket's group may read but not assign,
// release or write endpoints; credentials that cannot be read count as unprivileged.
func TestMutatingRoutesOnlyForPrivileged(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	h := e.api.Handler(http.NotFoundHandler())
	other := uint32(4242)
	if uint32(os.Geteuid()) == other {
		other++
	}
	for _, uid := range []uint32{other, peerUnknown} {
		for _, tc := range []struct{ method, path, body string }{
			{"POST", "/v1/ipam/assign", `{"node":"host-a","handle":"h","num4":1}`},
			{"POST", "/v1/ipam/release", `{"handle":"h"}`},
			{"POST", "/v1/endpoints", wepJSON(t, "host-a", "w9", "")},
			{"PUT", "/v1/endpoints", wepJSON(t, "host-a", "w9", "")},
			{"DELETE", "/v1/endpoints/default/w9", ""},
		} {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			req = req.WithContext(context.WithValue(req.Context(), peerUIDKey{}, uid))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusForbidden || errCode(t, w.Body.Bytes()) != nodeapi.CodeForbidden {
				t.Errorf("uid %d: %s %s = %d %s, want 403", uid, tc.method, tc.path, w.Code, w.Body)
			}
		}
		// Reading stays open to the group.
		req := httptest.NewRequest("GET", "/v1/endpoints/default/w9", nil)
		req = req.WithContext(context.WithValue(req.Context(), peerUIDKey{}, uid))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusNotFound {
			t.Errorf("uid %d: GET of an endpoint = %d %s, want 404 (allowed, not there)", uid, w.Code, w.Body)
		}
	}
	if hs, _, err := e.store.List(context.Background(), "/terrace/ipam/v1/handles/"); err != nil || len(hs) != 0 {
		t.Errorf("refused requests left handles: %v %v", hs, err)
	}
}

// TestAssignToAnotherNodesHandle: an assignment may not add to a handle holding another node's
// address (that node's DEL could then never release it).
func TestAssignToAnotherNodesHandle(t *testing.T) {
	e := newAPIEnv(t)
	e.api.SetDatastore(e.store, e.ds)
	alloc := ipam.New(e.store, e.ds, embedded.TestLogger())
	if _, err := alloc.AutoAssign(context.Background(), ipam.AutoAssignArgs{Node: "host-b", Handle: "net.cb", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	if status, data := e.call("POST", "/v1/ipam/assign", `{"node":"host-a","handle":"net.cb","num4":1}`); status != 403 || errCode(t, data) != CodeWrongNode {
		t.Errorf("assign to host-b's handle = %d %s, want 403", status, data)
	}
	if ips, err := alloc.IPsByHandle(context.Background(), "net.cb"); err != nil || len(ips) != 1 {
		t.Errorf("host-b's handle now holds %v (%v), want its one address", ips, err)
	}
	// Nor may this node read it: a repeated IPAM ADD returns what the handle holds, which would
	// give a pod here an address routed to host-b.
	if status, data := e.call("GET", "/v1/ipam/handles/net.cb", ""); status != 403 || errCode(t, data) != CodeWrongNode {
		t.Errorf("read host-b's handle = %d %s, want 403", status, data)
	}
	// This node's own handle may grow (a retried ADD) and be read.
	for range 2 {
		if status, data := e.call("POST", "/v1/ipam/assign", `{"node":"host-a","handle":"net.ca","num4":1}`); status != 200 {
			t.Errorf("assign to this node's handle = %d %s", status, data)
		}
	}
	if status, data := e.call("GET", "/v1/ipam/handles/net.ca", ""); status != 200 || strings.Count(string(data), ".") != 6 {
		t.Errorf("read this node's handle = %d %s, want its two addresses", status, data)
	}
}

func TestCNICommandsOnlyForRoot(t *testing.T) {
	a := NewDatastoreAPI("host-a", embedded.TestLogger())
	ran := 0
	a.SetCommandRunner(func(context.Context, nodeapi.CNIRequest) (nodeapi.CNIResponse, error) {
		ran++
		return nodeapi.CNIResponse{}, nil
	})
	e := newAPIEnv(t)
	a.SetDatastore(e.store, e.ds)
	h := a.Handler(http.NotFoundHandler())
	body := `{"command":"DEL","containerID":"c1","ifName":"eth0","stdinData":"e30="}`
	for _, tc := range []struct {
		name string
		uid  *uint32
		want int
	}{
		{"uid 1000", ptr(uint32(1000)), http.StatusForbidden},
		{"root", ptr(uint32(0)), http.StatusOK},
		{"not a unix socket (credentials unknown)", nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/cni", strings.NewReader(body))
			if tc.uid != nil {
				req = req.WithContext(context.WithValue(req.Context(), peerUIDKey{}, *tc.uid))
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", w.Code, w.Body, tc.want)
			}
		})
	}
	if ran != 2 {
		t.Errorf("the runner ran %d times, want 2 (root and unknown)", ran)
	}
	// The credentials are the real peer's: this test's own uid over a socket pair.
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("unix", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uid, ok := peerUID(withPeerUID(context.Background(), c))
	if !ok || uid != uint32(os.Getuid()) {
		t.Errorf("peer uid %d (%v), want %d", uid, ok, os.Getuid())
	}
}

func ptr[T any](v T) *T { return &v }

func manyAttrs(n int) string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf(`"k%d":"v"`, i))
	}
	return strings.Join(out, ",")
}

// manyIPs is n distinct quoted addresses, comma-separated.
func manyIPs(n int) string {
	var out []string
	a := netip.MustParseAddr("198.18.1.0")
	for range n {
		out = append(out, `"`+a.String()+`"`)
		a = a.Next()
	}
	return strings.Join(out, ",")
}

// TestClassify: what the plugin can act on gets its own code; running out of compare-and-swap
// retries wrote nothing, so it is "try again later", not an internal error.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("assign: %w", ipam.ErrPoolsExhausted), http.StatusConflict, CodePoolsExhausted},
		{fmt.Errorf("release: %w", ipam.ErrTooManyRetries), http.StatusServiceUnavailable, CodeUnavailable},
		{fmt.Errorf("read: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, CodeUnavailable},
		{errors.New("something else"), http.StatusInternalServerError, CodeInternal},
	} {
		if status, code := classify(c.err); status != c.status || code != c.code {
			t.Errorf("classify(%v) = %d %s, want %d %s", c.err, status, code, c.status, c.code)
		}
	}
}

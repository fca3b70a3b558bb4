package kv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/terracenet/terrace/datastore/embedded"
)

func openStore(t testing.TB, srv *embedded.Server) *Store {
	t.Helper()
	return openStoreCfg(t, Config{Endpoints: srv.Endpoints()})
}

func openStoreCfg(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg, embedded.TestLogger())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenUnreachable(t *testing.T) {
	u, err := embedded.FreeURL("http")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Open(ctx, Config{Endpoints: []string{u}, DialTimeout: 500 * time.Millisecond}, nil)
	if err == nil {
		t.Fatal("Open of a port nobody listens on succeeded")
	}
	if !strings.Contains(err.Error(), u) {
		t.Errorf("error %q does not name the endpoint %s", err, u)
	}
}

func TestCRUD(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	ctx := context.Background()
	const key = "/terrace/test/a"

	rev1, err := s.Create(ctx, key, []byte("one"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := s.Create(ctx, key, []byte("again")); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	got, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	want := KV{Key: key, Value: []byte("one"), Revision: rev1, CreateRevision: rev1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("get after create (-want +got):\n%s", diff)
	}

	rev2, err := s.Update(ctx, key, []byte("two"), rev1)
	if err != nil {
		t.Fatalf("update at current revision: %v", err)
	}
	if rev2 <= rev1 {
		t.Fatalf("update revision %d not after create revision %d", rev2, rev1)
	}
	if _, err := s.Update(ctx, key, []byte("stale"), rev1); !errors.Is(err, ErrConflict) {
		t.Fatalf("update with stale revision: got %v, want ErrConflict", err)
	}
	if _, err := s.Update(ctx, "/terrace/test/missing", []byte("x"), rev1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of missing key: got %v, want ErrNotFound", err)
	}
	if _, err := s.Update(ctx, key, []byte("x"), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("update with revision 0: got %v, want ErrConflict", err)
	}
	if got, _ := s.Get(ctx, key); string(got.Value) != "two" {
		t.Fatalf("value after failed updates = %q, want two", got.Value)
	}

	if _, err := s.Delete(ctx, key, rev1); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete with stale revision: got %v, want ErrConflict", err)
	}
	del, err := s.Delete(ctx, key, rev2)
	if err != nil {
		t.Fatalf("delete at current revision: %v", err)
	}
	if string(del.Value) != "two" || del.Revision != rev2 {
		t.Fatalf("delete returned %+v, want value two at %d", del, rev2)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: got %v, want ErrNotFound", err)
	}
	if _, err := s.Delete(ctx, key, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of missing key: got %v, want ErrNotFound", err)
	}
	if _, err := s.Delete(ctx, key, rev2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conditional delete of missing key: got %v, want ErrNotFound", err)
	}

	prev, err := s.Put(ctx, key, []byte("p1"))
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	next, err := s.Put(ctx, key, []byte("p2"))
	if err != nil || next <= prev {
		t.Fatalf("second put: rev %d after %d, err %v", next, prev, err)
	}
	del, err = s.Delete(ctx, key, 0)
	if err != nil || string(del.Value) != "p2" {
		t.Fatalf("unconditional delete: %+v, %v", del, err)
	}
}

func TestCommit(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	ctx := context.Background()
	revA, err := s.Put(ctx, "/c/a", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	revB, err := s.Put(ctx, "/c/b", []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, s, "/c/")

	tests := []struct {
		name    string
		ops     []Op
		failKey string // empty: must succeed
	}{
		{"create existing", []Op{{Kind: OpCreate, Key: "/c/new", Value: []byte("n")}, {Kind: OpCreate, Key: "/c/a", Value: []byte("x")}}, "/c/a"},
		{"stale update", []Op{{Kind: OpPut, Key: "/c/put", Value: []byte("p")}, {Kind: OpUpdate, Key: "/c/b", Value: []byte("x"), Rev: revA}}, "/c/b"},
		{"delete wrong rev", []Op{{Kind: OpUpdate, Key: "/c/a", Value: []byte("x"), Rev: revA}, {Kind: OpDelete, Key: "/c/b", Rev: revA}}, "/c/b"},
		{"check absent fails", []Op{{Kind: OpUpdate, Key: "/c/a", Value: []byte("x"), Rev: revA}, {Kind: OpCheck, Key: "/c/b"}}, "/c/b"},
		{"prefix changed since", []Op{{Kind: OpCreate, Key: "/c/new", Value: []byte("n")}, {Kind: OpCheckPrefix, Key: "/c/", Rev: revA}}, "/c/b"},
		{"check present fails", []Op{{Kind: OpCreate, Key: "/c/new", Value: []byte("n")}, {Kind: OpCheck, Key: "/c/missing", Rev: revA}}, "/c/missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Commit(ctx, tc.ops...)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("commit: got %v, want ErrConflict", err)
			}
			if !strings.Contains(err.Error(), tc.failKey) {
				t.Errorf("error %q does not name failing key %s", err, tc.failKey)
			}
			if diff := cmp.Diff(before, dump(t, s, "/c/")); diff != "" {
				t.Fatalf("failed commit wrote something (-before +after):\n%s", diff)
			}
		})
	}

	rev, err := s.Commit(ctx,
		Op{Kind: OpCreate, Key: "/c/new", Value: []byte("n")},
		Op{Kind: OpUpdate, Key: "/c/a", Value: []byte("a2"), Rev: revA},
		Op{Kind: OpDelete, Key: "/c/b", Rev: revB},
		Op{Kind: OpDelete, Key: "/c/never"},
		Op{Kind: OpCheck, Key: "/c/absent"},
		Op{Kind: OpCheckPrefix, Key: "/c/", Rev: revB},
		Op{Kind: OpPut, Key: "/c/put", Value: []byte("p")},
	)
	if err != nil {
		t.Fatalf("valid commit: %v", err)
	}
	want := map[string]string{"/c/a": "a2", "/c/new": "n", "/c/put": "p"}
	if diff := cmp.Diff(want, dump(t, s, "/c/")); diff != "" {
		t.Fatalf("after commit (-want +got):\n%s", diff)
	}
	if kv, _ := s.Get(ctx, "/c/new"); kv.Revision != rev {
		t.Errorf("commit returned revision %d, key has %d", rev, kv.Revision)
	}
}

func dump(t testing.TB, s *Store, prefix string) map[string]string {
	t.Helper()
	kvs, _, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("list %s: %v", prefix, err)
	}
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.Key] = string(kv.Value)
	}
	return m
}

func TestListPagesConsistently(t *testing.T) {
	srv := embedded.StartForTest(t)
	s := openStore(t, srv)
	ctx := context.Background()
	const n = listPage*2 + 7
	ops := make([]Op, 0, 100)
	for i := range n {
		ops = append(ops, Op{Kind: OpCreate, Key: fmt.Sprintf("/l/k%05d", i), Value: []byte("v")})
		if len(ops) == 100 {
			if _, err := s.Commit(ctx, ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	if _, err := s.Commit(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "/l", []byte("outside")); err != nil { // a neighbour, not under /l/
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "/m/x", []byte("outside")); err != nil {
		t.Fatal(err)
	}
	kvs, rev, err := s.List(ctx, "/l/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != n {
		t.Fatalf("listed %d keys, want %d", len(kvs), n)
	}
	for i, kv := range kvs {
		if want := fmt.Sprintf("/l/k%05d", i); kv.Key != want {
			t.Fatalf("key %d = %s, want %s", i, kv.Key, want)
		}
		if kv.Revision > rev {
			t.Fatalf("key %s has revision %d after list revision %d", kv.Key, kv.Revision, rev)
		}
	}
	all, _, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n+2 {
		t.Fatalf("list of everything: %d keys, want %d", len(all), n+2)
	}
}

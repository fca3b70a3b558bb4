package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// fakeStore is an in-memory NodeStore with compare-and-swap on resourceVersion and an optional
// number of injected conflicts, to exercise Register's retry.
type fakeStore struct {
	nodes     map[string]*api.Node
	rev       int
	conflicts int
	writes    int
}

func (f *fakeStore) Get(_ context.Context, kind, _, name string) (api.Resource, error) {
	n, ok := f.nodes[name]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", name, kv.ErrNotFound)
	}
	c, _ := api.Clone(n)
	return c, nil
}

func (f *fakeStore) List(context.Context, string, string) ([]api.Resource, error) {
	var out []api.Resource
	for _, n := range f.nodes {
		out = append(out, n)
	}
	return out, nil
}

func (f *fakeStore) Create(_ context.Context, r api.Resource) (api.Resource, error) {
	n := r.(*api.Node)
	if _, ok := f.nodes[n.Metadata.Name]; ok {
		return nil, kv.ErrExists
	}
	return f.store(n), nil
}

func (f *fakeStore) Update(_ context.Context, r api.Resource) (api.Resource, error) {
	n := r.(*api.Node)
	cur, ok := f.nodes[n.Metadata.Name]
	if !ok {
		return nil, kv.ErrNotFound
	}
	if f.conflicts > 0 {
		f.conflicts--
		f.rev++
		cur.Metadata.ResourceVersion = strconv.Itoa(f.rev)
		return nil, fmt.Errorf("update: %w", kv.ErrConflict)
	}
	if n.Metadata.ResourceVersion != cur.Metadata.ResourceVersion {
		return nil, fmt.Errorf("update: %w", kv.ErrConflict)
	}
	return f.store(n), nil
}

func (f *fakeStore) store(n *api.Node) api.Resource {
	f.rev++
	f.writes++
	c, _ := api.Clone(n)
	c.GetObjectMeta().ResourceVersion = strconv.Itoa(f.rev)
	f.nodes[n.Metadata.Name] = c.(*api.Node)
	out, _ := api.Clone(c)
	return out
}

func TestRegister(t *testing.T) {
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	as := api.ASNumber(65010)
	reg := Registration{
		Name: "host-1", Time: when, ASNumber: &as,
		IPv4: Choice{Method: "first-found", Addr: netip.MustParsePrefix("192.0.2.10/24"), Interface: "eth0", Reason: "r4"},
		IPv6: Choice{Method: "none", Reason: "r6"},
	}
	existing := &api.Node{TypeMeta: api.TypeMeta{Kind: api.KindNode, APIVersion: api.GroupVersion}}
	existing.Metadata = api.ObjectMeta{Name: "host-1", ResourceVersion: "1", Labels: map[string]string{"rack": "r1"}}
	existing.Spec.BGP = &api.NodeBGPSpec{IPv4Address: "198.51.100.1/24", IPv6Address: "2001:db8::1/64", RouteReflectorClusterID: "224.0.0.1"}
	existing.Spec.Addresses = []api.NodeAddress{{Address: "198.51.100.1/24", Type: api.NodeAddressCalicoNodeIP}, {Address: "203.0.113.1", Type: api.NodeAddressExternalIP}}
	wantStatus := &api.Autodetection{Method: "first-found", IPv4: "192.0.2.10", Interface: "eth0",
		Reason: "IPv4: r4; IPv6: r6", Time: "2026-03-04T05:06:07Z"}

	tests := []struct {
		name       string
		start      *api.Node
		conflicts  int
		wantSpec   api.NodeSpec
		wantLabels map[string]string
		wantErr    string
	}{
		{
			name: "create",
			wantSpec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "192.0.2.10/24", ASNumber: &as},
				Addresses: []api.NodeAddress{{Address: "192.0.2.10/24", Type: api.NodeAddressCalicoNodeIP}}},
		},
		{
			name: "update keeps what the node does not own", start: existing, conflicts: 2,
			wantSpec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "192.0.2.10/24", ASNumber: &as, RouteReflectorClusterID: "224.0.0.1"},
				Addresses: []api.NodeAddress{{Address: "203.0.113.1", Type: api.NodeAddressExternalIP}, {Address: "192.0.2.10/24", Type: api.NodeAddressCalicoNodeIP}}},
			wantLabels: map[string]string{"rack": "r1"},
		},
		{name: "gives up on endless conflicts", start: existing, conflicts: 100, wantErr: "gave up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeStore{nodes: map[string]*api.Node{}, rev: 1, conflicts: tt.conflicts}
			if tt.start != nil {
				c, _ := api.Clone(tt.start)
				f.nodes["host-1"] = c.(*api.Node)
			}
			n, err := Register(context.Background(), f, reg, slog.New(slog.DiscardHandler))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stored := f.nodes["host-1"]
			if diff := cmp.Diff(tt.wantSpec, stored.Spec); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantStatus, stored.Status.Autodetection); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantLabels, stored.Metadata.Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if n.Metadata.ResourceVersion != stored.Metadata.ResourceVersion {
				t.Errorf("returned version %s, stored %s", n.Metadata.ResourceVersion, stored.Metadata.ResourceVersion)
			}
		})
	}
}

func TestRegisterNeedsAnAddress(t *testing.T) {
	f := &fakeStore{nodes: map[string]*api.Node{}}
	_, err := Register(context.Background(), f, Registration{Name: "x"}, slog.New(slog.DiscardHandler))
	if err == nil || f.writes != 0 {
		t.Fatalf("err = %v, writes = %d", err, f.writes)
	}
}

func TestChoose(t *testing.T) {
	l := fakeLister{ifs: hostIfs}
	tests := []struct {
		name    string
		cfg     Config
		want4   string
		want6   string
		method6 string
		wantErr string
	}{
		{name: "defaults: v4 first-found, no v6", cfg: Config{NodeName: "n"}, want4: "192.0.2.10/24", want6: "invalid Prefix", method6: "none"},
		{name: "flag v4, autodetect v6", cfg: Config{NodeName: "n", IPv4: "198.51.100.20", IPv6: "autodetect"},
			want4: "198.51.100.20/24", want6: "2001:db8::10/64", method6: "first-found"},
		{name: "v6 method alone turns v6 on", cfg: Config{NodeName: "n", IPv4: "none", IPv6Method: "interface=ens.*"},
			want4: "invalid Prefix", want6: "2001:db8:1::20/64", method6: "interface=ens.*"},
		{name: "bad method and bad AS both reported", cfg: Config{NodeName: "n", IPv4Method: "bogus", ASNumber: "x.y"},
			wantErr: "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Lister = l
			reg, err := tt.cfg.Choose(slog.New(slog.DiscardHandler))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "as-number") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reg.IPv4.Addr.String() != tt.want4 || reg.IPv6.Addr.String() != tt.want6 || reg.IPv6.Method != tt.method6 {
				t.Errorf("got v4 %s v6 %s (%s)", reg.IPv4.Addr, reg.IPv6.Addr, reg.IPv6.Method)
			}
		})
	}
}

// TestChooseKeepsRegisteredName: without --node-name, the name recorded in the state directory at
// the last start wins over the host name (a renamed host stays the same node); the flag wins over
// both; an empty file is no name.
func TestChooseKeepsRegisteredName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name")
	}
	dir := t.TempDir()
	choose := func(name string) string {
		t.Helper()
		reg, err := Config{NodeName: name, StateDir: dir, IPv4: "198.51.100.20", Lister: fakeLister{ifs: hostIfs}}.Choose(slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return reg.Name
	}
	if got := choose(""); got != strings.ToLower(host) {
		t.Errorf("no file: %q, want the host name %q", got, strings.ToLower(host))
	}
	if err := writeFileAtomic(filepath.Join(dir, "nodename"), []byte("registered-name\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := choose(""); got != "registered-name" {
		t.Errorf("with the file: %q, want registered-name", got)
	}
	if got := choose("flag-name"); got != "flag-name" {
		t.Errorf("with --node-name: %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "nodename"), []byte("  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := choose(""); got != strings.ToLower(host) {
		t.Errorf("empty file: %q, want the host name", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the atomic write left temporary files: %v", ents)
	}
}

// failingGets fails the first reads of a store as an etcd in an election would.
type failingGets struct {
	*fakeStore
	fails int
	err   error
}

func (f *failingGets) Get(ctx context.Context, kind, ns, name string) (api.Resource, error) {
	if f.fails > 0 {
		f.fails--
		return nil, f.err
	}
	return f.fakeStore.Get(ctx, kind, ns, name)
}

// TestRegisterRetryingWaitsOutTransientErrors: an etcd that answered Connect but fails a request
// does not end the daemon; an undecodable stored Node does, at once.
func TestRegisterRetryingWaitsOutTransientErrors(t *testing.T) {
	reg := Registration{Name: "n1", IPv4: Choice{Method: "flag", Addr: netip.MustParsePrefix("192.0.2.10/24")}}
	s := &failingGets{fakeStore: &fakeStore{nodes: map[string]*api.Node{}}, fails: 2, err: errors.New("etcdserver: request timed out")}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := registerRetrying(ctx, s, reg, slog.New(slog.DiscardHandler))
	if err != nil || n == nil || n.Metadata.Name != "n1" {
		t.Fatalf("after two failed reads: %v %v, want the node registered", n, err)
	}
	s = &failingGets{fakeStore: &fakeStore{nodes: map[string]*api.Node{}}, fails: 100, err: fmt.Errorf("decode: %w", datastore.ErrUndecodable)}
	start := time.Now()
	if _, err := registerRetrying(ctx, s, reg, slog.New(slog.DiscardHandler)); !errors.Is(err, datastore.ErrUndecodable) || time.Since(start) > time.Second {
		t.Errorf("undecodable stored node: %v after %s, want the error at once", err, time.Since(start))
	}
}

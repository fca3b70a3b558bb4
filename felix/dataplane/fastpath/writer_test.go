package fastpath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeKernel records what the writer does; interfaces exist when listed in links.
type fakeKernel struct {
	links   map[string]int
	entries map[netip.Addr]int
	live    map[int]bool // ifindexes with a program attached
	ops     []string
	failAt  map[int]error // Attach errors by ifindex
}

func newFake(links map[string]int) *fakeKernel {
	return &fakeKernel{links: links, entries: map[netip.Addr]int{}, live: map[int]bool{}, failAt: map[int]error{}}
}

type fakeAttachment struct {
	k       *fakeKernel
	ifindex int
}

func (a fakeAttachment) Live() bool {
	for _, i := range a.k.links {
		if i == a.ifindex {
			return a.k.live[a.ifindex]
		}
	}
	return false
}

func (a fakeAttachment) Close() error {
	a.k.ops = append(a.k.ops, fmt.Sprintf("detach %d", a.ifindex))
	delete(a.k.live, a.ifindex)
	return nil
}

func (k *fakeKernel) LinkIndex(name string) (int, error) {
	if i, ok := k.links[name]; ok {
		return i, nil
	}
	return 0, ErrNoLink
}

func (k *fakeKernel) Attach(ifindex int, role Role) (Attachment, error) {
	if err := k.failAt[ifindex]; err != nil {
		return nil, err
	}
	k.ops = append(k.ops, fmt.Sprintf("attach %d %s", ifindex, role))
	k.live[ifindex] = true
	return fakeAttachment{k: k, ifindex: ifindex}, nil
}

func (k *fakeKernel) PutWorkload(addr netip.Addr, ifindex int) error {
	k.ops = append(k.ops, fmt.Sprintf("put %s %d", addr, ifindex))
	k.entries[addr] = ifindex
	return nil
}

func (k *fakeKernel) DeleteWorkload(addr netip.Addr) error {
	k.ops = append(k.ops, fmt.Sprintf("delete %s", addr))
	delete(k.entries, addr)
	return nil
}

func (k *fakeKernel) Workloads() (map[netip.Addr]int, error) {
	out := map[netip.Addr]int{}
	for a, i := range k.entries {
		out[a] = i
	}
	return out, nil
}

func (k *fakeKernel) Stats() (Stats, error) { return Stats{}, nil }

func (k *fakeKernel) takeOps() []string {
	ops := k.ops
	k.ops = nil
	slices.Sort(ops)
	return ops
}

var (
	a1 = netip.MustParseAddr("198.18.0.1")
	a2 = netip.MustParseAddr("198.18.0.2")
	a6 = netip.MustParseAddr("2001:db8:1000::1")
)

func TestWriterAppliesOnlyTheDifference(t *testing.T) {
	k := newFake(map[string]int{"up0": 2, "trc1": 10, "trc2": 11})
	w := New(k, nil)
	ctx := context.Background()
	w.SetHostInterfaces([]string{"up0"})
	w.SetWorkload(a1, "trc1")
	w.SetWorkload(a6, "trc1") // IPv6 is not fast-pathed
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 10 workload", "attach 2 host", "put 198.18.0.1 10"}, k.takeOps()); diff != "" {
		t.Errorf("first apply (-want +got):\n%s", diff)
	}
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if ops := k.takeOps(); len(ops) != 0 {
		t.Errorf("an apply with nothing changed did %v", ops)
	}
	w.SetWorkload(a2, "trc2")
	w.DeleteWorkload(a1)
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 11 workload", "delete 198.18.0.1", "detach 10", "put 198.18.0.2 11"}, k.takeOps()); diff != "" {
		t.Errorf("pod moved (-want +got):\n%s", diff)
	}
	w.SetHostInterfaces(nil)
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"detach 2"}, k.takeOps()); diff != "" {
		t.Errorf("uplink gone from the host's interfaces (-want +got):\n%s", diff)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"detach 11"}, k.takeOps()); diff != "" {
		t.Errorf("close (-want +got):\n%s", diff)
	}
}

// An address is in the map only while its interface carries the program: the kernel must never
// be told to enter a pod through an interface the fast path does not watch.
func TestWriterPendingInterface(t *testing.T) {
	k := newFake(map[string]int{})
	w := New(k, nil)
	ctx := context.Background()
	w.SetWorkload(a1, "trc1")
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if ops := k.takeOps(); len(ops) != 0 {
		t.Errorf("interface missing, yet the writer did %v", ops)
	}
	if diff := cmp.Diff([]string{"trc1"}, w.Pending()); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
	k.links["trc1"] = 10
	w.DeviceChanged("trc1")
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 10 workload", "put 198.18.0.1 10"}, k.takeOps()); diff != "" {
		t.Errorf("interface created (-want +got):\n%s", diff)
	}
	if len(w.Pending()) != 0 {
		t.Errorf("still pending: %v", w.Pending())
	}
}

func TestWriterRecreatedInterface(t *testing.T) {
	k := newFake(map[string]int{"trc1": 10})
	w := New(k, nil)
	ctx := context.Background()
	w.SetWorkload(a1, "trc1")
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	k.takeOps()
	k.links["trc1"] = 12 // deleted and made again: a new index, the old link defunct
	w.DeviceChanged("trc1")
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 12 workload", "detach 10", "put 198.18.0.1 12"}, k.takeOps()); diff != "" {
		t.Errorf("re-created interface (-want +got):\n%s", diff)
	}
}

func TestWriterAttachFailureIsRetried(t *testing.T) {
	k := newFake(map[string]int{"trc1": 10})
	k.failAt[10] = errors.New("device busy")
	w := New(k, nil)
	ctx := context.Background()
	w.SetWorkload(a1, "trc1")
	err := w.Apply(ctx)
	if err == nil {
		t.Fatal("apply succeeded although the attach failed")
	}
	if len(k.entries) != 0 {
		t.Errorf("map entry written for an interface without the program: %v", k.entries)
	}
	delete(k.failAt, 10)
	if err := w.Apply(ctx); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if k.entries[a1] != 10 {
		t.Errorf("after the retry the map holds %v", k.entries)
	}
}

// Resync repairs the map from what the kernel holds: an entry someone deleted comes back, one
// someone added goes.
func TestWriterResyncRepairsDrift(t *testing.T) {
	k := newFake(map[string]int{"trc1": 10})
	w := New(k, nil)
	ctx := context.Background()
	w.SetWorkload(a1, "trc1")
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	delete(k.entries, a1)
	k.entries[a2] = 99
	k.takeOps()
	if err := w.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[netip.Addr]int{a1: 10}, k.entries); diff != "" {
		t.Errorf("map after resync (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"delete 198.18.0.2", "put 198.18.0.1 10"}, k.takeOps()); diff != "" {
		t.Errorf("resync (-want +got):\n%s", diff)
	}
}

func TestHostInterfaces(t *testing.T) {
	ifs := map[string][]netip.Addr{
		"lo":             {netip.MustParseAddr("127.0.0.1")},
		"eth0":           {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fe80::1")},
		"eth1":           {netip.MustParseAddr("fe80::2")},
		"eth2":           {netip.MustParseAddr("169.254.3.3")},
		"trc0a1b2c3d4e5": {netip.MustParseAddr("198.18.0.1")},
		"tor-1":          {netip.MustParseAddr("192.0.2.3")},
	}
	if diff := cmp.Diff([]string{"eth0", "tor-1"}, HostInterfaces(ifs, "trc")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

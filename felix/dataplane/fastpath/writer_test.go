package fastpath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
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
	// notEther: interfaces that are not Ethernet; strict: conntrack not liberal.
	notEther map[string]bool
	strict   bool
	mu       sync.Mutex // Attach runs concurrently
}

func newFake(links map[string]int) *fakeKernel {
	return &fakeKernel{links: links, entries: map[netip.Addr]int{}, live: map[int]bool{}, failAt: map[int]error{}, notEther: map[string]bool{}}
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

func (k *fakeKernel) LinkByName(name string) (Link, error) {
	if i, ok := k.links[name]; ok {
		return Link{Index: i, Ethernet: !k.notEther[name]}, nil
	}
	return Link{}, ErrNoLink
}

func (k *fakeKernel) Liberal() (bool, error) { return !k.strict, nil }

func (k *fakeKernel) Attach(ifindex int, role Role) (Attachment, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
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
	w.SetWorkload(a6, "trc1")
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 10 workload", "attach 2 host", "put 198.18.0.1 10", "put 2001:db8:1000::1 10"}, k.takeOps()); diff != "" {
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
	w.DeleteWorkload(a6)
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 11 workload", "delete 198.18.0.1", "delete 2001:db8:1000::1", "detach 10", "put 198.18.0.2 11"}, k.takeOps()); diff != "" {
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

// withOnePod is a writer that has applied a1 on trc1 (ifindex 10), its operations taken.
func withOnePod(t *testing.T) (*fakeKernel, *Writer) {
	t.Helper()
	k := newFake(map[string]int{"trc1": 10})
	w := New(k, nil)
	w.SetWorkload(a1, "trc1")
	if err := w.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	k.takeOps()
	return k, w
}

func TestWriterRecreatedInterface(t *testing.T) {
	k, w := withOnePod(t)
	ctx := context.Background()
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
	k, w := withOnePod(t)
	ctx := context.Background()
	delete(k.entries, a1)
	k.entries[a2] = 99
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
		"eth3":           {netip.MustParseAddr("2001:db8::3"), netip.MustParseAddr("fe80::3")},
		"eth2":           {netip.MustParseAddr("169.254.3.3")},
		"trc0a1b2c3d4e5": {netip.MustParseAddr("198.18.0.1")},
		"tor-1":          {netip.MustParseAddr("192.0.2.3")},
	}
	if diff := cmp.Diff([]string{"eth0", "eth3", "tor-1"}, HostInterfaces(ifs, "trc")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Until conntrack is liberal about TCP windows nothing is attached: a fast-pathed TCP flow would
// lose its FIN to INVALID otherwise. What is attached stays if it stops being (sent back to the
// kernel, the flows' every packet would be out of window), and a new pod gets no link meanwhile.
func TestWriterWaitsForLiberalConntrack(t *testing.T) {
	k := newFake(map[string]int{"up0": 2, "trc1": 10})
	k.strict = true
	w := New(k, nil)
	ctx := context.Background()
	w.SetHostInterfaces([]string{"up0"})
	w.SetWorkload(a1, "trc1")
	if err := w.Apply(ctx); err == nil || !strings.Contains(err.Error(), "nf_conntrack_tcp_be_liberal") {
		t.Fatalf("apply with strict conntrack: %v, want an error naming the sysctl", err)
	}
	if ops := k.takeOps(); len(ops) != 0 {
		t.Errorf("attached although conntrack is strict: %v", ops)
	}
	k.strict = false
	if err := w.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 10 workload", "attach 2 host", "put 198.18.0.1 10"}, k.takeOps()); diff != "" {
		t.Errorf("liberal now (-want +got):\n%s", diff)
	}
	k.strict = true // someone set it back
	k.links["trc2"] = 11
	w.SetWorkload(a2, "trc2")
	if err := w.Apply(ctx); err == nil {
		t.Fatal("apply succeeded with strict conntrack")
	}
	if ops := k.takeOps(); len(ops) != 0 {
		t.Errorf("strict again: the writer did %v, want the links kept and none added", ops)
	}
	w.DeleteWorkload(a1) // a pod goes meanwhile: its link and entry go
	w.Apply(ctx)
	if diff := cmp.Diff([]string{"delete 198.18.0.1", "detach 10"}, k.takeOps()); diff != "" {
		t.Errorf("strict, a pod deleted (-want +got):\n%s", diff)
	}
}

func TestWriterSkipsNonEthernet(t *testing.T) {
	k := newFake(map[string]int{"wg0": 3, "up0": 2})
	k.notEther["wg0"] = true
	w := New(k, nil)
	w.SetHostInterfaces([]string{"up0", "wg0"})
	if err := w.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"attach 2 host"}, k.takeOps()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Many interfaces are attached at once (each tcx attach waits for an RCU grace period), and
// every one of them is recorded.
func TestWriterAttachesConcurrently(t *testing.T) {
	links := map[string]int{}
	for i := range 200 {
		links[fmt.Sprintf("trc%03d", i)] = 100 + i
	}
	k := newFake(links)
	w := New(k, nil)
	for i := range 200 {
		w.SetWorkload(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), fmt.Sprintf("trc%03d", i))
	}
	if err := w.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(w.attached) != 200 || len(k.entries) != 200 {
		t.Errorf("attached %d, map entries %d; want 200 each", len(w.attached), len(k.entries))
	}
}

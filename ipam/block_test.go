package ipam

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestNewBlockSizes(t *testing.T) {
	tests := []struct {
		cidr    string
		size    int
		wantErr bool
	}{
		{"198.18.0.0/26", 64, false},
		{"198.18.0.0/32", 1, false},
		{"198.18.0.0/20", 4096, false},
		{"198.18.0.0/19", 0, true},
		{"198.18.0.1/26", 0, true}, // not masked
		{"2001:db8:1000::/122", 64, false},
		{"2001:db8:1000::/116", 4096, false},
		{"2001:db8:1000::/115", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			b, err := NewBlock(netip.MustParsePrefix(tt.cidr), "h1")
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewBlock err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if b.Size() != tt.size || b.FreeCount() != tt.size || !b.Empty() || b.Host() != "h1" {
				t.Fatalf("size %d free %d empty %v host %q", b.Size(), b.FreeCount(), b.Empty(), b.Host())
			}
			if err := b.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBlockOrdinalRoundTrip(t *testing.T) {
	for _, c := range []string{"198.18.16.0/20", "198.18.0.64/26", "2001:db8:1000::f000/116", "2001:db8:1000::40/122"} {
		b, err := NewBlock(netip.MustParsePrefix(c), "")
		if err != nil {
			t.Fatal(err)
		}
		for ord := range b.Size() {
			ip := b.IP(ord)
			if !b.CIDR.Contains(ip) {
				t.Fatalf("%s: IP(%d)=%v outside", c, ord, ip)
			}
			got, ok := b.Ordinal(ip)
			if !ok || got != ord {
				t.Fatalf("%s: Ordinal(IP(%d)=%v) = %d,%v", c, ord, ip, got, ok)
			}
		}
		if _, ok := b.Ordinal(b.IP(b.Size() - 1).Next()); ok {
			t.Fatalf("%s: address after the block has an ordinal", c)
		}
	}
}

func TestBlockAssignOrderAndRelease(t *testing.T) {
	b, err := NewBlock(netip.MustParsePrefix("198.18.0.0/30"), "h1")
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string]string{AttrNode: "h1"}
	got := b.Assign(2, "a", attrs)
	if diff := cmp.Diff(addrs("198.18.0.0", "198.18.0.1"), got, addrCmp); diff != "" {
		t.Fatalf("first assign (-want +got):\n%s", diff)
	}
	// A released address goes to the back of the free list.
	freed, not := b.Release(addrs("198.18.0.0", "198.18.0.3"))
	if diff := cmp.Diff(map[string]int{"a": 1}, freed); diff != "" {
		t.Fatalf("freed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(addrs("198.18.0.3"), not, addrCmp); diff != "" {
		t.Fatalf("not assigned (-want +got):\n%s", diff)
	}
	got = b.Assign(5, "b", nil)
	if diff := cmp.Diff(addrs("198.18.0.2", "198.18.0.3", "198.18.0.0"), got, addrCmp); diff != "" {
		t.Fatalf("second assign (-want +got):\n%s", diff)
	}
	if b.FreeCount() != 0 || b.Assign(1, "c", nil) != nil {
		t.Fatalf("full block still assigns")
	}
	if diff := cmp.Diff(map[string]int{"a": 1, "b": 3}, b.Handles()); diff != "" {
		t.Fatalf("handles (-want +got):\n%s", diff)
	}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	if ips := b.ReleaseHandle("b"); len(ips) != 3 {
		t.Fatalf("ReleaseHandle(b) = %v", ips)
	}
	// Attribute entries of released handles are dropped and indexes renumbered.
	if len(b.Attributes) != 1 || b.Attributes[0].Handle != "a" {
		t.Fatalf("attributes after release: %+v", b.Attributes)
	}
	if a, ok := b.HandleOf(netip.MustParseAddr("198.18.0.1")); !ok || a.Handle != "a" || a.Attrs[AttrNode] != "h1" {
		t.Fatalf("HandleOf = %+v %v", a, ok)
	}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestBlockAssignIP(t *testing.T) {
	b, _ := NewBlock(netip.MustParsePrefix("2001:db8:1000::/126"), "")
	ip := netip.MustParseAddr("2001:db8:1000::2")
	tests := []struct {
		name string
		ip   netip.Addr
		want error
	}{
		{"free", ip, nil},
		{"again", ip, ErrAddressInUse},
		{"outside", netip.MustParseAddr("2001:db8:1000::4"), ErrAddressNotInPool},
		{"other family", netip.MustParseAddr("198.18.0.2"), ErrAddressNotInPool},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.AssignIP(tt.ip, "h", nil)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("AssignIP(%v) = %v, want %v", tt.ip, err, tt.want)
			}
		})
	}
	got := b.Assign(4, "x", nil)
	if diff := cmp.Diff(addrs("2001:db8:1000::", "2001:db8:1000::1", "2001:db8:1000::3"), got, addrCmp); diff != "" {
		t.Fatalf("assign skips the taken address (-want +got):\n%s", diff)
	}
	if b.ReleaseIfHandle(ip, "x") {
		t.Fatal("released an address held by another handle")
	}
	if !b.ReleaseIfHandle(ip, "h") {
		t.Fatal("did not release the address held by h")
	}
}

func TestBlockEncodeDecode(t *testing.T) {
	b, _ := NewBlock(netip.MustParsePrefix("198.18.0.0/28"), "n")
	b.Assign(3, "h1", map[string]string{AttrPod: "p"})
	b.Assign(1, "h2", nil)
	data, err := EncodeBlock(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBlock(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b.Allocated(), got.Allocated(), addrCmp); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	bad := []string{
		`{}`,
		`{"cidr":"198.18.0.0/30","allocations":[null,null,null,null],"unallocated":[0,1,2]}`,
		`{"cidr":"198.18.0.0/30","allocations":[0,null,null,null],"unallocated":[1,2,3],"attributes":[]}`,
		`{"cidr":"198.18.0.0/30","allocations":[null,null,null,null],"unallocated":[0,1,2,2]}`,
		`{"cidr":"198.18.0.0/30","allocations":[null,null,null],"unallocated":[0,1,2]}`,
	}
	for _, s := range bad {
		if _, err := DecodeBlock([]byte(s)); err == nil {
			t.Errorf("DecodeBlock(%s) accepted an inconsistent block", s)
		}
	}
}

func TestKeys(t *testing.T) {
	for _, c := range []string{"198.18.0.0/26", "2001:db8:1000::40/122"} {
		p := netip.MustParsePrefix(c)
		got, err := ParseBlockKey(BlockKey(p))
		if err != nil || got != p {
			t.Fatalf("ParseBlockKey(BlockKey(%v)) = %v, %v", p, got, err)
		}
		node, got, err := ParseAffinityKey(AffinityKey("host-1", p))
		if err != nil || got != p || node != "host-1" {
			t.Fatalf("ParseAffinityKey = %q %v %v", node, got, err)
		}
	}
	if BlockKey(netip.MustParsePrefix("198.18.0.0/26")) != "/terrace/ipam/v1/blocks/198.18.0.0-26" {
		t.Fatal("block key layout differs from CONVENTIONS.md")
	}
}

func FuzzDecodeBlock(f *testing.F) {
	b, _ := NewBlock(netip.MustParsePrefix("198.18.0.0/29"), "n")
	b.Assign(2, "h", nil)
	seed, _ := EncodeBlock(b)
	f.Add(seed)
	f.Add([]byte(`{"cidr":"2001:db8::/127","allocations":[0,null],"unallocated":[1],"attributes":[{"handle_id":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBlock(data)
		if err != nil {
			return
		}
		// Whatever decodes must keep its invariants through assign and release.
		free := b.FreeCount()
		got := b.Assign(free, "fuzz", nil)
		if len(got) != free || b.FreeCount() != 0 {
			t.Fatalf("assigned %d of %d free", len(got), free)
		}
		b.ReleaseHandle("fuzz")
		if b.FreeCount() != free {
			t.Fatalf("free %d after release, want %d", b.FreeCount(), free)
		}
		if err := b.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseKeys(f *testing.F) {
	f.Add(BlockKey(netip.MustParsePrefix("198.18.0.0/26")))
	f.Add(AffinityKey("n", netip.MustParsePrefix("2001:db8::/122")))
	f.Fuzz(func(t *testing.T, key string) {
		// Non-canonical spellings may parse; the canonical key of what parsed must round-trip.
		if p, err := ParseBlockKey(key); err == nil {
			if q, err := ParseBlockKey(BlockKey(p)); err != nil || q != p {
				t.Fatalf("canonical key of %v does not round-trip", p)
			}
		}
		if n, p, err := ParseAffinityKey(key); err == nil {
			if n2, q, err := ParseAffinityKey(AffinityKey(n, p)); err != nil || q != p || n2 != n {
				t.Fatalf("affinity key of %q %v does not round-trip", n, p)
			}
		}
	})
}

func FuzzDecodeRecords(f *testing.F) {
	h := &Handle{ID: "net.c1"}
	h.Add(netip.MustParsePrefix("198.18.0.0/26"), 2)
	f.Add(mustJSON(h))
	f.Add(mustJSON(Affinity{State: affinityPending, Node: "n", CIDR: "198.18.0.0/26"}))
	f.Add([]byte(`{"handleID":"x","blocks":{"not a cidr":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := DecodeHandle(data); err == nil {
			// A decoded handle's counts are positive, so removing each block empties it.
			for k, n := range h.Blocks {
				h.Remove(netip.MustParsePrefix(k), n)
			}
			if h.Count() != 0 || len(h.Blocks) != 0 {
				t.Fatalf("handle not empty after removing every block: %+v", h)
			}
		}
		if a, err := DecodeAffinity(data); err == nil && a.State != affinityPending && a.State != affinityConfirmd {
			t.Fatalf("accepted state %q", a.State)
		}
	})
}

func TestHandleCounts(t *testing.T) {
	a, b := netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:1000::/122")
	tests := []struct {
		name string
		ops  func(h *Handle)
		want map[string]int
	}{
		{"add", func(h *Handle) { h.Add(a, 2); h.Add(b, 1); h.Add(a, 1) }, map[string]int{a.String(): 3, b.String(): 1}},
		{"remove to zero drops the block", func(h *Handle) { h.Add(a, 2); h.Add(b, 1); h.Remove(a, 2) }, map[string]int{b.String(): 1}},
		{"remove more than held", func(h *Handle) { h.Add(a, 1); h.Remove(a, 5) }, map[string]int{}},
		{"remove from nothing", func(h *Handle) { h.Remove(b, 1); h.Add(a, 1) }, map[string]int{a.String(): 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handle{ID: "x"}
			tt.ops(h)
			if diff := cmp.Diff(tt.want, h.Blocks); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

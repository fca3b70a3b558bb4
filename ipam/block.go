package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// MaxBlockOrdinals bounds a block's size: /20 for IPv4 and /116 for IPv6 are the largest allowed.
const MaxBlockOrdinals = 4096

// Attribute records who holds an allocation. Ordinals of one handle with equal attributes share
// one entry, which keeps a block's JSON small.
type Attribute struct {
	Handle string            `json:"handle_id,omitempty"`
	Attrs  map[string]string `json:"secondary,omitempty"`
}

// Block is one block of a pool as stored in etcd (the layout follows Calico's AllocationBlock).
// Allocations[ordinal] is an index into Attributes, nil when free; Unallocated lists free ordinals
// in the order they will be handed out, so a released address goes to the back and is reused last
// (stale routes and conntrack entries for it get time to disappear).
type Block struct {
	CIDR           netip.Prefix `json:"cidr"`
	Affinity       string       `json:"affinity,omitempty"` // "host:<node>", empty when no host owns it
	Allocations    []*int       `json:"allocations"`
	Unallocated    []int        `json:"unallocated"`
	Attributes     []Attribute  `json:"attributes"`
	SequenceNumber uint64       `json:"sequenceNumber"`
}

// Allocation is one assigned address of a block.
type Allocation struct {
	IP     netip.Addr        `json:"ip"`
	Handle string            `json:"handle"`
	Attrs  map[string]string `json:"attrs,omitempty"`
}

// HostAffinity is the affinity string of a block owned by node.
func HostAffinity(node string) string { return "host:" + node }

// NewBlock returns an empty block covering cidr, optionally affine to node.
func NewBlock(cidr netip.Prefix, node string) (*Block, error) {
	n, err := blockOrdinals(cidr)
	if err != nil {
		return nil, err
	}
	b := &Block{CIDR: cidr, Allocations: make([]*int, n), Unallocated: make([]int, n), Attributes: []Attribute{}}
	if node != "" {
		b.Affinity = HostAffinity(node)
	}
	for i := range b.Unallocated {
		b.Unallocated[i] = i
	}
	return b, nil
}

func blockOrdinals(cidr netip.Prefix) (int, error) {
	if !cidr.IsValid() || cidr.Masked() != cidr {
		return 0, fmt.Errorf("check block %v: not a masked prefix", cidr)
	}
	hostBits := cidr.Addr().BitLen() - cidr.Bits()
	if hostBits > 12 {
		return 0, fmt.Errorf("check block %v: larger than %d addresses", cidr, MaxBlockOrdinals)
	}
	return 1 << hostBits, nil
}

// clone copies what Assign and Release change; the attribute maps and the ints ordinals point
// at are never changed in place, so they are shared.
func (b *Block) clone() *Block {
	c := *b
	c.Allocations = slices.Clone(b.Allocations)
	c.Unallocated = slices.Clone(b.Unallocated)
	c.Attributes = slices.Clone(b.Attributes)
	return &c
}

// Host returns the node the block is affine to, or "".
func (b *Block) Host() string {
	h, ok := strings.CutPrefix(b.Affinity, "host:")
	if !ok {
		return ""
	}
	return h
}

// Size is the number of addresses the block covers.
func (b *Block) Size() int { return len(b.Allocations) }

// FreeCount is the number of unassigned addresses.
func (b *Block) FreeCount() int { return len(b.Unallocated) }

// UsedCount is the number of assigned addresses.
func (b *Block) UsedCount() int { return len(b.Allocations) - len(b.Unallocated) }

// Empty reports whether no address is assigned.
func (b *Block) Empty() bool { return b.UsedCount() == 0 }

// Ordinal returns the position of ip in the block.
func (b *Block) Ordinal(ip netip.Addr) (int, bool) {
	if !b.CIDR.Contains(ip) {
		return 0, false
	}
	base := b.CIDR.Addr().As16()
	a := ip.As16()
	// Blocks hold at most 4096 addresses, so the offset lives in the last two bytes.
	ord := (int(a[14])<<8 | int(a[15])) - (int(base[14])<<8 | int(base[15]))
	if ord < 0 || ord >= len(b.Allocations) {
		return 0, false
	}
	return ord, true
}

// IP returns the address at ordinal ord.
func (b *Block) IP(ord int) netip.Addr {
	a := b.CIDR.Addr().As16()
	v := (int(a[14])<<8 | int(a[15])) + ord
	a[14], a[15] = byte(v>>8), byte(v)
	ip := netip.AddrFrom16(a)
	if b.CIDR.Addr().Is4() {
		return ip.Unmap()
	}
	return ip
}

func (b *Block) attrIndex(handle string, attrs map[string]string) int {
	for i, a := range b.Attributes {
		if a.Handle == handle && maps.Equal(a.Attrs, attrs) {
			return i
		}
	}
	b.Attributes = append(b.Attributes, Attribute{Handle: handle, Attrs: maps.Clone(attrs)})
	return len(b.Attributes) - 1
}

// Assign hands out up to n free addresses, in order, to handle. It returns what it assigned
// (fewer than n when the block runs out).
func (b *Block) Assign(n int, handle string, attrs map[string]string) []netip.Addr {
	if n <= 0 || len(b.Unallocated) == 0 {
		return nil
	}
	n = min(n, len(b.Unallocated))
	idx := b.attrIndex(handle, attrs)
	out := make([]netip.Addr, 0, n)
	for _, ord := range b.Unallocated[:n] {
		b.Allocations[ord] = &idx
		out = append(out, b.IP(ord))
	}
	b.Unallocated = slices.Delete(b.Unallocated, 0, n)
	b.SequenceNumber++
	return out
}

// AssignIP assigns one specific address to handle.
func (b *Block) AssignIP(ip netip.Addr, handle string, attrs map[string]string) error {
	ord, ok := b.Ordinal(ip)
	if !ok {
		return fmt.Errorf("assign %v in block %v: %w", ip, b.CIDR, ErrAddressNotInPool)
	}
	if b.Allocations[ord] != nil {
		return fmt.Errorf("assign %v: %w", ip, ErrAddressInUse)
	}
	i := slices.Index(b.Unallocated, ord)
	if i < 0 {
		return fmt.Errorf("assign %v: block %v is inconsistent: ordinal %d neither free nor assigned", ip, b.CIDR, ord)
	}
	idx := b.attrIndex(handle, attrs)
	b.Allocations[ord] = &idx
	b.Unallocated = slices.Delete(b.Unallocated, i, i+1)
	b.SequenceNumber++
	return nil
}

// HandleOf returns who holds ip.
func (b *Block) HandleOf(ip netip.Addr) (Attribute, bool) {
	ord, ok := b.Ordinal(ip)
	if !ok || b.Allocations[ord] == nil {
		return Attribute{}, false
	}
	return b.Attributes[*b.Allocations[ord]], true
}

// Release frees the given addresses. It returns, per handle, how many it freed (so the caller can
// fix the handle records) and the addresses that were not assigned (nothing to do for those).
// Addresses outside the block are reported as not assigned.
func (b *Block) Release(ips []netip.Addr) (freed map[string]int, notAssigned []netip.Addr) {
	return b.release(ips, func(Attribute) bool { return true })
}

// ReleaseIfHandle frees ip only if handle holds it, so a release decided on old information cannot
// free an address someone else has since been given.
func (b *Block) ReleaseIfHandle(ip netip.Addr, handle string) bool {
	freed, _ := b.release([]netip.Addr{ip}, func(a Attribute) bool { return a.Handle == handle })
	return freed[handle] == 1
}

func (b *Block) release(ips []netip.Addr, match func(Attribute) bool) (map[string]int, []netip.Addr) {
	freed := map[string]int{}
	var notAssigned []netip.Addr
	for _, ip := range ips {
		ord, ok := b.Ordinal(ip)
		if !ok || b.Allocations[ord] == nil || !match(b.Attributes[*b.Allocations[ord]]) {
			notAssigned = append(notAssigned, ip)
			continue
		}
		freed[b.Attributes[*b.Allocations[ord]].Handle]++
		b.Allocations[ord] = nil
		b.Unallocated = append(b.Unallocated, ord)
	}
	if len(freed) > 0 {
		b.compactAttributes()
		b.SequenceNumber++
	}
	return freed, notAssigned
}

// ReleaseHandle frees every address handle holds in the block and returns them.
func (b *Block) ReleaseHandle(handle string) []netip.Addr {
	var ips []netip.Addr
	for ord, idx := range b.Allocations {
		if idx != nil && b.Attributes[*idx].Handle == handle {
			ips = append(ips, b.IP(ord))
		}
	}
	b.Release(ips)
	return ips
}

// compactAttributes drops entries no ordinal points to and renumbers the rest.
func (b *Block) compactAttributes() {
	used := make([]bool, len(b.Attributes))
	for _, idx := range b.Allocations {
		if idx != nil {
			used[*idx] = true
		}
	}
	renum := make([]int, len(b.Attributes))
	kept := b.Attributes[:0]
	for i, a := range b.Attributes {
		if used[i] {
			renum[i] = len(kept)
			kept = append(kept, a)
		}
	}
	for i := len(kept); i < len(b.Attributes); i++ {
		b.Attributes[i] = Attribute{}
	}
	b.Attributes = kept
	for ord, idx := range b.Allocations {
		if idx != nil {
			v := renum[*idx]
			b.Allocations[ord] = &v
		}
	}
}

// Handles counts the addresses each handle holds in the block.
func (b *Block) Handles() map[string]int {
	out := map[string]int{}
	for _, idx := range b.Allocations {
		if idx != nil {
			out[b.Attributes[*idx].Handle]++
		}
	}
	return out
}

// Allocated lists assigned addresses in address order.
func (b *Block) Allocated() []Allocation {
	var out []Allocation
	for ord, idx := range b.Allocations {
		if idx != nil {
			a := b.Attributes[*idx]
			out = append(out, Allocation{IP: b.IP(ord), Handle: a.Handle, Attrs: a.Attrs})
		}
	}
	return out
}

// Validate checks the block is self-consistent: every ordinal is either free (listed once in
// Unallocated) or assigned (pointing at an existing attribute), never both.
func (b *Block) Validate() error {
	n, err := blockOrdinals(b.CIDR)
	if err != nil {
		return err
	}
	if len(b.Allocations) != n {
		return fmt.Errorf("check block %v: %d allocations for %d addresses", b.CIDR, len(b.Allocations), n)
	}
	seen := make([]bool, n)
	for _, ord := range b.Unallocated {
		if ord < 0 || ord >= n {
			return fmt.Errorf("check block %v: free ordinal %d out of range", b.CIDR, ord)
		}
		if seen[ord] || b.Allocations[ord] != nil {
			return fmt.Errorf("check block %v: ordinal %d listed free twice or also assigned", b.CIDR, ord)
		}
		seen[ord] = true
	}
	for ord, idx := range b.Allocations {
		if idx == nil {
			if !seen[ord] {
				return fmt.Errorf("check block %v: ordinal %d neither free nor assigned", b.CIDR, ord)
			}
			continue
		}
		if *idx < 0 || *idx >= len(b.Attributes) {
			return fmt.Errorf("check block %v: ordinal %d points at missing attribute %d", b.CIDR, ord, *idx)
		}
	}
	return nil
}

// EncodeBlock returns the block's stored JSON.
func EncodeBlock(b *Block) ([]byte, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode block %v: %w", b.CIDR, err)
	}
	return data, nil
}

// DecodeBlock parses and validates a stored block.
func DecodeBlock(data []byte) (*Block, error) {
	var b Block
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode block: %w", err)
	}
	if b.Attributes == nil {
		b.Attributes = []Attribute{}
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("decode block: %w", err)
	}
	return &b, nil
}

package ipam

import (
	"context"
	"fmt"
	"math/big"
	"net/netip"
	"slices"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// PoolUsage is one pool's line of `ipam show`.
type PoolUsage struct {
	Name      string `json:"name"`
	CIDR      string `json:"cidr"`
	BlockSize int    `json:"blockSize"`
	Disabled  bool   `json:"disabled"`
	Size      string `json:"size"` // decimal: an IPv6 pool does not fit in 64 bits
	Used      int    `json:"used"`
	Free      string `json:"free"`
	Blocks    int    `json:"blocks"`
}

// BlockUsage is one block's line of `ipam show --show-blocks`.
type BlockUsage struct {
	CIDR netip.Prefix `json:"cidr"`
	Pool string       `json:"pool,omitempty"`
	Node string       `json:"node,omitempty"` // affine host, empty when unowned
	Size int          `json:"size"`
	Used int          `json:"used"`
	Free int          `json:"free"`
}

func usageOf(b *Block) BlockUsage {
	return BlockUsage{CIDR: b.CIDR, Node: b.Host(), Size: b.Size(), Used: b.UsedCount(), Free: b.FreeCount()}
}

// IPInfo says who holds one address (`ipam show --ip`).
type IPInfo struct {
	IP        netip.Addr        `json:"ip"`
	Pool      string            `json:"pool,omitempty"`
	Block     netip.Prefix      `json:"block,omitzero"`
	BlockNode string            `json:"blockNode,omitempty"`
	Allocated bool              `json:"allocated"`
	Handle    string            `json:"handle,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
}

func (a *Allocator) listBlocks(ctx context.Context) ([]*Block, error) {
	kvs, _, err := a.store.List(ctx, BlockPrefix)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	out := make([]*Block, 0, len(kvs))
	for _, e := range kvs {
		b, err := DecodeBlock(e.Value)
		if err != nil {
			a.log.Warn("skipping undecodable block", "key", e.Key, "err", err)
			continue
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(x, y *Block) int { return comparePrefix(x.CIDR, y.CIDR) })
	return out, nil
}

// ShowBlocks lists every block with its usage and pool. When a stored pool cannot be decoded the
// blocks are still listed (those of that pool without one) and the error, wrapping
// datastore.ErrUndecodable, is returned with them.
func (a *Allocator) ShowBlocks(ctx context.Context) ([]BlockUsage, error) {
	pools, unreadable, err := a.readablePools(ctx)
	if err != nil {
		return nil, err
	}
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return nil, err
	}
	env := &allocEnv{pools: pools}
	out := make([]BlockUsage, 0, len(blocks))
	for _, b := range blocks {
		u := usageOf(b)
		if p := env.poolFor(b.CIDR.Addr()); p != nil {
			u.Pool = p.name
		}
		out = append(out, u)
	}
	return out, unreadable
}

// ShowPools lists every pool with its size, used addresses and free addresses. A stored pool that
// cannot be decoded is left out and the error, wrapping datastore.ErrUndecodable, is returned
// with the others.
func (a *Allocator) ShowPools(ctx context.Context) ([]PoolUsage, error) {
	pools, unreadable, err := a.readablePools(ctx)
	if err != nil {
		return nil, err
	}
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PoolUsage, 0, len(pools))
	for _, p := range pools {
		size := new(big.Int).Lsh(big.NewInt(1), uint(p.cidr.Addr().BitLen()-p.cidr.Bits()))
		u := PoolUsage{Name: p.name, CIDR: p.cidr.String(), BlockSize: p.blockBits, Disabled: p.spec.Disabled, Size: size.String()}
		for _, b := range blocks {
			if p.cidr.Overlaps(b.CIDR) {
				u.Blocks++
				u.Used += b.UsedCount()
			}
		}
		u.Free = new(big.Int).Sub(size, big.NewInt(int64(u.Used))).String()
		out = append(out, u)
	}
	return out, unreadable
}

// ShowIP says whether ip is allocated and to whom.
func (a *Allocator) ShowIP(ctx context.Context, ip netip.Addr) (IPInfo, error) {
	ip = ip.Unmap()
	info := IPInfo{IP: ip}
	var pools []*pool
	if a.ds != nil {
		var err error
		if pools, err = a.loadPools(ctx); err != nil {
			return info, err
		}
	}
	env := &allocEnv{pools: pools}
	if p := env.poolFor(ip); p != nil {
		info.Pool = p.name
	}
	byBlock, notFound, err := a.groupByBlock(ctx, []netip.Addr{ip})
	if err != nil {
		return info, err
	}
	if len(notFound) > 0 && info.Pool == "" {
		return info, fmt.Errorf("show %v: %w", ip, ErrAddressNotInPool)
	}
	for cidr := range byBlock {
		_, b, err := a.readBlock(ctx, cidr, true)
		if err != nil {
			return info, err
		}
		if b == nil {
			continue
		}
		info.Block, info.BlockNode = b.CIDR, b.Host()
		if at, ok := b.HandleOf(ip); ok {
			info.Allocated, info.Handle, info.Attrs = true, at.Handle, at.Attrs
		}
	}
	return info, nil
}

// BlocksForNode returns the blocks affine to node, which its BGP speaker advertises and its
// routing blackholes.
func (a *Allocator) BlocksForNode(ctx context.Context, node string) ([]netip.Prefix, error) {
	blocks, err := a.nodeBlocks(ctx, node)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(blocks)
	slices.SortFunc(out, comparePrefix)
	return out, nil
}

// BorrowedIPs returns the addresses assigned on node (attribute node) from blocks it does not
// own; BGP advertises each as a /32 or /128.
func (a *Allocator) BorrowedIPs(ctx context.Context, node string) ([]netip.Addr, error) {
	blocks, err := a.listBlocks(ctx)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, b := range blocks {
		if b.Host() == node {
			continue
		}
		for _, al := range b.Allocated() {
			if al.Attrs[AttrNode] == node {
				out = append(out, al.IP)
			}
		}
	}
	return out, nil
}

// IPsByHandle returns the addresses handle holds, or ErrHandleNotFound.
func (a *Allocator) IPsByHandle(ctx context.Context, handle string) ([]netip.Addr, error) {
	hs := &handleState{id: handle}
	if err := a.loadHandle(ctx, hs); err != nil {
		return nil, err
	}
	if hs.h == nil {
		return nil, fmt.Errorf("addresses of %s: %w", handle, ErrHandleNotFound)
	}
	var out []netip.Addr
	for _, k := range sortedKeys(hs.h.Blocks) {
		_, b, err := a.readBlock(ctx, netip.MustParsePrefix(k), true)
		if err != nil {
			return nil, err
		}
		if b == nil {
			continue
		}
		for _, al := range b.Allocated() {
			if al.Handle == handle {
				out = append(out, al.IP)
			}
		}
	}
	return out, nil
}

// CheckPoolDeletable counts the addresses still allocated inside pool. It returns the count and,
// when it is not zero, an error wrapping ErrPoolInUse that names it; deleting the pool should then
// be refused unless the pool is disabled and the user forces it.
func (a *Allocator) CheckPoolDeletable(ctx context.Context, p *api.IPPool) (int, error) {
	return CheckPoolDeletable(ctx, a.store, p)
}

// CheckPoolDeletable is the store-only form of (*Allocator).CheckPoolDeletable.
func CheckPoolDeletable(ctx context.Context, store *kv.Store, p *api.IPPool) (int, error) {
	cidr, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return 0, fmt.Errorf("check pool %s: %w", p.Metadata.Name, err)
	}
	kvs, _, err := store.List(ctx, BlockPrefix)
	if err != nil {
		return 0, fmt.Errorf("check pool %s: list blocks: %w", p.Metadata.Name, err)
	}
	n := 0
	for _, e := range kvs {
		c, err := ParseBlockKey(e.Key)
		if err != nil || !cidr.Masked().Overlaps(c) {
			continue
		}
		b, err := DecodeBlock(e.Value)
		if err != nil {
			return 0, fmt.Errorf("check pool %s: %w", p.Metadata.Name, err)
		}
		for _, al := range b.Allocated() {
			if cidr.Contains(al.IP) {
				n++
			}
		}
	}
	if n > 0 {
		return n, fmt.Errorf("pool %s has %d allocated addresses: %w", p.Metadata.Name, n, ErrPoolInUse)
	}
	return 0, nil
}

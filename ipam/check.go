package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// DefaultGracePeriod is how old an allocation must be before its missing owner makes it a leak:
// the CNI plugin assigns an address before the WorkloadEndpoint is written.
const DefaultGracePeriod = 15 * time.Minute

// CheckOptions tunes Check.
type CheckOptions struct {
	GracePeriod time.Duration // 0: DefaultGracePeriod; negative: no grace at all
}

// Report is the result of Check, stable as JSON (`terracectl ipam check -o json`).
type Report struct {
	CheckedAt    time.Time     `json:"checkedAt"`
	GracePeriod  string        `json:"gracePeriod"`
	Summary      Summary       `json:"summary"`
	Leaks        []Leak        `json:"leaks"`
	Duplicates   []Duplicate   `json:"duplicates"`
	OrphanBlocks []OrphanBlock `json:"orphanBlocks"`
	// BlocksWithoutPool are blocks no IPPool covers: left by a forced pool delete until their
	// addresses are released, or by a pool delete interrupted before its empty blocks were freed.
	BlocksWithoutPool []OrphanBlock   `json:"blocksWithoutPool"`
	Inconsistencies   []Inconsistency `json:"inconsistencies"`
}

// Summary counts what Check looked at.
type Summary struct {
	Blocks      int `json:"blocks"`
	Allocations int `json:"allocations"`
	Handles     int `json:"handles"`
	Nodes       int `json:"nodes"`
	Endpoints   int `json:"endpoints"`
}

// Leak is an allocation whose owner no longer exists.
type Leak struct {
	IP      netip.Addr        `json:"ip"`
	Block   netip.Prefix      `json:"block"`
	Handle  string            `json:"handle"`
	Attrs   map[string]string `json:"attrs,omitempty"`
	Reason  string            `json:"reason"`
	Created time.Time         `json:"created,omitzero"`
}

// Duplicate is an address more than one owner claims.
type Duplicate struct {
	IP     netip.Addr `json:"ip"`
	Handle string     `json:"handle,omitempty"`
	Owners []string   `json:"owners"` // workload endpoints as namespace/name
}

// OrphanBlock is a block affine to a node that does not exist, or (in BlocksWithoutPool) a block
// outside every pool, Node then being its host if it has one.
type OrphanBlock struct {
	Block netip.Prefix `json:"block"`
	Node  string       `json:"node,omitempty"`
	InUse int          `json:"inUse"`
}

// Inconsistency is a disagreement between IPAM records (blocks, handles, affinities, endpoints)
// that is not a leak; reported for a person to look at, never repaired automatically.
type Inconsistency struct {
	Key    string `json:"key"`
	Detail string `json:"detail"`
}

// Clean reports whether the check found nothing.
func (r *Report) Clean() bool {
	return len(r.Leaks) == 0 && len(r.Duplicates) == 0 && len(r.OrphanBlocks) == 0 &&
		len(r.BlocksWithoutPool) == 0 && len(r.Inconsistencies) == 0
}

// world is the resource side of a check: which nodes and workload endpoints exist.
type world struct {
	nodes map[string]bool
	weps  map[string]*api.WorkloadEndpoint // namespace/name
	byIP  map[netip.Addr][]string
	byPod map[string][]string // namespace/pod
}

func (a *Allocator) loadWorld(ctx context.Context) (*world, error) {
	if a.ds == nil {
		return nil, fmt.Errorf("load nodes and endpoints: no datastore client")
	}
	w := &world{nodes: map[string]bool{}, weps: map[string]*api.WorkloadEndpoint{},
		byIP: map[netip.Addr][]string{}, byPod: map[string][]string{}}
	nodes, err := a.ds.List(ctx, "Node", "")
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for _, r := range nodes {
		w.nodes[r.GetObjectMeta().Name] = true
	}
	weps, err := a.ds.List(ctx, "WorkloadEndpoint", "")
	if err != nil {
		return nil, fmt.Errorf("list workload endpoints: %w", err)
	}
	for _, r := range weps {
		wep, ok := r.(*api.WorkloadEndpoint)
		if !ok {
			continue
		}
		k := wep.Metadata.Namespace + "/" + wep.Metadata.Name
		w.weps[k] = wep
		if wep.Spec.Pod != "" {
			pk := wep.Metadata.Namespace + "/" + wep.Spec.Pod
			w.byPod[pk] = append(w.byPod[pk], k)
		}
		for _, n := range wep.Spec.IPNetworks {
			if p, err := netip.ParsePrefix(n); err == nil {
				w.byIP[p.Addr()] = append(w.byIP[p.Addr()], k)
			} else if ip, err := netip.ParseAddr(n); err == nil {
				w.byIP[ip] = append(w.byIP[ip], k)
			}
		}
	}
	return w, nil
}

// owner finds the endpoint an allocation's attributes name. identified is false when the
// attributes name no workload at all.
func (w *world) owner(attrs map[string]string) (key string, identified bool) {
	ns, cid := attrs[AttrNamespace], attrs[AttrContainerID]
	// A pod recreated under the same name has a new container: the old address is not its.
	sameContainer := func(k string) bool {
		return cid == "" || w.weps[k].Spec.ContainerID == "" || w.weps[k].Spec.ContainerID == cid
	}
	if name := attrs[AttrWorkload]; name != "" {
		k := ns + "/" + name
		if _, ok := w.weps[k]; ok && sameContainer(k) {
			return k, true
		}
		return "", true
	}
	pod := attrs[AttrPod]
	if pod == "" {
		return "", false
	}
	for _, k := range w.byPod[ns+"/"+pod] {
		if sameContainer(k) {
			return k, true
		}
	}
	return "", true
}

// leakReason says why an allocation has no live owner, or "" if it has one.
func (w *world) leakReason(ip netip.Addr, attrs map[string]string) string {
	if len(w.byIP[ip]) > 0 {
		return ""
	}
	k, identified := w.owner(attrs)
	if k != "" {
		return ""
	}
	if node := attrs[AttrNode]; node != "" && !w.nodes[node] {
		return fmt.Sprintf("node %s does not exist", node)
	}
	if attrs[AttrIPAMOnly] == "true" {
		return "" // no endpoint is ever written for it: only a missing node tells
	}
	if identified {
		return fmt.Sprintf("workload endpoint of %s/%s does not exist", attrs[AttrNamespace], firstNonEmpty(attrs[AttrWorkload], attrs[AttrPod]))
	}
	return "no workload endpoint uses the address"
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// Check compares IPAM records with Nodes and WorkloadEndpoints.
func (a *Allocator) Check(ctx context.Context, opts CheckOptions) (*Report, error) {
	grace := opts.GracePeriod
	if grace == 0 {
		grace = DefaultGracePeriod
	}
	grace = max(grace, 0)
	now := a.now().UTC()
	r := &Report{CheckedAt: now, GracePeriod: grace.String(), Leaks: []Leak{}, Duplicates: []Duplicate{},
		OrphanBlocks: []OrphanBlock{}, BlocksWithoutPool: []OrphanBlock{}, Inconsistencies: []Inconsistency{}}
	w, err := a.loadWorld(ctx)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	pools, unreadable, err := a.readablePools(ctx)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if unreadable != nil {
		// Which blocks the unreadable pool covered is unknown, so no block is called pool-less
		// (release --from-report would delete such blocks); the rest of the check still runs.
		r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: datastore.KeyPrefix + "ippools/",
			Detail: strings.ReplaceAll(unreadable.Error(), "\n", "; ") + "; blocks without a pool are not reported until it is fixed"})
	}
	// One range read is one revision: blocks, handles and affinities are compared as of the same
	// moment, so allocations running meanwhile cannot look like inconsistencies.
	all, _, err := a.store.List(ctx, Prefix)
	if err != nil {
		return nil, fmt.Errorf("check: list IPAM records: %w", err)
	}
	var blockKVs, handleKVs, affKVs []kv.KV
	for _, e := range all {
		switch {
		case strings.HasPrefix(e.Key, BlockPrefix):
			blockKVs = append(blockKVs, e)
		case strings.HasPrefix(e.Key, HandlePrefix):
			handleKVs = append(handleKVs, e)
		case strings.HasPrefix(e.Key, AffinityPrefix):
			affKVs = append(affKVs, e)
		default:
			r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: e.Key, Detail: "unknown IPAM key"})
		}
	}
	r.Summary = Summary{Blocks: len(blockKVs), Handles: len(handleKVs), Nodes: len(w.nodes), Endpoints: len(w.weps)}
	handles := map[string]*Handle{}
	for _, e := range handleKVs {
		h, err := DecodeHandle(e.Value)
		if err != nil {
			r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: e.Key, Detail: err.Error()})
			continue
		}
		handles[h.ID] = h
	}
	affinities := map[string]bool{} // node|cidr
	for _, e := range affKVs {
		node, cidr, err := ParseAffinityKey(e.Key)
		if err != nil {
			r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: e.Key, Detail: err.Error()})
			continue
		}
		affinities[node+"|"+cidr.String()] = true
	}
	seenCounts := map[string]map[string]int{} // handle -> block -> count
	allocated := map[netip.Addr]bool{}
	var blocks []*Block
	for _, e := range blockKVs {
		b, err := DecodeBlock(e.Value)
		if err != nil {
			r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: e.Key, Detail: err.Error()})
			continue
		}
		blocks = append(blocks, b)
		if unreadable == nil && !coveredByPool(pools, b.CIDR) {
			r.BlocksWithoutPool = append(r.BlocksWithoutPool, OrphanBlock{Block: b.CIDR, Node: b.Host(), InUse: b.UsedCount()})
		}
		if host := b.Host(); host != "" {
			if !w.nodes[host] {
				r.OrphanBlocks = append(r.OrphanBlocks, OrphanBlock{Block: b.CIDR, Node: host, InUse: b.UsedCount()})
			}
			if !affinities[host+"|"+b.CIDR.String()] {
				r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: e.Key, Detail: "block names host " + host + " but no affinity key exists"})
			}
			delete(affinities, host+"|"+b.CIDR.String())
		}
		for _, al := range b.Allocated() {
			r.Summary.Allocations++
			allocated[al.IP] = true
			if seenCounts[al.Handle] == nil {
				seenCounts[al.Handle] = map[string]int{}
			}
			seenCounts[al.Handle][b.CIDR.String()]++
			h := handles[al.Handle]
			var created time.Time
			if h != nil {
				created = h.Created
			}
			if reason := w.leakReason(al.IP, al.Attrs); reason != "" && now.Sub(created) > grace {
				r.Leaks = append(r.Leaks, Leak{IP: al.IP, Block: b.CIDR, Handle: al.Handle, Attrs: al.Attrs, Reason: reason, Created: created})
			}
			owners := slices.Clone(w.byIP[al.IP])
			if k, _ := w.owner(al.Attrs); k != "" && !slices.Contains(owners, k) {
				owners = append(owners, k)
			}
			if len(owners) > 1 {
				slices.Sort(owners)
				r.Duplicates = append(r.Duplicates, Duplicate{IP: al.IP, Handle: al.Handle, Owners: owners})
			}
		}
	}
	for i := range blocks {
		for j := i + 1; j < len(blocks); j++ {
			if blocks[i].CIDR.Overlaps(blocks[j].CIDR) {
				r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: BlockKey(blocks[j].CIDR),
					Detail: "overlaps block " + blocks[i].CIDR.String()})
			}
		}
	}
	for k := range affinities {
		r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: AffinityPrefix + k, Detail: "affinity without a block naming that host"})
	}
	for id, h := range handles {
		for blk, n := range h.Blocks {
			if got := seenCounts[id][blk]; got != n {
				r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: HandleKey(id),
					Detail: fmt.Sprintf("handle records %d addresses in %s, the block holds %d", n, blk, got)})
			}
		}
	}
	for id, counts := range seenCounts {
		if h := handles[id]; h == nil {
			r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: HandleKey(id), Detail: fmt.Sprintf("no handle record for addresses in %d blocks", len(counts))})
		} else {
			for blk, n := range counts {
				if _, ok := h.Blocks[blk]; !ok {
					r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: HandleKey(id),
						Detail: fmt.Sprintf("handle records no addresses in %s, the block holds %d", blk, n)})
				}
			}
		}
	}
	for ip, ks := range w.byIP {
		if !allocated[ip] {
			for _, k := range ks {
				r.Inconsistencies = append(r.Inconsistencies, Inconsistency{Key: k, Detail: "endpoint address " + ip.String() + " is not allocated"})
			}
		}
	}
	slices.SortFunc(r.Leaks, func(x, y Leak) int { return x.IP.Compare(y.IP) })
	slices.SortFunc(r.Duplicates, func(x, y Duplicate) int { return x.IP.Compare(y.IP) })
	slices.SortFunc(r.OrphanBlocks, func(x, y OrphanBlock) int { return comparePrefix(x.Block, y.Block) })
	slices.SortFunc(r.BlocksWithoutPool, func(x, y OrphanBlock) int { return comparePrefix(x.Block, y.Block) })
	slices.SortFunc(r.Inconsistencies, func(x, y Inconsistency) int {
		if x.Key != y.Key {
			if x.Key < y.Key {
				return -1
			}
			return 1
		}
		if x.Detail < y.Detail {
			return -1
		} else if x.Detail > y.Detail {
			return 1
		}
		return 0
	})
	return r, nil
}

// RepairResult says what ReleaseFromReport did with each entry.
type RepairResult struct {
	Released    []netip.Addr   `json:"released"`
	FreedBlocks []netip.Prefix `json:"freedBlocks"`
	Skipped     []Skipped      `json:"skipped"`
}

// Skipped is a report entry left alone, and why.
type Skipped struct {
	Item   string `json:"item"`
	Reason string `json:"reason"`
}

// ReleaseFromReport releases the leaks and orphan blocks of a report after checking each again
// against fresh data: the address must still be held by the same handle and still have no owner,
// the node must still be missing. The release itself is conditional on the handle, so an address
// reassigned in between is never freed. Duplicates and inconsistencies are left to a person.
func (a *Allocator) ReleaseFromReport(ctx context.Context, r *Report) (RepairResult, error) {
	res := RepairResult{Released: []netip.Addr{}, FreedBlocks: []netip.Prefix{}, Skipped: []Skipped{}}
	w, err := a.loadWorld(ctx)
	if err != nil {
		return res, fmt.Errorf("release from report: %w", err)
	}
	var errs []error
	for _, l := range r.Leaks {
		ok, reason, err := a.releaseLeak(ctx, w, l.IP, l.Handle)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			res.Released = append(res.Released, l.IP)
		default:
			res.Skipped = append(res.Skipped, Skipped{Item: l.IP.String(), Reason: reason})
		}
	}
	for _, o := range r.OrphanBlocks {
		if w.nodes[o.Node] {
			res.Skipped = append(res.Skipped, Skipped{Item: o.Block.String(), Reason: "node " + o.Node + " exists again"})
			continue
		}
		freed, usage, err := a.releaseAffinity(ctx, o.Node, o.Block)
		switch {
		case err != nil:
			errs = append(errs, err)
		case freed:
			res.FreedBlocks = append(res.FreedBlocks, o.Block)
		case usage != nil:
			// Its owner is cleared, but it stays: say so rather than nothing.
			res.Skipped = append(res.Skipped, Skipped{Item: o.Block.String(),
				Reason: fmt.Sprintf("owner %s removed, but it still holds %d allocated addresses; the block is deleted when they are released", o.Node, usage.Used)})
		}
	}
	if len(r.BlocksWithoutPool) > 0 {
		pools, err := a.loadPools(ctx)
		if err != nil {
			return res, errors.Join(append(errs, fmt.Errorf("release from report: %w", err))...)
		}
		for _, o := range r.BlocksWithoutPool {
			freed, skip, err := a.releasePoollessBlock(ctx, pools, o.Block)
			switch {
			case err != nil:
				errs = append(errs, err)
			case freed:
				res.FreedBlocks = append(res.FreedBlocks, o.Block)
			default:
				res.Skipped = append(res.Skipped, Skipped{Item: o.Block.String(), Reason: skip})
			}
		}
	}
	for _, d := range r.Duplicates {
		res.Skipped = append(res.Skipped, Skipped{Item: d.IP.String(), Reason: "claimed by several owners; resolve by hand"})
	}
	return res, errors.Join(errs...)
}

// releaseLeak re-checks one leaked address and frees it if its owner is still missing.
func (a *Allocator) releaseLeak(ctx context.Context, w *world, ip netip.Addr, handle string) (bool, string, error) {
	info, err := a.ShowIP(ctx, ip)
	if err != nil {
		return false, "", err
	}
	if !info.Allocated {
		return false, "no longer allocated", nil
	}
	if info.Handle != handle {
		return false, "now held by handle " + info.Handle, nil
	}
	if reason := w.leakReason(ip, info.Attrs); reason == "" {
		return false, "has an owner again", nil
	}
	ok, err := a.releaseIfHandle(ctx, ip, handle)
	if err != nil {
		return false, "", fmt.Errorf("release %v: %w", ip, err)
	}
	if !ok {
		return false, "changed while releasing", nil
	}
	return true, "", nil
}

// ReleaseIPChecked frees one address only if nothing owns it: no workload endpoint lists it and
// the endpoint or node its attributes name is gone. It is what `terracectl ipam release --ip` does.
func (a *Allocator) ReleaseIPChecked(ctx context.Context, ip netip.Addr) error {
	w, err := a.loadWorld(ctx)
	if err != nil {
		return fmt.Errorf("release %v: %w", ip, err)
	}
	info, err := a.ShowIP(ctx, ip)
	if err != nil {
		return fmt.Errorf("release %v: %w", ip, err)
	}
	if !info.Allocated {
		return fmt.Errorf("release %v: %w", ip, ErrNotAllocated)
	}
	ok, reason, err := a.releaseLeak(ctx, w, ip, info.Handle)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("release %v: refused: %s: %w", ip, reason, ErrAddressInUse)
	}
	return nil
}

func coveredByPool(pools []*pool, b netip.Prefix) bool {
	return slices.ContainsFunc(pools, func(p *pool) bool { return p.cidr.Overlaps(b) })
}

// releasePoollessBlock frees a block no pool covers if it is empty, and otherwise takes it from
// its host so that the release of its last address deletes it.
func (a *Allocator) releasePoollessBlock(ctx context.Context, pools []*pool, cidr netip.Prefix) (bool, string, error) {
	if coveredByPool(pools, cidr) {
		return false, "a pool covers it again", nil
	}
	_, b, err := a.readBlock(ctx, cidr, true)
	if err != nil {
		return false, "", err
	}
	if b == nil {
		return false, "already gone", nil
	}
	var freed bool
	if host := b.Host(); host != "" {
		freed, _, err = a.releaseAffinity(ctx, host, cidr)
	} else {
		freed, err = a.deleteEmptyBlock(ctx, cidr)
	}
	if err != nil || freed {
		return freed, "", err
	}
	return false, fmt.Sprintf("still holds %d allocated addresses; the block is deleted when they are released", b.UsedCount()), nil
}

package agent

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/terracenet/terrace/bgp/config"
	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

// Kinds are the resource kinds the agent follows.
var Kinds = []string{"Node", "BGPPeer", "BGPFilter", "BGPConfiguration", "IPPool"}

// inputs is the agent's cache of everything bgp/config.Compute looks at. The two syncers write it
// from their own goroutines; the compute loop reads it.
type inputs struct {
	node string
	log  *slog.Logger
	kick func()

	mu         sync.Mutex
	resources  map[string]api.Resource // kind/namespace/name
	blocks     map[string]*ipam.Block  // etcd key
	dsStatus   kv.Status
	ipamStatus kv.Status
}

func newInputs(node string, log *slog.Logger, kick func()) *inputs {
	return &inputs{node: node, log: log, kick: kick,
		resources: map[string]api.Resource{}, blocks: map[string]*ipam.Block{}}
}

func resKey(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

// inSync reports whether both syncers have delivered a complete snapshot: computing before that
// would withdraw prefixes and peers that are merely not read yet.
func (in *inputs) inSync() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.dsStatus == kv.StatusInSync && in.ipamStatus == kv.StatusInSync
}

// resourceCallbacks adapts the typed datastore syncer.
type resourceCallbacks struct{ in *inputs }

func (c resourceCallbacks) OnStatus(s kv.Status) {
	c.in.mu.Lock()
	c.in.dsStatus = s
	c.in.mu.Unlock()
	c.in.kick()
}

func (c resourceCallbacks) OnUpdates(us []datastore.ResourceUpdate) {
	c.in.mu.Lock()
	for _, u := range us {
		k := resKey(u.Kind, u.Namespace, u.Name)
		if u.Type == kv.UpdateDelete || u.Resource == nil {
			delete(c.in.resources, k)
			continue
		}
		c.in.resources[k] = u.Resource
	}
	c.in.mu.Unlock()
	c.in.kick()
}

// blockCallbacks adapts the raw syncer over IPAM's blocks.
type blockCallbacks struct{ in *inputs }

func (c blockCallbacks) OnStatus(s kv.Status) {
	c.in.mu.Lock()
	c.in.ipamStatus = s
	c.in.mu.Unlock()
	c.in.kick()
}

func (c blockCallbacks) OnUpdates(us []kv.Update) {
	c.in.mu.Lock()
	for _, u := range us {
		if u.Type == kv.UpdateDelete {
			delete(c.in.blocks, u.KV.Key)
			continue
		}
		b, err := ipam.DecodeBlock(u.KV.Value)
		if err != nil {
			// A block this version cannot read (written by a newer one during an upgrade, or
			// damaged) is not a block that went away: withdrawing it would cut every other host
			// off from its pods. The last version read stays in force; a block never read is
			// not advertised.
			c.in.log.Warn("unreadable IPAM block: keeping the last version read", "key", u.KV.Key, "err", err,
				"have_previous", c.in.blocks[u.KV.Key] != nil)
			continue
		}
		c.in.blocks[u.KV.Key] = b
	}
	c.in.mu.Unlock()
	c.in.kick()
}

// snapshot builds the computation's input from the cache.
func (in *inputs) snapshot(pw config.PasswordFunc) config.Input {
	in.mu.Lock()
	defer in.mu.Unlock()
	ci := config.Input{NodeName: in.node, Password: pw}
	keys := make([]string, 0, len(in.resources))
	for k := range in.resources {
		keys = append(keys, k)
	}
	slices.Sort(keys) // stable order: Compute's warnings and peer order do not flap
	for _, k := range keys {
		switch r := in.resources[k].(type) {
		case *api.Node:
			ci.Nodes = append(ci.Nodes, r)
		case *api.BGPPeer:
			ci.Peers = append(ci.Peers, r)
		case *api.BGPFilter:
			ci.Filters = append(ci.Filters, r)
		case *api.BGPConfiguration:
			ci.Configs = append(ci.Configs, r)
		case *api.IPPool:
			ci.Pools = append(ci.Pools, r)
		}
	}
	ci.Blocks, ci.Borrowed = nodeBlocks(in.node, in.blocks)
	return ci
}

// nodeBlocks returns the blocks affine to node and the addresses node holds in other blocks.
func nodeBlocks(node string, blocks map[string]*ipam.Block) ([]netip.Prefix, []netip.Addr) {
	var own []netip.Prefix
	var borrowed []netip.Addr
	for _, b := range blocks {
		if b.Host() == node {
			own = append(own, b.CIDR)
			continue
		}
		for _, al := range b.Allocated() {
			if al.Attrs[ipam.AttrNode] == node {
				borrowed = append(borrowed, al.IP)
			}
		}
	}
	slices.SortFunc(own, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	slices.SortFunc(borrowed, netip.Addr.Compare)
	return own, borrowed
}

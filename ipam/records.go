package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"
)

// Key prefixes of the IPAM records (CONVENTIONS.md).
const (
	Prefix           = "/terrace/ipam/v1/"
	BlockPrefix      = Prefix + "blocks/"
	AffinityPrefix   = Prefix + "affinities/"
	HandlePrefix     = Prefix + "handles/"
	affinityPending  = "pending"
	affinityConfirmd = "confirmed"
)

// Attribute keys the allocator and the leak check understand. Callers may add others.
const (
	AttrNode        = "node"        // set by AutoAssign/AssignIP from the Node argument
	AttrNamespace   = "namespace"   // namespace of the workload
	AttrPod         = "pod"         // pod / workload name
	AttrContainerID = "containerID" // orchestrator container ID
	AttrWorkload    = "wep"         // name of the WorkloadEndpoint resource, when known
	// AttrIPAMOnly "true": assigned for another CNI plugin through terrace-ipam alone, so no
	// WorkloadEndpoint will ever name the address and its absence proves nothing.
	AttrIPAMOnly = "ipamOnly"
)

// cidrSegment writes a prefix as one key segment ("/" becomes "-").
func cidrSegment(p netip.Prefix) string { return strings.Replace(p.String(), "/", "-", 1) }

func parseCIDRSegment(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("parse cidr segment %q: no '-'", s)
	}
	p, err := netip.ParsePrefix(s[:i] + "/" + s[i+1:])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse cidr segment %q: %w", s, err)
	}
	return p, nil
}

// BlockKey is the etcd key of the block covering cidr.
func BlockKey(cidr netip.Prefix) string { return BlockPrefix + cidrSegment(cidr) }

// ParseBlockKey returns the block CIDR a block key names.
func ParseBlockKey(key string) (netip.Prefix, error) {
	rest, ok := strings.CutPrefix(key, BlockPrefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("parse block key %q: wrong prefix", key)
	}
	return parseCIDRSegment(rest)
}

// AffinityKey is the etcd key recording that node owns block cidr.
func AffinityKey(node string, cidr netip.Prefix) string {
	return AffinityPrefix + node + "/" + cidrSegment(cidr)
}

// ParseAffinityKey returns the node and block an affinity key names.
func ParseAffinityKey(key string) (node string, cidr netip.Prefix, err error) {
	rest, ok := strings.CutPrefix(key, AffinityPrefix)
	if !ok {
		return "", netip.Prefix{}, fmt.Errorf("parse affinity key %q: wrong prefix", key)
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", netip.Prefix{}, fmt.Errorf("parse affinity key %q: no node", key)
	}
	cidr, err = parseCIDRSegment(rest[i+1:])
	return rest[:i], cidr, err
}

// HandleKey is the etcd key of a handle.
func HandleKey(id string) string { return HandlePrefix + id }

// Affinity is the value of an affinity key. A claim is written pending together with its block and
// confirmed afterwards; a pending affinity whose block names the same host is finished by the next
// reader, one whose block does not is stale and removed.
type Affinity struct {
	State string `json:"state"`
	Node  string `json:"node"`
	CIDR  string `json:"cidr"`
}

// Handle records which blocks hold a handle's addresses and how many in each, so release by handle
// reads only those blocks.
type Handle struct {
	ID      string         `json:"handleID"`
	Blocks  map[string]int `json:"blocks"`
	Created time.Time      `json:"created"`
}

// Add records n more addresses in block.
func (h *Handle) Add(block netip.Prefix, n int) {
	if h.Blocks == nil {
		h.Blocks = map[string]int{}
	}
	h.Blocks[block.String()] += n
}

// Remove records n fewer addresses in block.
func (h *Handle) Remove(block netip.Prefix, n int) {
	k := block.String()
	if _, ok := h.Blocks[k]; !ok {
		return
	}
	h.Blocks[k] -= n
	if h.Blocks[k] <= 0 {
		delete(h.Blocks, k)
	}
}

// Count is the number of addresses the handle holds.
func (h *Handle) Count() int {
	n := 0
	for _, c := range h.Blocks {
		n += c
	}
	return n
}

func (h *Handle) clone() *Handle {
	c := *h
	c.Blocks = maps.Clone(h.Blocks)
	return &c
}

// DecodeHandle parses a stored handle.
func DecodeHandle(data []byte) (*Handle, error) {
	var h Handle
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("decode handle: %w", err)
	}
	for k, n := range h.Blocks {
		if _, err := netip.ParsePrefix(k); err != nil || n <= 0 {
			return nil, fmt.Errorf("decode handle %q: bad block entry %q=%d", h.ID, k, n)
		}
	}
	return &h, nil
}

// DecodeAffinity parses a stored affinity.
func DecodeAffinity(data []byte) (*Affinity, error) {
	var a Affinity
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("decode affinity: %w", err)
	}
	if a.State != affinityPending && a.State != affinityConfirmd {
		return nil, fmt.Errorf("decode affinity: unknown state %q", a.State)
	}
	return &a, nil
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		// Only plain structs of strings, ints and maps are marshalled here.
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return data
}

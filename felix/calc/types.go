package calc

import (
	"net/netip"

	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// TableID names one iptables table of one IP version.
type TableID struct {
	IPVersion int    // 4 or 6
	Table     string // "filter", "nat", or (IPv6) "raw"
}

// IPSet is one desired set; Members are canonical (ipsets.CanonicalMember) and sorted.
type IPSet struct {
	Meta    ipsets.Meta
	Members []string
}

// TableState is the desired content of one table: Terrace's chains and the rules it keeps at the
// top of kernel chains (jumps into trc- chains).
type TableState struct {
	Chains     map[string][]iptables.Rule
	Insertions map[string][]iptables.Rule
}

// EndpointStatus identifies a local endpoint and the revision of its policy: once the Delta that
// carried this revision is applied, the endpoint's policy is in the kernel.
type EndpointStatus struct {
	Kind      string // "WorkloadEndpoint" or "HostEndpoint"
	Namespace string
	Name      string
	Interface string
	Revision  string
}

// Desired is a full snapshot of the calculated dataplane. It does not depend on the order in
// which updates arrived, only on the resources present.
type Desired struct {
	IPSets    map[string]IPSet
	Tables    map[TableID]*TableState
	Routes    map[netip.Prefix]routes.Target
	Endpoints map[string]EndpointStatus // by EndpointKey
	// AppendInsertions: every table's insertions stand at the end of their kernel chains
	// (FelixConfiguration chainInsertMode Append) rather than the top.
	AppendInsertions bool
}

// IPSetMembers is an incremental change to a set that already existed at the previous Flush.
type IPSetMembers struct {
	Name    string
	Added   []string
	Removed []string
}

// ChainRef names one chain (or kernel chain, for insertions) in one table.
type ChainRef struct {
	Table TableID
	Name  string
}

// ChainUpdate is a new or changed chain, or a kernel chain's new insertions.
type ChainUpdate struct {
	Table TableID
	Chain iptables.Chain
}

// Delta is what changed since the previous Flush. Writers apply it in this order so nothing is
// referenced before it exists: IPSetsReplaced and IPSetMembers, then chains and insertions, then
// IPSetsRemoved; routes are independent.
type Delta struct {
	IPSetsReplaced []IPSet // new sets (full content)
	IPSetMembers   []IPSetMembers
	IPSetsRemoved  []string

	ChainsUpdated     []ChainUpdate
	ChainsRemoved     []ChainRef
	InsertionsUpdated []ChainUpdate // Chain.Name is the kernel chain; empty Rules removes them
	AppendInsertions  *bool         // set when chainInsertMode changed: true moves every table's insertions to the end

	RoutesSet     map[netip.Prefix]routes.Target
	RoutesRemoved []netip.Prefix

	Endpoints        []EndpointStatus // local endpoints whose revision changed (or that are new)
	EndpointsRemoved []string         // EndpointKeys
}

// Empty reports whether the delta changes nothing.
func (d *Delta) Empty() bool {
	return len(d.IPSetsReplaced) == 0 && len(d.IPSetMembers) == 0 && len(d.IPSetsRemoved) == 0 &&
		len(d.ChainsUpdated) == 0 && len(d.ChainsRemoved) == 0 && len(d.InsertionsUpdated) == 0 && d.AppendInsertions == nil &&
		len(d.RoutesSet) == 0 && len(d.RoutesRemoved) == 0 && len(d.Endpoints) == 0 && len(d.EndpointsRemoved) == 0
}

// Stats are cumulative work counters, so tests and metrics can see what an update recomputed.
type Stats struct {
	SelectorEvals     int // selector-ipset evaluations against one endpoint or network set
	PolicyMatchEvals  int // policy selector evaluations against one local endpoint
	PolicyRenders     int // policies whose chains were rendered
	EndpointRenders   int // local endpoints whose chains were rendered
	IPSetsCreated     int // sets created (first populated by evaluating every labelled entity)
	IPSetMemberAdds   int
	IPSetMemberRemove int
	DispatchRenders   int
	Flushes           int
}

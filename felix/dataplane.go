package felix

import (
	"context"
	"net/netip"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/fastpath"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/felix/dataplane/sysctl"
)

// Calculator is what the agent needs of felix/calc; *calc.Calculator implements it.
type Calculator interface {
	OnUpdate(kind, namespace, name string, r api.Resource)
	SetBlocks(blocks []netip.Prefix)
	SetHostInterfaces(ifs map[string][]netip.Addr)
	Flush() *calc.Delta
}

// IPSets is the ipset writer (*ipsets.Registry).
type IPSets interface {
	AddOrReplace(m ipsets.Meta, members []string) error
	AddMembers(name string, members []string) error
	RemoveMembers(name string, members []string) error
	Remove(name string)
	SetInSync()
	ApplyUpdates(ctx context.Context) error
	ApplyDeletions(ctx context.Context) error
	Resync(ctx context.Context) error
}

// Table is the writer of one iptables table of one IP version (*iptables.Table).
type Table interface {
	UpdateChain(c iptables.Chain) error
	RemoveChain(name string)
	SetInsertions(kernelChain string, rules []iptables.Rule) error
	SetAppend(atEnd bool)
	SetInSync()
	Apply(ctx context.Context) error
	Resync(ctx context.Context) error
}

// Routes is the writer of routes of protocol 80 (*routes.Writer).
type Routes interface {
	Set(p netip.Prefix, t routes.Target) error
	Delete(p netip.Prefix)
	DeviceChanged(dev string)
	SetInSync()
	Pending() []netip.Prefix
	Conflicts() []netip.Prefix
	Apply(ctx context.Context) error
	Resync(ctx context.Context) error
}

// Sysctls is the interface-settings writer (*sysctl.Manager). It deletes nothing, so it has no
// in-sync gate.
type Sysctls interface {
	SetHost(s []sysctl.Setting)
	SetInterface(ifname string, ipv4, ipv6 bool) error
	RemoveInterface(ifname string)
	InterfaceChanged(ifname string)
	Pending() []string
	Apply(ctx context.Context) error
	Resync(ctx context.Context) error
}

// FastPath is the forwarding fast path's writer (*fastpath.Writer): the workloads' IPv4
// addresses by interface, from the same routes the route writer programs, and the host's own
// interfaces.
type FastPath interface {
	SetWorkload(addr netip.Addr, dev string)
	DeleteWorkload(addr netip.Addr)
	SetHostInterfaces(names []string)
	DeviceChanged(dev string)
	Pending() []string
	Stats() (fastpath.Stats, error)
	Apply(ctx context.Context) error
	Resync(ctx context.Context) error
}

// Dataplane is the set of writers of one network namespace. Tables must hold every table calc
// can produce (filter and nat of each enabled IP version), so stale chains of a previous run are
// cleaned up even in a table that ends up empty.
type Dataplane struct {
	IPSets  IPSets
	Tables  map[calc.TableID]Table
	Routes  Routes
	Sysctls Sysctls // nil: interface settings are someone else's job
	// FastPath, nil when off, forwards established flows past iptables (felix/dataplane/fastpath).
	FastPath FastPath
	// AfterProgrammed, if set, runs once, after the first apply that programmed policy (the
	// clean-up of what must not go before the new state is in place).
	AfterProgrammed func(context.Context)
}

// Compile-time checks that the real writers fit.
var (
	_ Calculator = (*calc.Calculator)(nil)
	_ IPSets     = (*ipsets.Registry)(nil)
	_ Table      = (*iptables.Table)(nil)
	_ Routes     = (*routes.Writer)(nil)
	_ Sysctls    = (*sysctl.Manager)(nil)
	_ FastPath   = (*fastpath.Writer)(nil)
)

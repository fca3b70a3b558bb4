package felix

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/fastpath"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/felix/dataplane/sysctl"
)

// recorder is shared by the fake writers: one ordered log of calls, scripted failures and one
// lock over every fake's state, so tests can read the "kernel" while the agent runs.
type recorder struct {
	mu  sync.Mutex
	log []string
	// fail is the error of a writer's apply calls, by writer name, or of one call, by
	// "writer.op" (e.g. "ipsets.ApplyDeletions"), which wins.
	fail map[string]error
	// hooks run at the start of writer.op, before the lock is taken, so a test can hold one
	// writer's apply until another one has started.
	hooks sync.Map // "writer.op" => func()
}

// before runs the hook registered for writer.op, if any.
func (r *recorder) before(writer, op string) {
	if h, ok := r.hooks.Load(writer + "." + op); ok {
		h.(func())()
	}
}

func newRecorder() *recorder { return &recorder{fail: map[string]error{}} }

// call logs writer.op and returns the scripted failure; the caller holds r.mu.
func (r *recorder) call(writer, op string) error {
	r.log = append(r.log, writer+"."+op)
	if err, ok := r.fail[writer+"."+op]; ok {
		return err
	}
	if strings.HasPrefix(op, "Apply") || op == "Resync" {
		return r.fail[writer]
	}
	return nil
}

func (r *recorder) setFail(writer string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fail, writer)
	} else {
		r.fail[writer] = err
	}
}

func (r *recorder) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

func (r *recorder) count(call string) int {
	n := 0
	for _, c := range r.calls() {
		if c == call {
			n++
		}
	}
	return n
}

// fakeObjects is a writer's desired and "kernel" objects: apply copies desired in, and removes
// what is not desired only once in sync, as the real writers do.
type fakeObjects[V any] struct {
	name    string
	r       *recorder
	desired map[string]V
	kernel  map[string]V
	inSync  bool
}

func newFakeObjects[V any](name string, r *recorder) *fakeObjects[V] {
	return &fakeObjects[V]{name: name, r: r, desired: map[string]V{}, kernel: map[string]V{}}
}

func (f *fakeObjects[V]) update() {
	maps.Copy(f.kernel, f.desired)
}

func (f *fakeObjects[V]) deleteStale() {
	if !f.inSync {
		return
	}
	for k := range f.kernel {
		if _, ok := f.desired[k]; !ok {
			delete(f.kernel, k)
		}
	}
}

func (f *fakeObjects[V]) apply(op string) error {
	if err := f.r.call(f.name, op); err != nil {
		return err
	}
	f.update()
	f.deleteStale()
	return nil
}

// readAhead is a writer's read of the kernel off the loop. It is recorded as it starts, and its
// hook ("writer.Read") may then hold it.
func (f *fakeObjects[V]) readAhead() func(context.Context) {
	return func(context.Context) {
		f.r.mu.Lock()
		_ = f.r.call(f.name, "Read")
		f.r.mu.Unlock()
		f.r.before(f.name, "Read")
	}
}

func (f *fakeObjects[V]) kernelKeys() []string {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return slices.Sorted(maps.Keys(f.kernel))
}

func (f *fakeObjects[V]) inKernel(k string) (V, bool) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	v, ok := f.kernel[k]
	return v, ok
}

type fakeIPSets struct{ *fakeObjects[[]string] }

func (f fakeIPSets) AddOrReplace(m ipsets.Meta, members []string) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.desired[m.Name] = slices.Clone(members)
	return nil
}
func (f fakeIPSets) AddMembers(name string, members []string) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.desired[name] = append(f.desired[name], members...)
	return nil
}
func (f fakeIPSets) RemoveMembers(name string, members []string) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.desired[name] = slices.DeleteFunc(f.desired[name], func(m string) bool { return slices.Contains(members, m) })
	return nil
}
func (f fakeIPSets) Remove(name string) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	delete(f.desired, name)
}
func (f fakeIPSets) SetInSync() {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.r.call(f.name, "SetInSync")
	f.inSync = true
}
func (f fakeIPSets) ApplyUpdates(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	if err := f.r.call(f.name, "ApplyUpdates"); err != nil {
		return err
	}
	f.update()
	return nil
}
func (f fakeIPSets) ApplyDeletions(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	if err := f.r.call(f.name, "ApplyDeletions"); err != nil {
		return err
	}
	f.deleteStale()
	return nil
}

// Resync leaves unwanted sets to ApplyDeletions, as NewDataplane's registry does
// (ipsets.Options.DeferDeletions).
func (f fakeIPSets) Resync(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	if err := f.r.call(f.name, "Resync"); err != nil {
		return err
	}
	f.update()
	return nil
}

// ReadAhead records the read ("ipsets.Read", off the loop) and finishes as Resync does.
func (f fakeIPSets) ReadAhead() (read func(context.Context), finish func(context.Context) error) {
	return f.readAhead(), f.Resync
}

type fakeTable struct {
	*fakeObjects[[]iptables.Rule]
	inserts map[string][]iptables.Rule
	atEnd   *bool
}

func (f fakeTable) UpdateChain(c iptables.Chain) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.desired[c.Name] = slices.Clone(c.Rules)
	return nil
}
func (f fakeTable) RemoveChain(name string) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	delete(f.desired, name)
}
func (f fakeTable) SetInsertions(kc string, rules []iptables.Rule) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.inserts[kc] = rules
	return nil
}
func (f fakeTable) SetAppend(atEnd bool) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	*f.atEnd = atEnd
}
func (f fakeTable) SetInSync() {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.r.call(f.name, "SetInSync")
	f.inSync = true
}
func (f fakeTable) Apply(context.Context) error {
	f.r.before(f.name, "Apply")
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.apply("Apply")
}
func (f fakeTable) Resync(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.apply("Resync")
}

// ReadAhead records the read ("<table>.Read", off the loop) and finishes as Resync does.
func (f fakeTable) ReadAhead() (read func(context.Context), finish func(context.Context) error) {
	return f.readAhead(), f.Resync
}

type fakeRoutes struct {
	*fakeObjects[routes.Target]
	changed   []string
	conflicts []netip.Prefix // what Conflicts reports
}

func (f *fakeRoutes) Set(p netip.Prefix, t routes.Target) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.desired[p.String()] = t
	return nil
}
func (f *fakeRoutes) Delete(p netip.Prefix) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	delete(f.desired, p.String())
}
func (f *fakeRoutes) DeviceChanged(dev string) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.changed = append(f.changed, dev)
}
func (f *fakeRoutes) SetInSync() {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.r.call(f.name, "SetInSync")
	f.inSync = true
}
func (f *fakeRoutes) Pending() []netip.Prefix { return nil }
func (f *fakeRoutes) Conflicts() []netip.Prefix {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return slices.Clone(f.conflicts)
}
func (f *fakeRoutes) Apply(context.Context) error {
	f.r.before(f.name, "Apply")
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.apply("Apply")
}
func (f *fakeRoutes) Resync(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.apply("Resync")
}

type fakeSysctls struct {
	r      *recorder
	ifaces map[string][2]bool
}

func (f *fakeSysctls) SetHost([]sysctl.Setting) {}
func (f *fakeSysctls) SetInterface(ifname string, v4, v6 bool) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.ifaces[ifname] = [2]bool{v4, v6}
	return nil
}
func (f *fakeSysctls) RemoveInterface(ifname string) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	delete(f.ifaces, ifname)
}
func (f *fakeSysctls) InterfaceChanged(string) {}
func (f *fakeSysctls) Pending() []string       { return nil }
func (f *fakeSysctls) Apply(context.Context) error {
	f.r.before("sysctl", "Apply")
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.r.call("sysctl", "Apply")
}
func (f *fakeSysctls) Resync(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.r.call("sysctl", "Resync")
}

func (f *fakeSysctls) get(ifname string) ([2]bool, bool) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	v, ok := f.ifaces[ifname]
	return v, ok
}

// fakeFastPath keeps what the agent asks of the fast path writer.
type fakeFastPath struct {
	r         *recorder
	workloads map[netip.Addr]string
	hostIfs   []string
}

func (f *fakeFastPath) SetWorkload(addr netip.Addr, dev string) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.workloads[addr] = dev
}
func (f *fakeFastPath) DeleteWorkload(addr netip.Addr) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	delete(f.workloads, addr)
}
func (f *fakeFastPath) SetHostInterfaces(names []string) {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	f.hostIfs = names
}
func (f *fakeFastPath) DeviceChanged(string)           {}
func (f *fakeFastPath) Pending() []string              { return nil }
func (f *fakeFastPath) Stats() (fastpath.Stats, error) { return fastpath.Stats{Forwarded: 7}, nil }
func (f *fakeFastPath) Apply(context.Context) error {
	f.r.before("fastpath", "Apply")
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.r.call("fastpath", "Apply")
}
func (f *fakeFastPath) Resync(context.Context) error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.r.call("fastpath", "Resync")
}

func (f *fakeFastPath) snapshot() map[netip.Addr]string {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return maps.Clone(f.workloads)
}

type fakeDP struct {
	r        *recorder
	ipsets   fakeIPSets
	filter4  fakeTable
	nat4     fakeTable
	filter6  *fakeTable // nil: IPv4 only
	routes   *fakeRoutes
	sysctls  *fakeSysctls
	fastPath *fakeFastPath // nil: no fast path
}

var (
	filter4 = calc.TableID{IPVersion: 4, Table: "filter"}
	nat4    = calc.TableID{IPVersion: 4, Table: "nat"}
)

func newFakeDP() *fakeDP {
	r := newRecorder()
	return &fakeDP{
		r:       r,
		ipsets:  fakeIPSets{newFakeObjects[[]string]("ipsets", r)},
		filter4: fakeTable{newFakeObjects[[]iptables.Rule]("iptables-filter-v4", r), map[string][]iptables.Rule{}, new(bool)},
		nat4:    fakeTable{newFakeObjects[[]iptables.Rule]("iptables-nat-v4", r), map[string][]iptables.Rule{}, new(bool)},
		routes:  &fakeRoutes{fakeObjects: newFakeObjects[routes.Target]("routes", r)},
		sysctls: &fakeSysctls{r: r, ifaces: map[string][2]bool{}},
	}
}

func (f *fakeDP) dataplane() Dataplane {
	tables := map[calc.TableID]Table{filter4: f.filter4, nat4: f.nat4}
	if f.filter6 != nil {
		tables[calc.TableID{IPVersion: 6, Table: "filter"}] = *f.filter6
	}
	var fp FastPath
	if f.fastPath != nil {
		fp = f.fastPath
	}
	return Dataplane{
		IPSets:   f.ipsets,
		Tables:   tables,
		Routes:   f.routes,
		Sysctls:  f.sysctls,
		FastPath: fp,
		// Recorded, so tests see when the once-only clean-up ran.
		AfterProgrammed: func(context.Context) {
			f.r.mu.Lock()
			defer f.r.mu.Unlock()
			_ = f.r.call("dataplane", "AfterProgrammed")
		},
	}
}

// fakeCalc turns GlobalNetworkPolicies into chains, GlobalNetworkSets into ipsets and local
// WorkloadEndpoints into routes, and hands out the change at Flush like calc does.
type fakeCalc struct {
	node    string
	mu      sync.Mutex
	d       calc.Delta
	flushes int
	blocks  []netip.Prefix
	// routesOf: each endpoint's routes, withdrawn when it is deleted.
	routesOf map[string][]netip.Prefix
}

func (c *fakeCalc) OnUpdate(kind, namespace, name string, r api.Resource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch kind {
	case api.KindGlobalNetworkPolicy:
		ref := calc.ChainRef{Table: filter4, Name: "trc-pi-" + name}
		if r == nil {
			c.d.ChainsRemoved = append(c.d.ChainsRemoved, ref)
			return
		}
		c.d.ChainsUpdated = append(c.d.ChainsUpdated, calc.ChainUpdate{Table: filter4,
			Chain: iptables.Chain{Name: ref.Name, Rules: []iptables.Rule{{Action: "-j ACCEPT"}, {Action: "-j DROP"}}}})
	case api.KindGlobalNetworkSet:
		setName := "trc" + name
		if r == nil {
			c.d.IPSetsRemoved = append(c.d.IPSetsRemoved, setName)
			return
		}
		c.d.IPSetsReplaced = append(c.d.IPSetsReplaced, calc.IPSet{
			Meta:    ipsets.Meta{Name: setName, Type: ipsets.TypeHashNet, Family: ipsets.FamilyInet},
			Members: r.(*api.GlobalNetworkSet).Spec.Nets})
	case api.KindWorkloadEndpoint:
		w, _ := r.(*api.WorkloadEndpoint)
		key := namespace + "/" + name
		if w == nil {
			c.d.RoutesRemoved = append(c.d.RoutesRemoved, c.routesOf[key]...)
			delete(c.routesOf, key)
			return
		}
		if w.Spec.Node != c.node {
			return
		}
		if c.routesOf == nil {
			c.routesOf = map[string][]netip.Prefix{}
		}
		for _, n := range w.Spec.IPNetworks {
			if c.d.RoutesSet == nil {
				c.d.RoutesSet = map[netip.Prefix]routes.Target{}
			}
			p := netip.MustParsePrefix(n)
			c.d.RoutesSet[p] = routes.Target{Dev: w.Spec.InterfaceName}
			c.routesOf[key] = append(c.routesOf[key], p)
		}
	}
}

func (c *fakeCalc) SetBlocks(b []netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocks = slices.Clone(b)
}

func (c *fakeCalc) SetHostInterfaces(map[string][]netip.Addr) {}

func (c *fakeCalc) Flush() *calc.Delta {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushes++
	d := c.d
	c.d = calc.Delta{}
	return &d
}

func (c *fakeCalc) flushCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushes
}

// fakeStore is an in-memory StatusStore.
type fakeStore struct {
	mu      sync.Mutex
	data    map[string][]byte
	rev     int64
	fail    error
	puts    int // keys written
	commits int // transactions
}

func newFakeStore() *fakeStore { return &fakeStore{data: map[string][]byte{}} }

func (s *fakeStore) List(_ context.Context, prefix string) ([]kv.KV, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, 0, s.fail
	}
	var out []kv.KV
	for _, k := range slices.Sorted(maps.Keys(s.data)) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, kv.KV{Key: k, Value: s.data[k]})
		}
	}
	return out, s.rev, nil
}

func (s *fakeStore) Commit(_ context.Context, ops ...kv.Op) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	s.rev++
	s.commits++
	for _, op := range ops {
		switch op.Kind {
		case kv.OpDelete:
			delete(s.data, op.Key)
		case kv.OpPut:
			s.puts++
			s.data[op.Key] = slices.Clone(op.Value)
		default:
			return 0, fmt.Errorf("fake store: op kind %d not modelled", op.Kind)
		}
	}
	return s.rev, nil
}

func (s *fakeStore) get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	return string(v), ok
}

func (s *fakeStore) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

type routesTargetT = routes.Target

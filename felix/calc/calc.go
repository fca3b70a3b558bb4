package calc

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/selector"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// Config fixes what a Calculator cannot learn from resources.
type Config struct {
	NodeName string
	// IPv6 renders the IPv6 tables and sets too. It is fixed for a Calculator's life: the
	// component decides it at start from --felix-ipv6 and the node's addresses.
	IPv6 bool
}

// Calculator is the calculation graph. It is not safe for concurrent use: one loop feeds it
// updates and calls Flush.
type Calculator struct {
	cfg   Config
	stats Stats
	x     *setIndex

	policies map[string]*policy
	locals   map[string]*localEP
	byChains map[[2]string]map[string]bool // local endpoints by their chain names
	// Shared policy-list chains: users of each list, and each endpoint's [ingress, egress] lists.
	listUsers map[string]map[string]bool
	epLists   map[string][2]string
	pools     map[string]api.IPPoolSpec
	felix     map[string]*api.FelixConfigurationSpec // "default" and "node"
	blocks    map[netip.Prefix]bool
	hostIfs   map[string][]netip.Addr // this host's interfaces and their addresses (SetHostInterfaces)
	marks     marks                   // verdict mark bits, from iptablesMarkMask

	dirtyPolicies map[string]bool
	dirtyEPs      map[string]bool
	removedEPs    map[string]bool
	dispatchDirty bool
	staticDirty   bool
	natDirty      bool
	routesDirty   bool
	natSets       []string

	out outState
}

// outState is the current desired output plus what changed since the last Flush.
type outState struct {
	chains         map[ChainRef][]iptables.Rule
	inserts        map[ChainRef][]iptables.Rule
	routes         map[netip.Prefix]routes.Target
	eps            map[string]EndpointStatus
	changedChains  map[ChainRef]bool
	changedInserts map[ChainRef]bool
	changedRoutes  map[netip.Prefix]bool
	changedEPs     map[string]bool
	// appendInserts is FelixConfiguration chainInsertMode Append: insertions stand at the end
	// of their kernel chains.
	appendInserts, changedAppend bool
}

// New returns an empty Calculator for one node.
func New(cfg Config) *Calculator {
	c := &Calculator{
		cfg:           cfg,
		policies:      map[string]*policy{},
		locals:        map[string]*localEP{},
		byChains:      map[[2]string]map[string]bool{},
		listUsers:     map[string]map[string]bool{},
		epLists:       map[string][2]string{},
		pools:         map[string]api.IPPoolSpec{},
		felix:         map[string]*api.FelixConfigurationSpec{},
		blocks:        map[netip.Prefix]bool{},
		dirtyPolicies: map[string]bool{},
		dirtyEPs:      map[string]bool{},
		removedEPs:    map[string]bool{},
		marks:         defaultMarks,
		staticDirty:   true,
		natDirty:      true,
		dispatchDirty: true,
		out: outState{
			chains: map[ChainRef][]iptables.Rule{}, inserts: map[ChainRef][]iptables.Rule{},
			routes: map[netip.Prefix]routes.Target{}, eps: map[string]EndpointStatus{},
			changedChains: map[ChainRef]bool{}, changedInserts: map[ChainRef]bool{},
			changedRoutes: map[netip.Prefix]bool{}, changedEPs: map[string]bool{},
		},
	}
	c.x = newSetIndex(&c.stats)
	return c
}

// Stats returns the cumulative work counters.
func (c *Calculator) Stats() Stats { return c.stats }

// EndpointKey is how Desired.Endpoints and Delta name a local endpoint.
func EndpointKey(kind, namespace, name string) string { return kind + "/" + namespace + "/" + name }

func (c *Calculator) families() []int {
	if c.cfg.IPv6 {
		return []int{0, 1}
	}
	return []int{0}
}

// OnUpdate applies one resource update; r is nil when the resource was deleted. Kinds felix does
// not use are ignored, as are resources whose Go type does not match kind.
func (c *Calculator) OnUpdate(kind, namespace, name string, r api.Resource) {
	key := EndpointKey(kind, namespace, name)
	switch kind {
	case api.KindWorkloadEndpoint:
		w, _ := r.(*api.WorkloadEndpoint)
		if w == nil {
			c.updateEntity(key, nil, nil)
			return
		}
		labels := withLabel(w.Metadata.Labels, selector.NamespaceLabel, namespace)
		if w.Spec.Orchestrator != "" {
			labels[OrchestratorLabel] = w.Spec.Orchestrator
		}
		if w.Spec.ServiceAccountName != "" {
			labels[ServiceAccountLabel] = w.Spec.ServiceAccountName
		}
		l := &labelled{key: key, namespace: namespace, labels: labels, members: membersOf(w.Spec.IPNetworks)}
		for _, p := range w.Spec.Ports {
			l.ports = appendNamedPort(l.ports, p.Name, p.Protocol, p.Port)
		}
		var ep *localEP
		if w.Spec.Node == c.cfg.NodeName && w.Spec.InterfaceName != "" {
			ep = &localEP{key: key, kind: kind, namespace: namespace, name: name, iface: w.Spec.InterfaceName}
		}
		c.updateEntity(key, l, ep)
	case api.KindHostEndpoint:
		h, _ := r.(*api.HostEndpoint)
		if h == nil {
			c.updateEntity(key, nil, nil)
			return
		}
		l := &labelled{key: key, labels: maps.Clone(h.Metadata.Labels), members: membersOf(h.Spec.ExpectedIPs)}
		for _, p := range h.Spec.Ports {
			l.ports = appendNamedPort(l.ports, p.Name, p.Protocol, p.Port)
		}
		var ep *localEP
		switch {
		case h.Spec.Node != c.cfg.NodeName:
		case h.Spec.InterfaceName != "":
			ep = &localEP{key: key, kind: kind, name: name, iface: h.Spec.InterfaceName, host: true}
		case len(h.Spec.ExpectedIPs) > 0:
			// Placed on whichever interfaces hold one of the addresses (SetHostInterfaces).
			ep = &localEP{key: key, kind: kind, name: name, host: true}
			for _, s := range h.Spec.ExpectedIPs {
				if a, err := netip.ParseAddr(s); err == nil {
					ep.expected = append(ep.expected, a.Unmap())
				}
			}
			c.dispatchDirty = true
		}
		if old := c.locals[key]; old != nil && old.host && old.iface == "" {
			c.dispatchDirty = true
		}
		c.updateEntity(key, l, ep)
	case api.KindNetworkSet:
		s, _ := r.(*api.NetworkSet)
		if s == nil {
			c.updateEntity(key, nil, nil)
			return
		}
		labels := withLabel(s.Metadata.Labels, selector.NamespaceLabel, namespace)
		c.updateEntity(key, &labelled{key: key, namespace: namespace, labels: labels, members: membersOf(s.Spec.Nets)}, nil)
	case api.KindGlobalNetworkSet:
		s, _ := r.(*api.GlobalNetworkSet)
		if s == nil {
			c.updateEntity(key, nil, nil)
			return
		}
		c.updateEntity(key, &labelled{key: key, labels: maps.Clone(s.Metadata.Labels), members: membersOf(s.Spec.Nets)}, nil)
	case api.KindNetworkPolicy:
		var p *policy
		if np, _ := r.(*api.NetworkPolicy); np != nil {
			p = newPolicy(key, namespace, name, nil, &np.Spec)
		}
		c.updatePolicy(key, p)
	case api.KindGlobalNetworkPolicy:
		var p *policy
		if gnp, _ := r.(*api.GlobalNetworkPolicy); gnp != nil {
			p = newPolicy(key, "", name, &gnp.Spec, nil)
		}
		c.updatePolicy(key, p)
	case api.KindIPPool:
		if p, _ := r.(*api.IPPool); p != nil {
			c.pools[name] = p.Spec
		} else {
			delete(c.pools, name)
		}
		c.natDirty = true
	case api.KindFelixConfiguration:
		slot := ""
		switch name {
		case api.DefaultConfigName:
			slot = "default"
		case api.NodeConfigPrefix + c.cfg.NodeName:
			slot = "node"
		default:
			return
		}
		exclude := func(s *api.FelixConfigurationSpec) string { return s.InterfaceExclude }
		before := c.felixString(exclude, defaultInterfaceExclude)
		if f, _ := r.(*api.FelixConfiguration); f != nil {
			spec := f.Spec
			c.felix[slot] = &spec
		} else {
			delete(c.felix, slot)
		}
		c.staticDirty, c.natDirty = true, true
		if c.felixString(exclude, defaultInterfaceExclude) != before {
			c.dispatchDirty = true
		}
		m := c.felixMarks()
		for k, ep := range c.locals {
			if ep.host || m != c.marks {
				c.dirtyEPs[k] = true
			}
		}
		c.marks = m
	}
}

func appendNamedPort(ps []namedPort, name string, proto api.Protocol, port int) []namedPort {
	pn := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}
	if n, ok := proto.IANANumber(); ok && pn[n] != "" && name != "" && port > 0 && port < 65536 {
		ps = append(ps, namedPort{Name: name, Proto: pn[n], Port: port})
	}
	return ps
}

func withLabel(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+2)
	maps.Copy(out, m)
	out[k] = v
	return out
}

// SetHostInterfaces sets this host's interfaces (other than workloads' and loopback) and their
// addresses, so a HostEndpoint given by expectedIPs alone is placed on the interfaces that hold
// one of them, as Calico does. The map is not retained.
func (c *Calculator) SetHostInterfaces(ifs map[string][]netip.Addr) {
	next := make(map[string][]netip.Addr, len(ifs))
	for name, addrs := range ifs {
		if name == "lo" || strings.HasPrefix(name, WorkloadIfacePrefix) {
			continue
		}
		as := make([]netip.Addr, len(addrs))
		for i, a := range addrs {
			as[i] = a.Unmap()
		}
		slices.SortFunc(as, netip.Addr.Compare)
		next[name] = as
	}
	if maps.EqualFunc(next, c.hostIfs, slices.Equal) {
		return
	}
	c.hostIfs = next
	c.dispatchDirty = true
}

// SetBlocks sets this node's IPAM blocks; each gets a blackhole route so traffic to an unassigned
// address in them is not sent back out of the host.
func (c *Calculator) SetBlocks(blocks []netip.Prefix) {
	next := map[netip.Prefix]bool{}
	for _, b := range blocks {
		if b.IsValid() {
			next[b.Masked()] = true
		}
	}
	if !maps.Equal(next, c.blocks) {
		c.blocks = next
		c.routesDirty = true
	}
}

func (c *Calculator) updateEntity(key string, l *labelled, ep *localEP) {
	old := c.x.objs[key]
	same := old != nil && l != nil && old.namespace == l.namespace && maps.Equal(old.labels, l.labels)
	if old != nil || l != nil {
		c.x.update(key, l, same)
	}
	c.updateLocal(key, l, ep, same)
}

func (c *Calculator) updatePolicy(key string, p *policy) {
	if old := c.policies[key]; old != nil {
		for k, ep := range old.matched {
			delete(ep.policies, key)
			c.dirtyEPs[k] = true
		}
		if old.rendered {
			// Released now, swept at Flush: the new version re-acquires the sets it keeps.
			old.unrender(c.x)
		}
		delete(c.policies, key)
	}
	c.dirtyPolicies[key] = true
	if p == nil {
		return
	}
	c.policies[key] = p
	for k, ep := range c.locals {
		c.stats.PolicyMatchEvals++
		if p.appliesTo(ep) {
			p.matched[k] = ep
			ep.policies[key] = p
			c.dirtyEPs[k] = true
		}
	}
}

// Flush renders everything the updates since the previous Flush affected and returns the change.
func (c *Calculator) Flush() *Delta {
	c.stats.Flushes++
	for _, key := range sortedKeys(c.dirtyPolicies) {
		c.flushPolicy(key)
	}
	clear(c.dirtyPolicies)
	for _, key := range sortedKeys(c.dirtyEPs) {
		if ep := c.locals[key]; ep != nil {
			c.renderEndpoint(ep)
		}
	}
	clear(c.dirtyEPs)
	for key := range c.removedEPs {
		if _, ok := c.out.eps[key]; ok {
			delete(c.out.eps, key)
			c.out.changedEPs[key] = true
		}
	}
	clear(c.removedEPs)
	if c.dispatchDirty {
		c.renderDispatch()
		c.dispatchDirty = false
	}
	if c.staticDirty {
		c.renderStatic()
		c.staticDirty = false
	}
	if c.natDirty {
		c.renderNAT()
		c.natDirty = false
	}
	if c.routesDirty {
		c.renderRoutes()
		c.routesDirty = false
	}
	return c.collect()
}

func (c *Calculator) flushPolicy(key string) {
	p := c.policies[key]
	if p != nil && len(p.matched) > 0 {
		c.stats.PolicyRenders++
		p.render(c.x, c.families())
		for _, f := range c.families() {
			for d := range 2 {
				ref := ChainRef{Table: TableID{famVersion(f), "filter"}, Name: p.chain[d]}
				if p.types[d] {
					c.setChain(ref, p.chains[f][d])
				} else {
					c.removeChain(ref)
				}
			}
		}
		return
	}
	if p != nil && p.rendered {
		p.unrender(c.x)
	}
	for _, f := range c.families() {
		for _, kind := range []string{"pi", "po"} {
			c.removeChain(ChainRef{Table: TableID{famVersion(f), "filter"}, Name: iptables.ChainName(kind, key)})
		}
	}
}

func (c *Calculator) setChain(ref ChainRef, rules []iptables.Rule) {
	if old, ok := c.out.chains[ref]; ok && slices.Equal(old, rules) {
		return
	}
	c.out.chains[ref] = slices.Clone(rules)
	c.out.changedChains[ref] = true
}

func (c *Calculator) removeChain(ref ChainRef) {
	if _, ok := c.out.chains[ref]; ok {
		delete(c.out.chains, ref)
		c.out.changedChains[ref] = true
	}
}

func (c *Calculator) setInsertions(ref ChainRef, rules []iptables.Rule) {
	if old, ok := c.out.inserts[ref]; ok && slices.Equal(old, rules) {
		return
	}
	c.out.inserts[ref] = slices.Clone(rules)
	c.out.changedInserts[ref] = true
}

func compareRefs(a, b ChainRef) int {
	if a.Table.IPVersion != b.Table.IPVersion {
		return a.Table.IPVersion - b.Table.IPVersion
	}
	if c := strings.Compare(a.Table.Table, b.Table.Table); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// collect turns the pending changes into a Delta, sorted so equal inputs give equal deltas.
func (c *Calculator) collect() *Delta {
	d := &Delta{}
	c.x.flush(d)
	for _, ref := range slices.SortedFunc(maps.Keys(c.out.changedChains), compareRefs) {
		if rules, ok := c.out.chains[ref]; ok {
			d.ChainsUpdated = append(d.ChainsUpdated, ChainUpdate{Table: ref.Table, Chain: iptables.Chain{Name: ref.Name, Rules: slices.Clone(rules)}})
		} else {
			d.ChainsRemoved = append(d.ChainsRemoved, ref)
		}
	}
	for _, ref := range slices.SortedFunc(maps.Keys(c.out.changedInserts), compareRefs) {
		d.InsertionsUpdated = append(d.InsertionsUpdated, ChainUpdate{Table: ref.Table, Chain: iptables.Chain{Name: ref.Name, Rules: slices.Clone(c.out.inserts[ref])}})
	}
	for _, p := range slices.SortedFunc(maps.Keys(c.out.changedRoutes), netip.Prefix.Compare) {
		if t, ok := c.out.routes[p]; ok {
			if d.RoutesSet == nil {
				d.RoutesSet = map[netip.Prefix]routes.Target{}
			}
			d.RoutesSet[p] = t
		} else {
			d.RoutesRemoved = append(d.RoutesRemoved, p)
		}
	}
	for _, k := range sortedKeys(c.out.changedEPs) {
		if st, ok := c.out.eps[k]; ok {
			d.Endpoints = append(d.Endpoints, st)
		} else {
			d.EndpointsRemoved = append(d.EndpointsRemoved, k)
		}
	}
	clear(c.out.changedChains)
	clear(c.out.changedInserts)
	if c.out.changedAppend {
		d.AppendInsertions = new(c.out.appendInserts)
		c.out.changedAppend = false
	}
	clear(c.out.changedRoutes)
	clear(c.out.changedEPs)
	return d
}

// Desired returns a deep copy of the full desired state as of the last Flush (call Flush first to
// include pending updates).
func (c *Calculator) Desired() *Desired {
	d := &Desired{
		IPSets:    c.x.snapshot(),
		Tables:    map[TableID]*TableState{},
		Routes:    maps.Clone(c.out.routes),
		Endpoints: maps.Clone(c.out.eps),

		AppendInsertions: c.out.appendInserts,
	}
	table := func(id TableID) *TableState {
		t := d.Tables[id]
		if t == nil {
			t = &TableState{Chains: map[string][]iptables.Rule{}, Insertions: map[string][]iptables.Rule{}}
			d.Tables[id] = t
		}
		return t
	}
	for ref, rules := range c.out.chains {
		table(ref.Table).Chains[ref.Name] = slices.Clone(rules)
	}
	for ref, rules := range c.out.inserts {
		table(ref.Table).Insertions[ref.Name] = slices.Clone(rules)
	}
	for p, t := range d.Routes {
		t.Gateways = slices.Clone(t.Gateways)
		d.Routes[p] = t
	}
	return d
}

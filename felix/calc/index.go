package calc

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/datastore/selector"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
)

const (
	// NamespaceNameLabel is the namespace label holding the namespace's own name (Calico's).
	NamespaceNameLabel = "projectcalico.org/name"
	// NamespaceLabelPrefix marks endpoint labels that are really labels of the endpoint's namespace.
	NamespaceLabelPrefix = "pcns."
	// OrchestratorLabel is added to workload endpoints with an orchestrator, as Calico does.
	OrchestratorLabel = "projectcalico.org/orchestrator"
	// ServiceAccountLabel carries a workload endpoint's service account name, as in Calico.
	ServiceAccountLabel = "projectcalico.org/serviceaccount"
	// ServiceAccountLabelPrefix marks endpoint labels that are labels of its service account.
	ServiceAccountLabelPrefix = "pcsa."
)

// families indexes per-IP-version arrays: 0 is IPv4, 1 is IPv6.
var families = [2]ipsets.Family{ipsets.FamilyInet, ipsets.FamilyInet6}

func famVersion(f int) int { return 4 + 2*f }

// labelled is anything rule selectors can match: every workload and host endpoint in the cluster
// and every network set.
type labelled struct {
	key       string
	namespace string
	labels    map[string]string
	members   [2][]string // canonical hash:net members per family
	ports     []namedPort // named ports an endpoint declares
}

// namedPort is a port an endpoint declares by name; Proto is lower case ("tcp", "udp", "sctp").
type namedPort struct {
	Name, Proto string
	Port        int
}

func (l *labelled) Get(k string) (string, bool) {
	v, ok := l.labels[k]
	return v, ok
}

// nsView presents a labelled entity's namespace labels (see the package doc).
type nsView struct{ l *labelled }

func (v nsView) Get(k string) (string, bool) {
	if k == selector.NamespaceLabel {
		return v.l.Get(k)
	}
	if v.l.namespace == "" {
		return "", false
	}
	if k == NamespaceNameLabel {
		return v.l.namespace, true
	}
	return v.l.Get(NamespaceLabelPrefix + k)
}

// parseNamespaceSelector parses a namespaceSelector. all() there means every namespace, as in
// Calico, not every entity: host endpoints and global network sets have no namespace and must not
// match (a GlobalNetworkPolicy with namespaceSelector: all() would otherwise isolate every host).
func parseNamespaceSelector(s string) (*selector.Selector, error) {
	return parseAllAs(s, "has("+selector.NamespaceLabel+")")
}

// parseAllAs parses s, reading a selector that means all() (however written: "(all())",
// "all( )") as instead.
func parseAllAs(s, instead string) (*selector.Selector, error) {
	sel, err := selector.Parse(s)
	if err != nil || sel.String() != "all()" {
		return sel, err
	}
	return selector.Parse(instead)
}

// parseServiceAccountSelector parses a serviceAccountSelector (or a rule's serviceAccounts
// selector): all() means every endpoint that has a service account, as in Calico.
func parseServiceAccountSelector(s string) (*selector.Selector, error) {
	return parseAllAs(s, "has("+NamespaceNameLabel+")") // saView answers it with the account's name
}

// saView presents an endpoint's service account labels: projectcalico.org/name is the account's
// name, other keys are the endpoint's "pcsa.<key>" labels.
type saView struct{ l *labelled }

func (v saView) Get(k string) (string, bool) {
	if k == NamespaceNameLabel {
		return v.l.Get(ServiceAccountLabel)
	}
	return v.l.Get(ServiceAccountLabelPrefix + k)
}

// membersOf turns CIDRs or addresses into canonical hash:net members per family. A /0 cannot be
// stored in hash:net, so it is split into its two halves, as Calico does.
func membersOf(nets []string) [2][]string {
	var out [2][]string
	for _, n := range nets {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), p.Addr().Unmap().BitLen())).Masked()
		f := 0
		if p.Addr().Is6() {
			f = 1
		}
		ps := []netip.Prefix{p}
		if p.Bits() == 0 {
			hi := netip.AddrFrom4([4]byte{128})
			if f == 1 {
				hi = netip.AddrFrom16([16]byte{128})
			}
			ps = []netip.Prefix{netip.PrefixFrom(p.Addr(), 1), netip.PrefixFrom(hi, 1)}
		}
		for _, q := range ps {
			if m, err := ipsets.CanonicalMember(ipsets.TypeHashNet, families[f], q.String()); err == nil {
				out[f] = append(out[f], m)
			}
		}
	}
	for f := range out {
		slices.Sort(out[f])
		out[f] = slices.Compact(out[f])
	}
	return out
}

// selMatcher is a rule's positive or negative selector with its namespace narrowing; its identity
// names the ipsets derived from it.
type selMatcher struct {
	sel   *selector.Selector
	nsSel *selector.Selector // nil: no namespace selector
	ns    string             // non-empty: only entities in this namespace
	// serviceAccounts: names (sorted; any of them) and/or a selector over account labels
	saNames []string
	saSel   *selector.Selector
}

func (m selMatcher) identity() string {
	var b strings.Builder
	b.WriteString("sel:")
	b.WriteString(m.sel.String())
	if m.nsSel != nil {
		b.WriteString("|nssel:")
		b.WriteString(m.nsSel.String())
	}
	if m.ns != "" {
		b.WriteString("|ns:")
		b.WriteString(m.ns)
	}
	if len(m.saNames) > 0 {
		b.WriteString("|sa:")
		b.WriteString(strings.Join(m.saNames, ","))
	}
	if m.saSel != nil {
		b.WriteString("|sasel:")
		b.WriteString(m.saSel.String())
	}
	return b.String()
}

func (m selMatcher) matches(l *labelled) bool {
	if m.ns != "" && l.namespace != m.ns {
		return false
	}
	if m.nsSel != nil && !m.nsSel.EvaluateLabels(nsView{l}) {
		return false
	}
	if len(m.saNames) > 0 {
		sa, ok := l.Get(ServiceAccountLabel)
		if !ok || !slices.Contains(m.saNames, sa) {
			return false
		}
	}
	if m.saSel != nil && !m.saSel.EvaluateLabels(saView{l}) {
		return false
	}
	return m.sel.EvaluateLabels(l)
}

// ipset is one desired set with reference-counted members (an address can come from several
// entities) and the changes since the last Flush.
type ipset struct {
	meta      ipsets.Meta
	namedPort *namedPort // hash:ip,port of the matching endpoints' port with this name and protocol
	refs      int        // rules referencing it
	matcher   *selMatcher
	members   map[string]int
	matched   map[string]bool // selector sets: keys of matching entities
	fresh     bool            // created since the last Flush: report in full
	added     map[string]bool
	removed   map[string]bool
}

// membersFor returns what entity l contributes to the set in family f.
func (s *ipset) membersFor(l *labelled, f int) []string {
	if s.namedPort == nil {
		return l.members[f]
	}
	var out []string
	for _, p := range l.ports {
		if p.Name != s.namedPort.Name || p.Proto != s.namedPort.Proto {
			continue
		}
		for _, m := range l.members[f] {
			if !strings.Contains(m, "/") { // single addresses only: hash:ip,port holds no nets
				out = append(out, m+","+p.Proto+":"+strconv.Itoa(p.Port))
			}
		}
	}
	return out
}

func (s *ipset) addMember(m string, st *Stats) {
	s.members[m]++
	if s.members[m] > 1 || s.fresh {
		return
	}
	st.IPSetMemberAdds++
	if s.removed[m] {
		delete(s.removed, m)
	} else {
		s.added[m] = true
	}
}

func (s *ipset) removeMember(m string, st *Stats) {
	n, ok := s.members[m]
	if !ok {
		return
	}
	if n > 1 {
		s.members[m] = n - 1
		return
	}
	delete(s.members, m)
	if s.fresh {
		return
	}
	st.IPSetMemberRemove++
	if s.added[m] {
		delete(s.added, m)
	} else {
		s.removed[m] = true
	}
}

// setIndex owns every ipset the rendered rules reference.
type setIndex struct {
	sets    map[string]*ipset // by name
	byFam   [2]map[string]*ipset
	objs    map[string]*labelled
	dropped map[string]bool // names removed since the last Flush and existing before it
	stats   *Stats
}

func newSetIndex(st *Stats) *setIndex {
	return &setIndex{
		sets:    map[string]*ipset{},
		byFam:   [2]map[string]*ipset{{}, {}},
		objs:    map[string]*labelled{},
		dropped: map[string]bool{},
		stats:   st,
	}
}

// acquire returns the name of the set for identity in family f, creating and populating it on the
// first reference. For a selector set, matcher is non-nil; otherwise static holds its members.
func (x *setIndex) acquire(f int, identity string, matcher *selMatcher, static []string) string {
	return x.acquireNamedPort(f, identity, matcher, static, nil)
}

// acquireNamedPort is acquire for a named-port set (np non-nil: hash:ip,port).
func (x *setIndex) acquireNamedPort(f int, identity string, matcher *selMatcher, static []string, np *namedPort) string {
	name := ipsets.NameFor(families[f], identity)
	if s, ok := x.sets[name]; ok {
		s.refs++
		return name
	}
	s := &ipset{
		meta:      ipsets.Meta{Name: name, Type: ipsets.TypeHashNet, Family: families[f]},
		namedPort: np,
		refs:      1,
		matcher:   matcher,
		members:   map[string]int{},
		fresh:     true,
		added:     map[string]bool{},
		removed:   map[string]bool{},
	}
	if np != nil {
		s.meta.Type = ipsets.TypeHashIPPort
	}
	x.stats.IPSetsCreated++
	if matcher != nil {
		s.matched = map[string]bool{}
		// The other family's set for the same selector already knows who matches.
		if twin, ok := x.sets[ipsets.NameFor(families[1-f], identity)]; ok && twin.matcher != nil {
			for k := range twin.matched {
				s.matched[k] = true
				for _, m := range s.membersFor(x.objs[k], f) {
					s.addMember(m, x.stats)
				}
			}
		} else {
			for k, l := range x.objs {
				x.stats.SelectorEvals++
				if matcher.matches(l) {
					s.matched[k] = true
					for _, m := range s.membersFor(l, f) {
						s.addMember(m, x.stats)
					}
				}
			}
		}
		x.byFam[f][name] = s
	} else {
		for _, m := range static {
			s.addMember(m, x.stats)
		}
	}
	x.sets[name] = s
	return name
}

// release drops one reference; a set that nobody references is removed by sweep, so a set released
// and re-acquired within one Flush keeps its members.
func (x *setIndex) release(name string) {
	if s, ok := x.sets[name]; ok {
		s.refs--
	}
}

func (x *setIndex) sweep() {
	for name, s := range x.sets {
		if s.refs > 0 {
			continue
		}
		delete(x.sets, name)
		for f := range x.byFam {
			delete(x.byFam[f], name)
		}
		if !s.fresh {
			x.dropped[name] = true
		}
	}
}

// update replaces (or, with l nil, removes) the labelled entity key and updates every selector
// set it enters or leaves. labelsSame lets a change of addresses alone skip selector evaluation.
func (x *setIndex) update(key string, l *labelled, labelsSame bool) {
	old := x.objs[key]
	if l == nil {
		delete(x.objs, key)
	} else {
		x.objs[key] = l
	}
	for f := range x.byFam {
		for _, s := range x.byFam[f] {
			was := s.matched[key]
			is := false
			if l != nil {
				if labelsSame && old != nil {
					is = was
				} else {
					x.stats.SelectorEvals++
					is = s.matcher.matches(l)
				}
			}
			if was {
				for _, m := range s.membersFor(old, f) {
					s.removeMember(m, x.stats)
				}
			}
			if is {
				for _, m := range s.membersFor(l, f) {
					s.addMember(m, x.stats)
				}
				s.matched[key] = true
			} else {
				delete(s.matched, key)
			}
		}
	}
}

// snapshot returns every set in full.
func (x *setIndex) snapshot() map[string]IPSet {
	out := make(map[string]IPSet, len(x.sets))
	for name, s := range x.sets {
		out[name] = IPSet{Meta: s.meta, Members: sortedKeys(s.members)}
	}
	return out
}

// flush moves pending set changes into d and resets them.
func (x *setIndex) flush(d *Delta) {
	x.sweep()
	for _, name := range sortedKeys(x.sets) {
		s := x.sets[name]
		switch {
		case s.fresh:
			if x.dropped[name] {
				delete(x.dropped, name)
			}
			d.IPSetsReplaced = append(d.IPSetsReplaced, IPSet{Meta: s.meta, Members: sortedKeys(s.members)})
			s.fresh = false
		case len(s.added) > 0 || len(s.removed) > 0:
			d.IPSetMembers = append(d.IPSetMembers, IPSetMembers{Name: name, Added: sortedKeys(s.added), Removed: sortedKeys(s.removed)})
		}
		clear(s.added)
		clear(s.removed)
	}
	d.IPSetsRemoved = sortedKeys(x.dropped)
	clear(x.dropped)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

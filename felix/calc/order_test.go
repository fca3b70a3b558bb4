package calc

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// universe generates random but valid resources from small vocabularies so that selectors, nets
// and ports overlap a lot.
type universe struct{ rng *rand.Rand }

func (u universe) pick(xs ...string) string { return xs[u.rng.IntN(len(xs))] }

func (u universe) labels() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"app", "tier", "pcns.team"} {
		if u.rng.IntN(3) > 0 {
			m[k] = u.pick("web", "db", "x", "y")
		}
	}
	return m
}

func (u universe) sel() string {
	return u.pick("", "app == 'web'", "app == 'db'", "has(tier)", "tier in {'x','y'}", "!has(app)", "all()", "global()")
}

func (u universe) rule() api.Rule {
	r := api.Rule{Action: u.pick("Allow", "Deny", "Pass", "Log")}
	switch u.rng.IntN(6) {
	case 0:
		r.Protocol = tcp()
		r.Destination.Ports = ports(u.pick("80", "443", "1000:2000", "http"), u.pick("22", "8080", "http"))
	case 1:
		r.Protocol = udp()
		r.Source.NotPorts = ports("53")
	case 2:
		r.Protocol = icmp()
		r.ICMP = &api.ICMPFields{Type: ptrTo(8)}
	case 3:
		r.IPVersion = ptrTo(6)
	}
	switch u.rng.IntN(5) {
	case 0:
		r.Source.Selector = u.sel()
	case 1:
		r.Destination.NotSelector = u.pick("app == 'web'", "has(tier)")
	case 2:
		r.Source.NamespaceSelector = u.pick("team == 'x'", "projectcalico.org/name == 'ns1'", "global()")
	case 3:
		r.Destination.Nets = []string{u.pick("10.0.0.0/8", "2001:db8::/32"), u.pick("192.0.2.0/24", "198.51.100.0/24")}
	case 4:
		r.Source.NotNets = []string{u.pick("10.0.0.0/8", "192.0.2.0/24")}
	}
	return r
}

func (u universe) rules() []api.Rule {
	var out []api.Rule
	for range u.rng.IntN(4) {
		out = append(out, u.rule())
	}
	return out
}

func (u universe) object(kind, ns, name string, i int) update {
	ip4 := fmt.Sprintf("198.18.%d.%d/32", u.rng.IntN(2), 1+u.rng.IntN(20))
	ip6 := fmt.Sprintf("2001:db8:1000::%x/128", 1+u.rng.IntN(20))
	switch kind {
	case api.KindWorkloadEndpoint:
		ips := []string{ip4}
		if u.rng.IntN(2) == 0 {
			ips = append(ips, ip6)
		}
		w := wep(ns, name, u.pick(testNode, "host-2"), fmt.Sprintf("trc%011x", i), u.labels(), ips...)
		if u.rng.IntN(2) == 0 {
			w.r.(*api.WorkloadEndpoint).Spec.Ports = []api.WorkloadEndpointPort{{Name: "http", Protocol: api.ProtocolFromString(u.pick("TCP", "UDP")), Port: 80 + u.rng.IntN(2)}}
		}
		return w
	case api.KindHostEndpoint:
		return hep(name, u.pick(testNode, "host-2"), u.pick("eth0", "eth1", "*"), u.labels(), "192.0.2."+fmt.Sprint(1+u.rng.IntN(9)))
	case api.KindNetworkSet, api.KindGlobalNetworkSet:
		return netset(ns, name, u.labels(), u.pick("192.0.2.0/28", "0.0.0.0/0", "2001:db8::/64"), u.pick("198.51.100.0/24", ip4))
	case api.KindGlobalNetworkPolicy:
		var order *float64
		if u.rng.IntN(3) > 0 {
			order = ptrTo(float64(u.rng.IntN(3)))
		}
		p := gnp(name, order, u.sel(), u.rules(), u.rules())
		if u.rng.IntN(4) == 0 {
			p.r.(*api.GlobalNetworkPolicy).Spec.NamespaceSelector = "team == 'x'"
		}
		return p
	case api.KindNetworkPolicy:
		var order *float64
		if u.rng.IntN(3) > 0 {
			order = ptrTo(float64(u.rng.IntN(3)))
		}
		return np(ns, name, order, u.sel(), u.rules(), u.rules())
	case api.KindIPPool:
		return pool(name, u.pick("198.18.0.0/16", "198.19.0.0/16", "2001:db8:1000::/48"), u.rng.IntN(2) == 0, u.rng.IntN(4) == 0)
	case api.KindFelixConfiguration:
		return felixCfg(name, api.FelixConfigurationSpec{
			DefaultEndpointToHostAction: u.pick("", "Drop", "Accept", "Return"),
			FailsafeInboundHostPorts:    &[]api.ProtoPort{{Protocol: "TCP", Port: 22 + u.rng.IntN(3)}},
		})
	}
	panic(kind)
}

type slot struct{ kind, ns, name string }

func (u universe) slots() []slot {
	var s []slot
	for i := range 24 {
		s = append(s, slot{api.KindWorkloadEndpoint, fmt.Sprint("ns", 1+i%2), fmt.Sprint("w", i)})
	}
	for i := range 3 {
		s = append(s, slot{api.KindHostEndpoint, "", fmt.Sprint("h", i)})
		s = append(s, slot{api.KindNetworkSet, fmt.Sprint("ns", 1+i%2), fmt.Sprint("n", i)})
		s = append(s, slot{api.KindGlobalNetworkSet, "", fmt.Sprint("g", i)})
		s = append(s, slot{api.KindIPPool, "", fmt.Sprint("pool", i)})
	}
	for i := range 8 {
		s = append(s, slot{api.KindGlobalNetworkPolicy, "", fmt.Sprint("gp", i)})
		s = append(s, slot{api.KindNetworkPolicy, fmt.Sprint("ns", 1+i%2), fmt.Sprint("np", i)})
	}
	s = append(s, slot{api.KindFelixConfiguration, "", "default"}, slot{api.KindFelixConfiguration, "", "node." + testNode})
	return s
}

// finalState is one random final datastore content (a missing slot means absent).
func finalState(seed uint64) ([]update, []netip.Prefix) {
	u := universe{rand.New(rand.NewPCG(seed, 1))}
	var out []update
	for i, s := range u.slots() {
		if u.rng.IntN(5) > 0 {
			out = append(out, u.object(s.kind, s.ns, s.name, i))
		}
	}
	return out, []netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:1000::/122")}
}

// replay feeds a random history ending in final: every slot goes through random versions (and
// deletions) before its final version or deletion; slots' histories are interleaved at random, and
// Flush runs at random points. It returns the Calculator and the state rebuilt from the deltas.
func replay(t *testing.T, seed uint64, final []update, blocks []netip.Prefix) (*Calculator, *Desired) {
	rng := rand.New(rand.NewPCG(seed, 2))
	u := universe{rng}
	finalBy := map[slot]update{}
	for _, f := range final {
		finalBy[slot{f.kind, f.ns, f.name}] = f
	}
	var histories [][]update
	for i, s := range u.slots() {
		var h []update
		for range rng.IntN(3) {
			if rng.IntN(3) == 0 {
				h = append(h, update{s.kind, s.ns, s.name, nil})
			} else {
				h = append(h, u.object(s.kind, s.ns, s.name, i))
			}
		}
		if f, ok := finalBy[s]; ok {
			h = append(h, f)
		} else if len(h) > 0 {
			h = append(h, update{s.kind, s.ns, s.name, nil})
		}
		histories = append(histories, h)
	}
	c := New(Config{NodeName: testNode, IPv6: true})
	model := &Desired{IPSets: map[string]IPSet{}, Tables: map[TableID]*TableState{}, Routes: map[netip.Prefix]routes.Target{}, Endpoints: map[string]EndpointStatus{}}
	flush := func() { applyDelta(t, model, c.Flush()) }
	for {
		var live []int
		for i, h := range histories {
			if len(h) > 0 {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			break
		}
		i := live[rng.IntN(len(live))]
		feed(c, histories[i][0])
		histories[i] = histories[i][1:]
		switch rng.IntN(10) {
		case 0:
			flush()
		case 1:
			c.SetBlocks(blocks[:rng.IntN(len(blocks)+1)])
		}
	}
	c.SetBlocks(blocks)
	flush()
	return c, model
}

// applyDelta plays a Delta onto a Desired the way the writers would.
func applyDelta(t *testing.T, m *Desired, d *Delta) {
	t.Helper()
	for _, s := range d.IPSetsReplaced {
		m.IPSets[s.Meta.Name] = IPSet{Meta: s.Meta, Members: slices.Clone(s.Members)}
	}
	for _, ch := range d.IPSetMembers {
		s, ok := m.IPSets[ch.Name]
		if !ok {
			t.Fatalf("member delta for unknown set %s", ch.Name)
		}
		set := map[string]bool{}
		for _, x := range s.Members {
			set[x] = true
		}
		for _, x := range ch.Added {
			if set[x] {
				t.Fatalf("set %s: adding present member %s", ch.Name, x)
			}
			set[x] = true
		}
		for _, x := range ch.Removed {
			if !set[x] {
				t.Fatalf("set %s: removing absent member %s", ch.Name, x)
			}
			delete(set, x)
		}
		s.Members = sortedKeys(set)
		m.IPSets[ch.Name] = s
	}
	for _, n := range d.IPSetsRemoved {
		if _, ok := m.IPSets[n]; !ok {
			t.Fatalf("removing unknown set %s", n)
		}
		delete(m.IPSets, n)
	}
	table := func(id TableID) *TableState {
		if m.Tables[id] == nil {
			m.Tables[id] = &TableState{Chains: map[string][]iptables.Rule{}, Insertions: map[string][]iptables.Rule{}}
		}
		return m.Tables[id]
	}
	for _, cu := range d.ChainsUpdated {
		table(cu.Table).Chains[cu.Chain.Name] = cu.Chain.Rules
	}
	for _, cr := range d.ChainsRemoved {
		delete(table(cr.Table).Chains, cr.Name)
	}
	for _, iu := range d.InsertionsUpdated {
		table(iu.Table).Insertions[iu.Chain.Name] = iu.Chain.Rules
	}
	for p, tg := range d.RoutesSet {
		m.Routes[p] = tg
	}
	for _, p := range d.RoutesRemoved {
		delete(m.Routes, p)
	}
	for _, e := range d.Endpoints {
		m.Endpoints[EndpointKey(e.Kind, e.Namespace, e.Name)] = e
	}
	for _, k := range d.EndpointsRemoved {
		delete(m.Endpoints, k)
	}
}

// TestOrderIndependence replays the same final states through many random histories and checks
// the Desired state (and the state rebuilt from the stream of deltas) equals a one-shot calculation.
func TestOrderIndependence(t *testing.T) {
	for seed := range uint64(12) {
		final, blocks := finalState(seed)
		ref := New(Config{NodeName: testNode, IPv6: true})
		feed(ref, final...)
		ref.SetBlocks(blocks)
		ref.Flush()
		want := ref.Desired()
		if len(want.Endpoints) == 0 || len(want.IPSets) == 0 {
			t.Fatalf("seed %d: degenerate universe (%d endpoints, %d sets)", seed, len(want.Endpoints), len(want.IPSets))
		}
		for trial := range uint64(8) {
			c, model := replay(t, seed*100+trial, final, blocks)
			got := c.Desired()
			diff(t, fmt.Sprintf("seed %d trial %d desired", seed, trial), want, got)
			diff(t, fmt.Sprintf("seed %d trial %d delta stream", seed, trial), want, model)
			if t.Failed() {
				return
			}
		}
	}
}

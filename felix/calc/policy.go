package calc

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/selector"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

const (
	dirIngress = 0
	dirEgress  = 1
)

// policy is one NetworkPolicy or GlobalNetworkPolicy as the calculation needs it.
type policy struct {
	key       string // "GlobalNetworkPolicy/name" or "NetworkPolicy/ns/name"
	sortName  string // name, or namespace/name
	order     float64
	namespace string             // NetworkPolicy: its namespace
	sel       *selector.Selector // nil when unparseable: selects nothing
	nsSel     *selector.Selector
	saSel     *selector.Selector // spec.serviceAccountSelector
	types     [2]bool
	rules     [2][]api.Rule
	chain     [2]string

	matched map[string]*localEP // local endpoints it selects
	dirty   bool

	// rendered state, present while the policy is active (selects a local endpoint)
	rendered bool
	sets     []string              // ipset references held
	chains   [2][2][]iptables.Rule // [family][direction]
	hash     string                // content hash of the rendered chains, for revisions
}

func newPolicy(key, namespace, name string, s *api.GlobalNetworkPolicySpec, np *api.NetworkPolicySpec) *policy {
	p := &policy{key: key, sortName: name, order: math.Inf(1), matched: map[string]*localEP{}}
	var order *float64
	var sel, saSel string
	var types []api.PolicyType
	if np != nil {
		p.namespace = namespace
		p.sortName = namespace + "/" + name
		order, sel, types, saSel = np.Order, np.Selector, np.Types, np.ServiceAccountSelector
		p.rules = [2][]api.Rule{np.Ingress, np.Egress}
	} else {
		order, sel, types, saSel = s.Order, s.Selector, s.Types, s.ServiceAccountSelector
		p.rules = [2][]api.Rule{s.Ingress, s.Egress}
		if s.NamespaceSelector != "" {
			ns, err := parseNamespaceSelector(s.NamespaceSelector)
			if err != nil {
				return p.withChains(key) // unparseable: selects nothing
			}
			p.nsSel = ns
		}
	}
	if order != nil {
		p.order = *order
	}
	if saSel != "" {
		parsed, err := parseServiceAccountSelector(saSel)
		if err != nil {
			return p.withChains(key) // unparseable: selects nothing
		}
		p.saSel = parsed
	}
	if parsed, err := selector.Parse(sel); err == nil {
		p.sel = parsed
	}
	if len(types) == 0 {
		// Calico's default: Ingress, plus Egress when there are egress rules (only Egress when
		// there are only egress rules).
		types = []api.PolicyType{api.PolicyTypeIngress}
		if len(p.rules[dirEgress]) > 0 {
			types = []api.PolicyType{api.PolicyTypeEgress}
			if len(p.rules[dirIngress]) > 0 {
				types = append(types, api.PolicyTypeIngress)
			}
		}
	}
	for _, t := range types {
		switch t {
		case api.PolicyTypeIngress:
			p.types[dirIngress] = true
		case api.PolicyTypeEgress:
			p.types[dirEgress] = true
		}
	}
	return p.withChains(key)
}

func (p *policy) withChains(key string) *policy {
	p.chain = [2]string{iptables.ChainName("pi", key), iptables.ChainName("po", key)}
	return p
}

// comparePolicies orders by order (missing last), then name.
func comparePolicies(a, b *policy) int {
	if c := cmp.Compare(a.order, b.order); c != 0 {
		return c
	}
	return strings.Compare(a.sortName, b.sortName)
}

// appliesTo reports whether the policy selects a local endpoint.
func (p *policy) appliesTo(ep *localEP) bool {
	if p.sel == nil {
		return false
	}
	if p.namespace != "" && (ep.host || ep.obj.namespace != p.namespace) {
		return false
	}
	if p.nsSel != nil && !p.nsSel.EvaluateLabels(nsView{ep.obj}) {
		return false
	}
	if p.saSel != nil && !p.saSel.EvaluateLabels(saView{ep.obj}) {
		return false
	}
	return p.sel.EvaluateLabels(ep.obj)
}

// render (re)builds the policy's chains, taking new set references before dropping the old ones
// so unchanged sets keep their members.
func (p *policy) render(x *setIndex, fams []int) {
	old := p.sets
	p.sets = nil
	h := sha256.New()
	p.chains = [2][2][]iptables.Rule{}
	for _, f := range fams {
		for d := range 2 {
			if !p.types[d] {
				continue
			}
			rr := ruleRenderer{x: x, f: f, dir: d, namespace: p.namespace, sets: &p.sets}
			var rules []iptables.Rule
			for i := range p.rules[d] {
				rules = append(rules, rr.render(&p.rules[d][i])...)
			}
			p.chains[f][d] = rules
			h.Write([]byte{byte(f), byte(d)})
			for _, r := range rules {
				h.Write([]byte(r.Match + "\x00" + r.Action + "\x00" + r.Comment + "\n"))
			}
		}
	}
	for _, s := range old {
		x.release(s)
	}
	p.hash = hex.EncodeToString(h.Sum(nil)[:12])
	p.rendered = true
}

func (p *policy) unrender(x *setIndex) {
	for _, s := range p.sets {
		x.release(s)
	}
	p.sets = nil
	p.chains = [2][2][]iptables.Rule{}
	p.hash = ""
	p.rendered = false
}

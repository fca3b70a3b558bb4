package api

import (
	"fmt"
	"strings"
)

// policyCommon is what NetworkPolicy and GlobalNetworkPolicy share.
type policyCommon struct {
	tier                   string
	order                  *float64
	ingress, egress        []Rule
	selector               string
	types                  []PolicyType
	serviceAccountSelector string
	performanceHints       []string
}

func (v *validator) policy(p policyCommon) {
	if p.tier != "" && p.tier != DefaultTier {
		v.add("spec.tier", "Terrace has one tier, %q; %q is not accepted", DefaultTier, p.tier)
	}
	v.float("spec.order", p.order)
	v.selector("spec.selector", p.selector)
	v.selector("spec.serviceAccountSelector", p.serviceAccountSelector)
	seen := map[PolicyType]bool{}
	for i, t := range p.types {
		path := idx("spec.types", i)
		switch {
		case t != PolicyTypeIngress && t != PolicyTypeEgress:
			v.add(path, "%q is not one of Ingress, Egress", t)
		case seen[t]:
			v.add(path, "%q is listed twice", t)
		}
		seen[t] = true
	}
	// With types given explicitly, rules for a direction the policy does not apply to would be
	// silently ignored; Calico refuses that, and so does Terrace.
	if len(p.types) > 0 {
		if len(p.ingress) > 0 && !seen[PolicyTypeIngress] {
			v.add("spec.ingress", "has rules but spec.types does not include Ingress")
		}
		if len(p.egress) > 0 && !seen[PolicyTypeEgress] {
			v.add("spec.egress", "has rules but spec.types does not include Egress")
		}
	}
	for i := range p.ingress {
		v.rule(idx("spec.ingress", i), &p.ingress[i])
	}
	for i := range p.egress {
		v.rule(idx("spec.egress", i), &p.egress[i])
	}
	for i, h := range p.performanceHints {
		if h != "AssumeNeededOnEveryNode" {
			v.add(idx("spec.performanceHints", i), "%q is not one of AssumeNeededOnEveryNode", h)
		}
	}
}

func (v *validator) globalPolicyExtras(s *GlobalNetworkPolicySpec) {
	v.selector("spec.namespaceSelector", s.NamespaceSelector)
	if s.DoNotTrack {
		v.add("spec.doNotTrack", "Terrace does not implement untracked (raw table) policy; only false is accepted")
	}
	if s.PreDNAT {
		v.add("spec.preDNAT", "Terrace does not implement pre-DNAT policy; only false is accepted")
	}
	// Accepting it without acting on it would let through the forwarded traffic the policy was
	// written to stop.
	if s.ApplyOnForward {
		v.add("spec.applyOnForward", "Terrace applies host endpoint policy to the host's own traffic only, not to traffic it forwards; only false is accepted")
	}
}

func (v *validator) rule(path string, r *Rule) {
	errsBefore := len(v.errs)
	switch r.Action {
	case ActionAllow, ActionDeny, ActionLog, ActionPass:
	case "":
		v.add(path+".action", "is required: Allow, Deny, Log or Pass")
	default:
		hint := ""
		for _, a := range []string{ActionAllow, ActionDeny, ActionLog, ActionPass} {
			if strings.EqualFold(a, r.Action) {
				hint = " (did you mean " + a + "?)"
			}
		}
		v.add(path+".action", "%q is not one of Allow, Deny, Log, Pass%s", r.Action, hint)
	}
	ipv := 0
	if r.IPVersion != nil {
		ipv = *r.IPVersion
		if ipv != 4 && ipv != 6 {
			v.add(path+".ipVersion", "%d is not 4 or 6", ipv)
			ipv = 0
		}
	}
	if r.Protocol != nil {
		v.protocol(path+".protocol", *r.Protocol)
	}
	if r.NotProtocol != nil {
		v.protocol(path+".notProtocol", *r.NotProtocol)
	}
	v.icmp(path+".icmp", r.ICMP, r.Protocol, ipv)
	v.icmp(path+".notICMP", r.NotICMP, r.Protocol, ipv)
	if r.HTTP != nil {
		v.add(path+".http", "Terrace does not match HTTP (layer 7); must be empty")
	}
	v.entity(path+".source", &r.Source, r.Protocol, ipv)
	v.entity(path+".destination", &r.Destination, r.Protocol, ipv)
	if len(v.errs) == errsBefore {
		// A field error (an address of the wrong ipVersion, ICMP against ipVersion) already
		// says what is wrong more precisely.
		v.ruleFamilies(path, r)
	}
}

// ruleFamilies refuses a rule that can match in neither IP family: felix renders a rule only in
// the families RuleFamilies allows, so such a rule would vanish without a word (a Deny that
// denies nothing). Calico refuses these too.
func (v *validator) ruleFamilies(path string, r *Rule) {
	if v4, v6, why := RuleFamilies(r); !v4 && !v6 {
		v.add(path, "can match no IP family: %s", strings.Join(why, ", "))
	}
}

// RuleFamilies says in which IP families a rule can match at all, and why it cannot in the
// others: its ipVersion, an ICMP protocol, and address lists (nets or notNets) of one family
// only — a rule is left out of a family its lists do not mention, as Calico does, rather than
// kept with no address condition there — or a notNets that excludes every address (a /0).
// felix renders a rule only where this allows; validation refuses a rule it allows nowhere.
// Unparsable or out-of-range values are validation's to report and are ignored here.
func RuleFamilies(r *Rule) (v4, v6 bool, why []string) {
	can := map[int]bool{4: true, 6: true}
	limit := func(fams map[int]bool, reason string) {
		narrowed := false
		for f := range can {
			if !fams[f] {
				delete(can, f)
				narrowed = true
			}
		}
		if narrowed {
			why = append(why, reason)
		}
	}
	if r.IPVersion != nil && (*r.IPVersion == 4 || *r.IPVersion == 6) {
		limit(map[int]bool{*r.IPVersion: true}, fmt.Sprintf("ipVersion %d", *r.IPVersion))
	}
	if n, ok := protoNumber(r.Protocol); ok && (n == 1 || n == 58) {
		f := 4
		if n == 58 {
			f = 6
		}
		limit(map[int]bool{f: true}, fmt.Sprintf("protocol %s (IPv%d only)", r.Protocol, f))
	}
	for _, side := range []struct {
		name string
		e    *EntityRule
	}{{"source", &r.Source}, {"destination", &r.Destination}} {
		for _, l := range []struct {
			field string
			nets  []string
		}{{"nets", side.e.Nets}, {"notNets", side.e.NotNets}} {
			if len(l.nets) == 0 {
				continue
			}
			fams := map[int]bool{}
			everything := map[int]bool{}
			for _, n := range l.nets {
				if p, err := parsePrefixOrAddr(n); err == nil {
					fams[family(p.Addr())] = true
					if p.Bits() == 0 {
						everything[family(p.Addr())] = true
					}
				}
			}
			if len(fams) == 0 {
				continue // unparsable: reported by nets
			}
			limit(fams, fmt.Sprintf("%s.%s (IPv%s only)", side.name, l.field, famList(fams)))
			if l.field == "notNets" && len(everything) > 0 {
				rest := map[int]bool{4: !everything[4], 6: !everything[6]}
				limit(rest, fmt.Sprintf("%s.notNets excludes every IPv%s address", side.name, famList(everything)))
			}
		}
	}
	return can[4], can[6], why
}

func famList(fams map[int]bool) string {
	if fams[4] && fams[6] {
		return "4 and 6"
	}
	if fams[4] {
		return "4"
	}
	return "6"
}

func (v *validator) icmp(path string, f *ICMPFields, proto *Protocol, ipv int) {
	if f == nil {
		return
	}
	if proto == nil || !proto.IsICMP() {
		v.add(path, "needs protocol ICMP or ICMPv6")
	} else if n, _ := proto.IANANumber(); ipv != 0 && ((n == 1 && ipv == 6) || (n == 58 && ipv == 4)) {
		v.add(path, "protocol %s does not match ipVersion %d", proto, ipv)
	}
	// Type 255 is reserved; Calico allows 0-254.
	if f.Type != nil && (*f.Type < 0 || *f.Type > 254) {
		v.add(path+".type", "%d is out of range 0-254", *f.Type)
	}
	if f.Code != nil {
		if f.Type == nil {
			v.add(path+".code", "needs a type")
		}
		if *f.Code < 0 || *f.Code > 255 {
			v.add(path+".code", "%d is out of range 0-255", *f.Code)
		}
	}
}

func protoNumber(p *Protocol) (uint8, bool) {
	if p == nil {
		return 0, false
	}
	return p.IANANumber()
}

func (v *validator) entity(path string, e *EntityRule, proto *Protocol, ipv int) {
	v.nets(path+".nets", e.Nets, ipv)
	v.nets(path+".notNets", e.NotNets, ipv)
	v.selector(path+".selector", e.Selector)
	v.selector(path+".notSelector", e.NotSelector)
	v.selector(path+".namespaceSelector", e.NamespaceSelector)
	if (len(e.Ports) > 0 || len(e.NotPorts) > 0) && (proto == nil || !proto.SupportsPorts()) {
		field := "ports"
		if len(e.Ports) == 0 {
			field = "notPorts"
		}
		v.add(path+"."+field, "ports need protocol TCP, UDP, SCTP or UDPLite")
	}
	// Endpoints declare named ports for TCP, UDP and SCTP only: a name under another protocol
	// would match nothing, silently (a notPorts then matches everything).
	if n, ok := protoNumber(proto); ok && proto.SupportsPorts() && n != 6 && n != 17 && n != 132 {
		for _, f := range []struct {
			field string
			ps    []Port
		}{{"ports", e.Ports}, {"notPorts", e.NotPorts}} {
			for i, p := range f.ps {
				if p.PortName != "" {
					v.add(idx(path+"."+f.field, i), "named port %q needs protocol TCP, UDP or SCTP (endpoints declare no %s ports)", p.PortName, proto)
				}
			}
		}
	}
	for i, p := range e.Ports {
		v.port(idx(path+".ports", i), p, true)
	}
	for i, p := range e.NotPorts {
		v.port(idx(path+".notPorts", i), p, true)
	}
	if sa := e.ServiceAccounts; sa != nil {
		for i, n := range sa.Names {
			if e := subdomainError(n); e != "" {
				v.add(idx(path+".serviceAccounts.names", i), "%s", e)
			}
		}
		v.selector(path+".serviceAccounts.selector", sa.Selector)
	}
	if e.Services != nil {
		v.add(path+".services", "Terrace does not match Kubernetes services; must be empty")
	}
}

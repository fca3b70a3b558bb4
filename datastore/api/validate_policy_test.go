package api

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidatePolicy(t *testing.T) {
	gnp := func(spec string) string {
		return hdr + "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n" + spec
	}
	np := func(spec string) string {
		return hdr + "kind: NetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n" + spec
	}
	runValidationCases(t, []validationCase{
		{"empty policy", gnp("  selector: all()\n"), nil},
		{"full rule", np(`  order: 100
  selector: app == 'web'
  serviceAccountSelector: has(sa)
  ingress:
  - action: Allow
    protocol: TCP
    ipVersion: 4
    source:
      nets: [198.18.0.0/16, 192.0.2.7]
      notNets: [198.18.5.0/24]
      selector: role == 'frontend'
      notSelector: has(quarantine)
      namespaceSelector: env in {'prod','staging'}
      serviceAccounts: {names: [api], selector: team == 'a'}
    destination:
      ports: [80, '8000:8100', http]
      notPorts: [8050]
  - action: Deny
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Log
    notProtocol: 58
    notICMP: {type: 1}
    protocol: ICMPv6
  - action: Pass
    protocol: 132
    destination: {ports: [9]}
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53], nets: ['2001:db8::/32']}
`), nil},
		{"gnp extras", gnp("  namespaceSelector: env == 'prod'\n  applyOnForward: false\n  doNotTrack: false\n  preDNAT: false\n  tier: default\n  types: [Ingress]\n"), nil},
		{"gnp applyOnForward refused", gnp("  applyOnForward: true\n"), []string{"spec.applyOnForward"}},
		{"unsupported modes", gnp("  doNotTrack: true\n  preDNAT: true\n  tier: security\n"), []string{"spec.tier", "spec.doNotTrack", "spec.preDNAT"}},
		{"types", gnp("  types: [Ingress, Ingress, Sideways]\n  egress: [{action: Allow}]\n"), []string{"spec.types[1]", "spec.types[2]", "spec.egress"}},
		{"ingress rules without Ingress type", gnp("  types: [Egress]\n  ingress: [{action: Allow}]\n"), []string{"spec.ingress"}},
		{"actions", np("  ingress:\n  - {}\n  - {action: allow}\n  - {action: Reject}\n"), []string{"spec.ingress[0].action", "spec.ingress[1].action", "spec.ingress[2].action"}},
		{"protocols", np("  ingress:\n  - {action: Allow, protocol: GRE}\n  - {action: Allow, protocol: 0}\n  - {action: Allow, notProtocol: 256}\n"),
			[]string{"spec.ingress[0].protocol", "spec.ingress[1].protocol", "spec.ingress[2].notProtocol"}},
		{"ports", np(`  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [0, 70000, '20:10', '1:2:3', Bad_Name]}
  - action: Allow
    destination: {ports: [80]}
  - action: Allow
    protocol: ICMP
    source: {notPorts: [80]}
`), []string{"spec.ingress[0].destination.ports[0]", "spec.ingress[0].destination.ports[1]", "spec.ingress[0].destination.ports[2]",
			"spec.ingress[0].destination.ports[3]", "spec.ingress[0].destination.ports[4]", "spec.ingress[1].destination.ports",
			"spec.ingress[2].source.notPorts"}},
		{"icmp", np(`  egress:
  - {action: Allow, protocol: TCP, icmp: {type: 8}}
  - {action: Allow, protocol: ICMP, icmp: {type: 255, code: 256}}
  - {action: Allow, protocol: ICMP, icmp: {code: 1}}
  - {action: Allow, protocol: ICMP, ipVersion: 6, icmp: {type: 8}}
`), []string{"spec.egress[0].icmp", "spec.egress[1].icmp.type", "spec.egress[1].icmp.code", "spec.egress[2].icmp.code", "spec.egress[3].icmp"}},
		{"nets and ipVersion", np(`  ingress:
  - action: Allow
    ipVersion: 6
    source: {nets: [198.18.0.0/16, bogus]}
    destination: {notNets: ['2001:db8::/32']}
  - {action: Allow, ipVersion: 5}
`), []string{"spec.ingress[0].source.nets[0]", "spec.ingress[0].source.nets[1]", "spec.ingress[1].ipVersion"}},
		{"selectors", np(`  selector: "a =="
  ingress:
  - action: Allow
    source: {selector: "(", notSelector: "has(", namespaceSelector: "x in {"}
    destination: {serviceAccounts: {names: [Bad], selector: "!"}}
`), []string{"spec.selector", "spec.ingress[0].source.selector", "spec.ingress[0].source.notSelector",
			"spec.ingress[0].source.namespaceSelector", "spec.ingress[0].destination.serviceAccounts.names[0]",
			"spec.ingress[0].destination.serviceAccounts.selector"}},
		{"layer 7 and services refused", np("  ingress:\n  - action: Allow\n    http: {methods: [GET]}\n    destination: {services: {name: kubernetes, namespace: default}}\n"),
			[]string{"spec.ingress[0].http", "spec.ingress[0].destination.services"}},
		// Port names follow Kubernetes' rule (a letter, no "--"): "1000-2000" would otherwise be a
		// name no endpoint has, so a Deny matched nothing and a notPorts everything.
		{"port names", np(`  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: ['1000-2000', 'a--b', '-x', '1234', http, web-8080]} # '1234' is the number
  - action: Allow
    protocol: UDPLite
    destination: {ports: [dns, 53], notPorts: [metrics]}
`), []string{"spec.ingress[0].destination.ports[0]", "spec.ingress[0].destination.ports[1]", "spec.ingress[0].destination.ports[2]",
			"spec.ingress[1].destination.ports[0]", "spec.ingress[1].destination.notPorts[0]"}},
		// Rules that can match in no IP family are refused (felix would leave them out of both).
		{"rules matching no family", np(`  egress:
  - {action: Deny, protocol: ICMP, ipVersion: 6}
  - {action: Deny, protocol: ICMPv6, ipVersion: 4}
  - {action: Deny, source: {nets: [10.0.0.0/8]}, destination: {nets: ['2001:db8::/32']}}
  - {action: Deny, protocol: ICMP, destination: {notNets: ['2001:db8::/32']}}
  - {action: Deny, source: {nets: [10.0.0.0/8, '2001:db8::/32']}, destination: {nets: ['2001:db8:1::/48']}}
  - {action: Deny, protocol: ICMPv6, destination: {nets: ['2001:db8::/32', 192.0.2.0/24]}}
  - {action: Deny, ipVersion: 4, protocol: ICMP, source: {notNets: [10.0.0.0/8]}}
  - {action: Allow, destination: {notNets: [0.0.0.0/0]}}
  - {action: Allow, destination: {notNets: [0.0.0.0/0, '2001:db8::/32']}}
  - {action: Allow, destination: {notNets: ['::/0', 0.0.0.0/0]}}
`), []string{"spec.egress[0]", "spec.egress[1]", "spec.egress[2]", "spec.egress[3]", "spec.egress[7]", "spec.egress[9]"}},
		{"network sets", hdr + "kind: GlobalNetworkSet\nmetadata: {name: s}\nspec: {nets: [198.18.0.0/16, 192.0.2.1, '2001:db8::/32', nope]}\n", []string{"spec.nets[3]"}},
	})
}

func TestValidatePolicyOrderFinite(t *testing.T) {
	// YAML .inf cannot even reach the model (JSON has no infinity); a value built in code can.
	inf := math.Inf(1)
	p := &GlobalNetworkPolicy{Metadata: ObjectMeta{Name: "p"}, Spec: GlobalNetworkPolicySpec{Order: &inf}}
	if diff := cmp.Diff([]string{"spec.order"}, fieldPaths(t, p)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPolicyDefaults(t *testing.T) {
	tests := []struct {
		name  string
		spec  string
		types []PolicyType
	}{
		{"no rules", "  selector: all()\n", []PolicyType{"Ingress"}},
		{"ingress only", "  ingress: [{action: Allow}]\n", []PolicyType{"Ingress"}},
		{"egress only", "  egress: [{action: Allow}]\n", []PolicyType{"Egress"}},
		{"both", "  ingress: [{action: Allow}]\n  egress: [{action: Deny}]\n", []PolicyType{"Ingress", "Egress"}},
		{"explicit kept", "  types: [Egress]\n", []PolicyType{"Egress"}},
	}
	for _, tt := range tests {
		r := decodeOne(t, hdr+"kind: NetworkPolicy\nmetadata: {name: p, namespace: n}\nspec:\n"+tt.spec)
		SetDefaults(r)
		s := r.(*NetworkPolicy).Spec
		if diff := cmp.Diff(tt.types, s.Types); diff != "" {
			t.Errorf("%s: types (-want +got):\n%s", tt.name, diff)
		}
		if s.Tier != DefaultTier {
			t.Errorf("%s: tier = %q", tt.name, s.Tier)
		}
	}
	r := decodeOne(t, hdr+`kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  ingress:
  - action: Allow
    protocol: tcp
    source: {nets: [198.18.0.5/16, 192.0.2.1]}
`)
	SetDefaults(r)
	rule := r.(*GlobalNetworkPolicy).Spec.Ingress[0]
	if rule.Protocol.Name != "TCP" {
		t.Errorf("protocol not canonicalized: %q", rule.Protocol.Name)
	}
	if diff := cmp.Diff([]string{"198.18.0.0/16", "192.0.2.1/32"}, rule.Source.Nets); diff != "" {
		t.Errorf("nets not normalized (-want +got):\n%s", diff)
	}
}

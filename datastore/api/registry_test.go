package api

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookupKind(t *testing.T) {
	tests := map[string]string{
		"Node": KindNode, "nodes": KindNode, "NODE": KindNode,
		"ippool": KindIPPool, "ippools": KindIPPool, "pool": KindIPPool, "IPPool": KindIPPool,
		"ipamconfig": KindIPAMConfiguration, "ipamconfiguration": KindIPAMConfiguration,
		"bgpconfig": KindBGPConfiguration, "bgpconfigurations": KindBGPConfiguration,
		"bgpfilter": KindBGPFilter, "BGPFilters": KindBGPFilter, "filter": KindBGPFilter, "filters": KindBGPFilter,
		"bgppeer": KindBGPPeer, "BGPPeers": KindBGPPeer,
		"felixconfig": KindFelixConfiguration, "felixconfiguration": KindFelixConfiguration,
		"wep": KindWorkloadEndpoint, "workloadendpoints": KindWorkloadEndpoint,
		"hep": KindHostEndpoint, "hostendpoint": KindHostEndpoint,
		"np": KindNetworkPolicy, "networkpolicies": KindNetworkPolicy,
		"gnp": KindGlobalNetworkPolicy, "GlobalNetworkPolicy": KindGlobalNetworkPolicy,
		"netset": KindNetworkSet, "networksets": KindNetworkSet,
		"gnetset": KindGlobalNetworkSet, "globalnetworksets": KindGlobalNetworkSet,
		"globalnetworkpolicies.projectcalico.org":     KindGlobalNetworkPolicy,
		"bgpfilters.projectcalico.org":                KindBGPFilter,
		"globalnetworkpolicies.crd.projectcalico.org": KindGlobalNetworkPolicy,
		"ippools.terrace.dev":                         KindIPPool,
		// calicoctl's short names, which scripts written for Calico use.
		"ipps": KindIPPool, "pol": KindNetworkPolicy, "pols": KindNetworkPolicy,
	}
	for name, want := range tests {
		got, err := LookupKind(name)
		if err != nil || got.Kind != want {
			t.Errorf("LookupKind(%q) = %q, %v; want %q", name, got.Kind, err, want)
		}
	}
	for _, bad := range []string{"", "pod", "ippoolz", "gnps2"} {
		if _, err := LookupKind(bad); err == nil {
			t.Errorf("LookupKind(%q): want error", bad)
		}
	}
}

func TestKindsRegistry(t *testing.T) {
	var names []string
	seen := map[string]string{}
	for _, k := range Kinds() {
		names = append(names, k.Kind)
		r := k.New()
		if r.GetTypeMeta().Kind != k.Kind || r.GetTypeMeta().APIVersion != GroupVersion {
			t.Errorf("%s.New() TypeMeta = %+v", k.Kind, *r.GetTypeMeta())
		}
		if info, err := KindOf(r); err != nil || info.Kind != k.Kind {
			t.Errorf("KindOf(%s.New()) = %q, %v", k.Kind, info.Kind, err)
		}
		// Every accepted name must lead to exactly one kind.
		for _, n := range append([]string{k.Plural}, k.Aliases...) {
			if other, dup := seen[n]; dup {
				t.Errorf("name %q used by %s and %s", n, other, k.Kind)
			}
			seen[n] = k.Kind
		}
	}
	want := []string{"Node", "IPPool", "IPAMConfiguration", "BGPConfiguration", "BGPFilter", "BGPPeer",
		"FelixConfiguration", "WorkloadEndpoint", "HostEndpoint", "NetworkPolicy", "GlobalNetworkPolicy", "NetworkSet", "GlobalNetworkSet"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("Kinds() order (-want +got):\n%s", diff)
	}
	namespaced := map[string]bool{}
	for _, k := range Kinds() {
		namespaced[k.Kind] = k.Namespaced
	}
	for _, k := range []string{"WorkloadEndpoint", "NetworkPolicy", "NetworkSet"} {
		if !namespaced[k] {
			t.Errorf("%s must be namespaced", k)
		}
	}
	if namespaced["GlobalNetworkPolicy"] || namespaced["Node"] {
		t.Errorf("global kinds must not be namespaced")
	}
}

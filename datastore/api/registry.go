package api

import (
	"fmt"
	"strings"
)

// Kind names.
const (
	KindNode                = "Node"
	KindIPPool              = "IPPool"
	KindIPAMConfiguration   = "IPAMConfiguration"
	KindBGPConfiguration    = "BGPConfiguration"
	KindBGPFilter           = "BGPFilter"
	KindBGPPeer             = "BGPPeer"
	KindFelixConfiguration  = "FelixConfiguration"
	KindWorkloadEndpoint    = "WorkloadEndpoint"
	KindHostEndpoint        = "HostEndpoint"
	KindNetworkPolicy       = "NetworkPolicy"
	KindGlobalNetworkPolicy = "GlobalNetworkPolicy"
	KindNetworkSet          = "NetworkSet"
	KindGlobalNetworkSet    = "GlobalNetworkSet"
)

// kinds is the registry in a stable order: cluster configuration first, then infrastructure, then
// endpoints and policy, so that applying a list in this order never references something later.
var kinds = []KindInfo{
	{Kind: KindNode, Plural: "nodes", Aliases: []string{"node", "no"},
		New: func() Resource { return &Node{TypeMeta: tm(KindNode)} }},
	{Kind: KindIPPool, Plural: "ippools", Aliases: []string{"ippool", "pool", "pools", "ipp", "ipps"},
		New: func() Resource { return &IPPool{TypeMeta: tm(KindIPPool)} }},
	{Kind: KindIPAMConfiguration, Plural: "ipamconfigurations",
		Aliases: []string{"ipamconfiguration", "ipamconfig", "ipamconfigs"},
		New:     func() Resource { return &IPAMConfiguration{TypeMeta: tm(KindIPAMConfiguration)} }},
	{Kind: KindBGPConfiguration, Plural: "bgpconfigurations",
		Aliases: []string{"bgpconfiguration", "bgpconfig", "bgpconfigs"},
		New:     func() Resource { return &BGPConfiguration{TypeMeta: tm(KindBGPConfiguration)} }},
	{Kind: KindBGPFilter, Plural: "bgpfilters", Aliases: []string{"bgpfilter", "filter", "filters"},
		New: func() Resource { return &BGPFilter{TypeMeta: tm(KindBGPFilter)} }},
	{Kind: KindBGPPeer, Plural: "bgppeers", Aliases: []string{"bgppeer", "peer", "peers", "bgpp"},
		New: func() Resource { return &BGPPeer{TypeMeta: tm(KindBGPPeer)} }},
	{Kind: KindFelixConfiguration, Plural: "felixconfigurations",
		Aliases: []string{"felixconfiguration", "felixconfig", "felixconfigs"},
		New:     func() Resource { return &FelixConfiguration{TypeMeta: tm(KindFelixConfiguration)} }},
	{Kind: KindWorkloadEndpoint, Plural: "workloadendpoints", Namespaced: true,
		Aliases: []string{"workloadendpoint", "wep", "weps"},
		New:     func() Resource { return &WorkloadEndpoint{TypeMeta: tm(KindWorkloadEndpoint)} }},
	{Kind: KindHostEndpoint, Plural: "hostendpoints", Aliases: []string{"hostendpoint", "hep", "heps"},
		New: func() Resource { return &HostEndpoint{TypeMeta: tm(KindHostEndpoint)} }},
	{Kind: KindNetworkPolicy, Plural: "networkpolicies", Namespaced: true,
		Aliases: []string{"networkpolicy", "np", "policy", "policies", "pol", "pols"},
		New:     func() Resource { return &NetworkPolicy{TypeMeta: tm(KindNetworkPolicy)} }},
	{Kind: KindGlobalNetworkPolicy, Plural: "globalnetworkpolicies",
		Aliases: []string{"globalnetworkpolicy", "gnp", "gnps"},
		New:     func() Resource { return &GlobalNetworkPolicy{TypeMeta: tm(KindGlobalNetworkPolicy)} }},
	{Kind: KindNetworkSet, Plural: "networksets", Namespaced: true,
		Aliases: []string{"networkset", "netset", "netsets"},
		New:     func() Resource { return &NetworkSet{TypeMeta: tm(KindNetworkSet)} }},
	{Kind: KindGlobalNetworkSet, Plural: "globalnetworksets",
		Aliases: []string{"globalnetworkset", "gnetset", "gnetsets", "gns"},
		New:     func() Resource { return &GlobalNetworkSet{TypeMeta: tm(KindGlobalNetworkSet)} }},
}

func tm(kind string) TypeMeta { return TypeMeta{Kind: kind, APIVersion: GroupVersion} }

// Kinds returns every kind in a stable order (a copy; callers may modify it).
func Kinds() []KindInfo {
	out := make([]KindInfo, len(kinds))
	copy(out, kinds)
	return out
}

// LookupKind finds a kind by its Kind, plural, singular or short name, case-insensitively. A
// Kubernetes-style group suffix (".projectcalico.org", ".terrace.dev") is ignored.
func LookupKind(name string) (KindInfo, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	// Longest first: ".projectcalico.org" would leave "….crd" of a CRD name.
	for _, suffix := range []string{".crd.projectcalico.org", ".projectcalico.org", ".terrace.dev"} {
		if t, ok := strings.CutSuffix(n, suffix); ok {
			n = t
			break
		}
	}
	for _, k := range kinds {
		if n == strings.ToLower(k.Kind) || n == k.Plural {
			return k, nil
		}
		for _, a := range k.Aliases {
			if n == a {
				return k, nil
			}
		}
	}
	return KindInfo{}, fmt.Errorf("look up kind %q: unknown kind (known: %s)", name, kindNames())
}

// IsListKind reports whether kind names a list of resources: "List", or a kind's own list kind
// ("IPPoolList", "NetworkPolicyList"), which calicoctl prints for `get -o yaml`.
func IsListKind(kind string) bool {
	if kind == "List" {
		return true
	}
	base, ok := strings.CutSuffix(kind, "List")
	if !ok {
		return false
	}
	for _, k := range kinds {
		if k.Kind == base {
			return true
		}
	}
	return false
}

func kindNames() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Kind
	}
	return strings.Join(names, ", ")
}

// KindOf returns the registry entry for a resource's Go type (ignoring its TypeMeta, which may be
// empty or wrong on a value built in code).
func KindOf(r Resource) (KindInfo, error) {
	var name string
	switch r.(type) {
	case *Node:
		name = KindNode
	case *IPPool:
		name = KindIPPool
	case *IPAMConfiguration:
		name = KindIPAMConfiguration
	case *BGPConfiguration:
		name = KindBGPConfiguration
	case *BGPFilter:
		name = KindBGPFilter
	case *BGPPeer:
		name = KindBGPPeer
	case *FelixConfiguration:
		name = KindFelixConfiguration
	case *WorkloadEndpoint:
		name = KindWorkloadEndpoint
	case *HostEndpoint:
		name = KindHostEndpoint
	case *NetworkPolicy:
		name = KindNetworkPolicy
	case *GlobalNetworkPolicy:
		name = KindGlobalNetworkPolicy
	case *NetworkSet:
		name = KindNetworkSet
	case *GlobalNetworkSet:
		name = KindGlobalNetworkSet
	default:
		return KindInfo{}, fmt.Errorf("look up kind of %T: not a Terrace resource", r)
	}
	return LookupKind(name)
}

func (r *Node) GetTypeMeta() *TypeMeta                  { return &r.TypeMeta }
func (r *Node) GetObjectMeta() *ObjectMeta              { return &r.Metadata }
func (r *IPPool) GetTypeMeta() *TypeMeta                { return &r.TypeMeta }
func (r *IPPool) GetObjectMeta() *ObjectMeta            { return &r.Metadata }
func (r *IPAMConfiguration) GetTypeMeta() *TypeMeta     { return &r.TypeMeta }
func (r *IPAMConfiguration) GetObjectMeta() *ObjectMeta { return &r.Metadata }
func (r *BGPConfiguration) GetTypeMeta() *TypeMeta      { return &r.TypeMeta }
func (r *BGPConfiguration) GetObjectMeta() *ObjectMeta  { return &r.Metadata }
func (r *BGPFilter) GetTypeMeta() *TypeMeta             { return &r.TypeMeta }
func (r *BGPFilter) GetObjectMeta() *ObjectMeta         { return &r.Metadata }
func (r *BGPPeer) GetTypeMeta() *TypeMeta               { return &r.TypeMeta }
func (r *BGPPeer) GetObjectMeta() *ObjectMeta           { return &r.Metadata }
func (r *FelixConfiguration) GetTypeMeta() *TypeMeta    { return &r.TypeMeta }
func (r *FelixConfiguration) GetObjectMeta() *ObjectMeta {
	return &r.Metadata
}
func (r *WorkloadEndpoint) GetTypeMeta() *TypeMeta        { return &r.TypeMeta }
func (r *WorkloadEndpoint) GetObjectMeta() *ObjectMeta    { return &r.Metadata }
func (r *HostEndpoint) GetTypeMeta() *TypeMeta            { return &r.TypeMeta }
func (r *HostEndpoint) GetObjectMeta() *ObjectMeta        { return &r.Metadata }
func (r *NetworkPolicy) GetTypeMeta() *TypeMeta           { return &r.TypeMeta }
func (r *NetworkPolicy) GetObjectMeta() *ObjectMeta       { return &r.Metadata }
func (r *GlobalNetworkPolicy) GetTypeMeta() *TypeMeta     { return &r.TypeMeta }
func (r *GlobalNetworkPolicy) GetObjectMeta() *ObjectMeta { return &r.Metadata }
func (r *NetworkSet) GetTypeMeta() *TypeMeta              { return &r.TypeMeta }
func (r *NetworkSet) GetObjectMeta() *ObjectMeta          { return &r.Metadata }
func (r *GlobalNetworkSet) GetTypeMeta() *TypeMeta        { return &r.TypeMeta }
func (r *GlobalNetworkSet) GetObjectMeta() *ObjectMeta    { return &r.Metadata }

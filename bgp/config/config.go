// Package config computes what this host's BGP speaker should do — its global settings, the
// sessions it keeps and the prefixes it advertises — from the datastore's Nodes, BGPPeers,
// BGPConfigurations and IPPools and from IPAM's view of this host. It is pure: it must never do
// I/O, talk to etcd or the kernel, or hold state; passwords are resolved through a caller-given
// function so that reading node-local secret files stays with the caller.
package config

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/datastore/api"
)

// PasswordFunc resolves a BGPPeer's password reference to the secret (read from a node-local
// file by the caller). It is never given anything stored in etcd other than the reference.
type PasswordFunc func(ref *api.BGPPassword) (string, error)

// Input is everything the computation looks at.
type Input struct {
	NodeName string
	Nodes    []*api.Node
	Peers    []*api.BGPPeer
	// Filters are the BGPFilters peers may name.
	Filters []*api.BGPFilter
	// Configs holds the BGPConfigurations: "default" and, optionally, "node.<NodeName>" which
	// overrides the default's fields it sets.
	Configs []*api.BGPConfiguration
	Pools   []*api.IPPool
	// Blocks are the IPAM blocks affine to this node; Borrowed the addresses this node holds in
	// blocks affine to other nodes.
	Blocks   []netip.Prefix
	Borrowed []netip.Addr
	Password PasswordFunc
}

// Desired is the computed speaker configuration.
type Desired struct {
	Global     speaker.Global
	Peers      []speaker.Peer
	Advertised map[netip.Prefix]speaker.Advert
	// Warnings name resources that were skipped (bad peer address, unknown community, ...); the
	// rest of the configuration is still usable.
	Warnings []string
	// LogLevel is BGPConfiguration logSeverityScreen for this node ("" when neither object sets it).
	LogLevel string
}

// Default graceful-restart time (seconds) when a peer or the mesh does not set maxRestartTime;
// BIRD's and Calico's default.
const defaultRestartTime = 120

// self is this node as the computation needs it.
type self struct {
	name      string
	node      *api.Node
	v4, v6    netip.Addr
	asn       uint32
	clusterID string
}

// Compute returns the desired speaker configuration. The error is only for a node that cannot
// run BGP at all (not found, no BGP addresses); problems with single resources become Warnings.
func Compute(in Input) (Desired, error) {
	var d Desired
	me, err := findSelf(in)
	if err != nil {
		return d, err
	}
	cfg := mergeConfigs(in.Configs, in.NodeName)
	me.asn = nodeASN(me.node, cfg)
	d.LogLevel = cfg.LogSeverityScreen

	d.Global = speaker.Global{
		ASN:             me.asn,
		RouterID:        routerID(me),
		ListenPort:      int32(api.DefaultListenPort),
		GracefulRestart: speaker.GracefulRestart{Enabled: true, RestartTime: defaultRestartTime, NotificationEnabled: true},
	}
	if cfg.ListenPort != 0 {
		d.Global.ListenPort = int32(cfg.ListenPort)
	}
	if strings.EqualFold(cfg.BindMode, "NodeIP") {
		for _, a := range []netip.Addr{me.v4, me.v6} {
			if a.IsValid() {
				d.Global.ListenAddresses = append(d.Global.ListenAddresses, a)
			}
		}
	}
	for _, a := range []netip.Addr{me.v4, me.v6} {
		if a.IsValid() {
			d.Global.LocalAddresses = append(d.Global.LocalAddresses, a)
		}
	}
	for _, na := range me.node.Spec.Addresses {
		if a, err := parseHostAddr(na.Address); err == nil && !containsAddr(d.Global.LocalAddresses, a) {
			d.Global.LocalAddresses = append(d.Global.LocalAddresses, a)
		}
	}

	c := &computation{in: in, me: me, cfg: cfg, d: &d}
	c.peers()
	c.adverts()
	return d, nil
}

type computation struct {
	in  Input
	me  self
	cfg api.BGPConfigurationSpec
	d   *Desired
}

func (c *computation) warnf(format string, args ...any) {
	c.d.Warnings = append(c.d.Warnings, fmt.Sprintf(format, args...))
}

func findSelf(in Input) (self, error) {
	if in.NodeName == "" {
		return self{}, errors.New("compute bgp config: node name is empty")
	}
	for _, n := range in.Nodes {
		if n == nil || n.Metadata.Name != in.NodeName {
			continue
		}
		me := self{name: in.NodeName, node: n}
		v4, v6, err := nodeAddrs(n)
		if err != nil {
			return self{}, fmt.Errorf("compute bgp config: node %s: %w", in.NodeName, err)
		}
		if !v4.IsValid() && !v6.IsValid() {
			return self{}, fmt.Errorf("compute bgp config: node %s has no BGP address (spec.bgp.ipv4Address/ipv6Address)", in.NodeName)
		}
		me.v4, me.v6 = v4, v6
		if n.Spec.BGP != nil {
			me.clusterID = n.Spec.BGP.RouteReflectorClusterID
		}
		return me, nil
	}
	return self{}, fmt.Errorf("compute bgp config: node %s not found", in.NodeName)
}

// nodeAddrs reads spec.bgp.ipv4Address/ipv6Address, which Calico stores with the subnet length.
func nodeAddrs(n *api.Node) (v4, v6 netip.Addr, err error) {
	if n.Spec.BGP == nil {
		return v4, v6, nil
	}
	if s := n.Spec.BGP.IPv4Address; s != "" {
		if v4, err = parseHostAddr(s); err != nil || !v4.Is4() {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("parse ipv4Address %q: not an IPv4 address", s)
		}
	}
	if s := n.Spec.BGP.IPv6Address; s != "" {
		if v6, err = parseHostAddr(s); err != nil || !v6.Is6() {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("parse ipv6Address %q: not an IPv6 address", s)
		}
	}
	return v4, v6, nil
}

// parseHostAddr accepts "192.0.2.1" or "192.0.2.1/24".
func parseHostAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("parse address %q: %w", s, err)
		}
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse address %q: %w", s, err)
	}
	return a.Unmap(), nil
}

// mergeConfigs overlays "node.<name>" on "default"; fields the node object leaves empty inherit.
func mergeConfigs(cfgs []*api.BGPConfiguration, node string) api.BGPConfigurationSpec {
	var def, per *api.BGPConfigurationSpec
	for _, c := range cfgs {
		if c == nil {
			continue
		}
		switch c.Metadata.Name {
		case api.DefaultConfigName:
			def = &c.Spec
		case api.NodeConfigPrefix + node:
			per = &c.Spec
		}
	}
	var out api.BGPConfigurationSpec
	if def != nil {
		out = *def
	}
	if per == nil {
		return out
	}
	if per.LogSeverityScreen != "" {
		out.LogSeverityScreen = per.LogSeverityScreen
	}
	if per.NodeToNodeMeshEnabled != nil {
		out.NodeToNodeMeshEnabled = per.NodeToNodeMeshEnabled
	}
	if per.ASNumber != nil {
		out.ASNumber = per.ASNumber
	}
	if per.ListenPort != 0 {
		out.ListenPort = per.ListenPort
	}
	if per.BindMode != "" {
		out.BindMode = per.BindMode
	}
	if per.ServiceClusterIPs != nil {
		out.ServiceClusterIPs = per.ServiceClusterIPs
	}
	if per.ServiceExternalIPs != nil {
		out.ServiceExternalIPs = per.ServiceExternalIPs
	}
	if per.ServiceLoadBalancerIPs != nil {
		out.ServiceLoadBalancerIPs = per.ServiceLoadBalancerIPs
	}
	if per.Communities != nil {
		out.Communities = per.Communities
	}
	if per.PrefixAdvertisements != nil {
		out.PrefixAdvertisements = per.PrefixAdvertisements
	}
	return out
}

func meshEnabled(cfg api.BGPConfigurationSpec) bool {
	return cfg.NodeToNodeMeshEnabled == nil || *cfg.NodeToNodeMeshEnabled
}

// nodeASN is the node's own AS, else the cluster default, else 64512.
func nodeASN(n *api.Node, cfg api.BGPConfigurationSpec) uint32 {
	if n.Spec.BGP != nil && n.Spec.BGP.ASNumber != nil && *n.Spec.BGP.ASNumber != 0 {
		return uint32(*n.Spec.BGP.ASNumber)
	}
	if cfg.ASNumber != nil && *cfg.ASNumber != 0 {
		return uint32(*cfg.ASNumber)
	}
	return uint32(api.DefaultASNumber)
}

// routerID is the node's IPv4 address; an IPv6-only node gets a stable ID derived from its name
// (as Calico does), because the BGP identifier must be a 32-bit value.
func routerID(me self) netip.Addr {
	if me.v4.IsValid() {
		return me.v4
	}
	h := fnv.New32a()
	h.Write([]byte(me.name))
	v := h.Sum32()
	if v == 0 {
		v = 1
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

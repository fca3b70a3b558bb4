package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

var (
	gw4 = net.ParseIP(GatewayIPv4).To4()
	gw6 = net.ParseIP(GatewayIPv6)
)

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Attachment is what ADD produced, enough to build the CNI result.
type Attachment struct {
	HostIf, PodIf, PodMAC, Sandbox string
	IPv4, IPv6                     []netip.Addr
}

// BuildResult is the CNI 1.1 result of an attachment: the host side and the pod side as
// interfaces (the pod side with its sandbox), each address as a /32 or /128 on the pod side with
// the fixed gateway, and the pod's routes (the link-scoped gateway route and the defaults).
func BuildResult(a Attachment) *current.Result {
	podIdx := 1
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.HostIf, Mac: HostMAC},
			{Name: a.PodIf, Mac: a.PodMAC, Sandbox: a.Sandbox},
		},
	}
	for _, ip := range a.IPv4 {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: &podIdx, Address: *prefixNet(netip.PrefixFrom(ip, 32)), Gateway: gw4})
	}
	for _, ip := range a.IPv6 {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: &podIdx, Address: *prefixNet(netip.PrefixFrom(ip, 128)), Gateway: gw6})
	}
	if len(a.IPv4) > 0 {
		link := int(scopeLink)
		res.Routes = append(res.Routes,
			&types.Route{Dst: net.IPNet{IP: gw4, Mask: net.CIDRMask(32, 32)}, Scope: &link},
			&types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw4})
	}
	if len(a.IPv6) > 0 {
		res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: gw6})
	}
	return res
}

// scopeLink is RT_SCOPE_LINK, spelled out so this file needs no Linux-only import.
const scopeLink = 253

// BuildIPAMResult is the result of the IPAM plugin alone: addresses without interfaces, for the
// calling plugin to put where it wants.
func BuildIPAMResult(v4, v6 []netip.Addr) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, ip := range v4 {
		res.IPs = append(res.IPs, &current.IPConfig{Address: *prefixNet(netip.PrefixFrom(ip, 32))})
	}
	for _, ip := range v6 {
		res.IPs = append(res.IPs, &current.IPConfig{Address: *prefixNet(netip.PrefixFrom(ip, 128))})
	}
	return res
}

// resultAddrs returns the pod-side addresses of a (previous) result, split by family. With
// several interfaces only addresses on the interface named ifName (or with no interface) count.
func resultAddrs(res *current.Result, ifName string) (v4, v6 []netip.Addr, err error) {
	for _, ipc := range res.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(res.Interfaces) {
				return nil, nil, fmt.Errorf("read result: ip %s names interface %d of %d", ipc.Address.String(), i, len(res.Interfaces))
			}
			if res.Interfaces[i].Name != ifName {
				continue
			}
		}
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, nil, fmt.Errorf("read result: bad address %v", ipc.Address.IP)
		}
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6, nil
}

func splitFamilies(ips []netip.Addr) (v4, v6 []netip.Addr) {
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			v4 = append(v4, ip.Unmap())
		} else {
			v6 = append(v6, ip)
		}
	}
	return v4, v6
}

func addrOf(ip net.IP) (netip.Addr, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("read result: bad address %v", ip)
	}
	return a.Unmap(), nil
}

// addPrevResult reads ADD's prevResult, nil when there is none.
func addPrevResult(stdin []byte) (*current.Result, error) {
	var nc types.NetConf
	if err := json.Unmarshal(stdin, &nc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration: "+err.Error(), "")
	}
	if nc.RawPrevResult == nil {
		return nil, nil
	}
	if err := version.ParsePrevResult(&nc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult: "+err.Error(), "")
	}
	res, err := current.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "convert prevResult: "+err.Error(), "")
	}
	return res, nil
}

// mergePrevResult appends this plugin's interfaces, addresses and routes to what the plugins
// before it in the chain returned; its addresses' interface indexes move past theirs.
func mergePrevResult(prev, res *current.Result) *current.Result {
	if prev == nil {
		return res
	}
	out := *prev
	out.CNIVersion = res.CNIVersion
	off := len(prev.Interfaces)
	out.Interfaces = append(slices.Clone(prev.Interfaces), res.Interfaces...)
	out.IPs = slices.Clone(prev.IPs)
	for _, ipc := range res.IPs {
		c := *ipc
		if c.Interface != nil {
			i := *c.Interface + off
			c.Interface = &i
		}
		out.IPs = append(out.IPs, &c)
	}
	out.Routes = append(slices.Clone(prev.Routes), res.Routes...)
	return &out
}

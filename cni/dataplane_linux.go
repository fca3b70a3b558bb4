package cni

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinuxDataplane wires workloads with netlink in the calling thread's namespace (the host's) and
// in the pod's namespace.
type LinuxDataplane struct{}

// NewLinuxDataplane returns the kernel dataplane.
func NewLinuxDataplane() *LinuxDataplane { return &LinuxDataplane{} }

var hostMAC, _ = net.ParseMAC(HostMAC)

// checkNetnsPath refuses a path that cannot be a namespace file before anything opens it: a
// namespace (nsfs, or /proc/<pid>/ns/net) is a regular file, and opening a FIFO or a device given
// as CNI_NETNS would block the command, or worse, until something else acts.
func checkNetnsPath(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("open netns %s: %w (%v)", path, ErrNetNSMissing, err)
		}
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("open netns: %w", &notNamespaceError{path: path, kind: fileKind(fi.Mode())})
	}
	return nil
}

// notNamespaceError is a namespace path that leads to something else; for the commands it counts
// as a namespace that does not exist.
type notNamespaceError struct{ path, kind string }

func (e *notNamespaceError) Error() string {
	return fmt.Sprintf("%s is a %s, not a network namespace", e.path, e.kind)
}

func (e *notNamespaceError) Is(target error) bool { return target == ErrNetNSMissing }

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

func openNS(path string) (ns.NetNS, error) {
	if err := checkNetnsPath(path); err != nil {
		return nil, err
	}
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil, fmt.Errorf("open netns %s: %w (%v)", path, ErrNetNSMissing, err)
		}
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return n, nil
}

// inNS runs fn inside podNS. A panic in fn becomes an error: ns.Do runs fn on a goroutine of its
// own, where nothing else would recover it, and inside terrace-node that would stop the whole
// agent (felix and bgp with it) instead of failing one command.
func inNS(podNS ns.NetNS, fn func() error) error {
	return podNS.Do(func(ns.NetNS) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic inside the pod's namespace: %v\n%s", r, debug.Stack())
			}
		}()
		return fn()
	})
}

// PodInterfaceExists looks ifName up inside the pod's namespace.
func (d *LinuxDataplane) PodInterfaceExists(netnsPath, ifName string) (bool, error) {
	podNS, err := openNS(netnsPath)
	if err != nil {
		return false, err
	}
	defer podNS.Close()
	exists := false
	err = inNS(podNS, func() error {
		_, err := netlink.LinkByName(ifName)
		if err == nil {
			exists = true
			return nil
		}
		if isNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("look up %s in %s: %w", ifName, netnsPath, err)
	}
	return exists, nil
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

// Setup creates the veth with its pod end directly inside the pod namespace (moving an interface
// between namespaces costs ~15x more, FIELD-NOTES.md) and wires both ends.
func (d *LinuxDataplane) Setup(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) (err error) {
	podMAC, err := net.ParseMAC(w.PodMAC)
	if err != nil {
		return fmt.Errorf("parse pod MAC address %q: %w", w.PodMAC, err)
	}
	podNS, err := openNS(w.NetNS)
	if err != nil {
		return err
	}
	defer podNS.Close()
	// One netlink socket for the host side's requests: the package functions open one per
	// request, about 5 % of an ADD's CPU.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink socket: %w", err)
	}
	defer nl.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: w.HostIf, MTU: w.MTU, HardwareAddr: hostMAC},
		PeerName:         w.PodIf,
		PeerHardwareAddr: podMAC,
		PeerNamespace:    netlink.NsFd(int(podNS.Fd())),
		PeerMTU:          uint32(w.MTU),
	}
	if err := nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return cniErrorf(CodeInterfaceExists, "create veth %s/%s: an interface of that name already exists (host side %s or %s in the pod)", w.HostIf, w.PodIf, w.HostIf, w.PodIf)
		}
		return fmt.Errorf("create veth %s with peer %s in %s: %w", w.HostIf, w.PodIf, w.NetNS, err)
	}
	defer func() {
		if err != nil {
			if rerr := d.Remove(w.HostIf); rerr != nil {
				err = errors.Join(err, &VethLeftError{HostIf: w.HostIf, Err: rerr})
			}
		}
	}()
	if err := fail("veth"); err != nil {
		return err
	}
	// LinkAdd has looked the new link up for its index already; a second lookup costs every pod
	// a netlink round trip.
	var host netlink.Link = veth
	if veth.Index == 0 {
		if host, err = nl.LinkByName(w.HostIf); err != nil {
			return fmt.Errorf("find host side %s: %w", w.HostIf, err)
		}
	}
	if err := configureHostSide(nl, host, w.IPv6Host); err != nil {
		return err
	}
	if err := fail("host"); err != nil {
		return err
	}
	if w.IPv4, w.IPv6, err = addresses(); err != nil {
		return err
	}
	if len(w.IPv6) > 0 && !w.IPv6Host {
		return fmt.Errorf("IPv6 addresses %v for host side %s, which was not readied for IPv6", w.IPv6, w.HostIf)
	}
	if err := inNS(podNS, func() error { return configurePodSide(w) }); err != nil {
		return fmt.Errorf("configure pod side %s in %s: %w", w.PodIf, w.NetNS, err)
	}
	if err := fail("pod"); err != nil {
		return err
	}
	for _, ip := range slices.Concat(w.IPv4, w.IPv6) {
		r := hostRoute(host.Attrs().Index, ip)
		if err := nl.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s dev %s: %w", r.Dst, w.HostIf, err)
		}
	}
	return fail("route")
}

func hostRoute(ifIndex int, ip netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: ifIndex,
		Dst:       prefixNet(netip.PrefixFrom(ip, ip.BitLen())),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  netlink.RouteProtocol(RouteProtocol),
	}
}

// configureHostSide sets the sysctls of the pure-L3 host side. They must be written before the
// link comes up: with accept_dad on, the link-local gateway address would be tentative (and
// useless to the pod) for a second.
func configureHostSide(nl *netlink.Handle, host netlink.Link, v6 bool) error {
	name := host.Attrs().Name
	settings, v6settings := hostSysctls(name, v6)
	for _, s := range settings {
		if err := writeSysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	for _, s := range v6settings {
		// A kernel with IPv6 disabled has no such files; only an IPv6 pod needs them.
		if err := writeSysctl(s[0], s[1]); err != nil && (v6 || !errors.Is(err, os.ErrNotExist)) {
			return err
		}
	}
	if err := nl.LinkSetUp(host); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	if v6 {
		// The pod's IPv6 gateway. The kernel derives it from HostMAC only on a host whose
		// addr_gen_mode is EUI-64; stable-privacy or random link-local hosts would leave the pod
		// without a gateway, so it is set explicitly (replace: on EUI-64 hosts it is there).
		gw := &netlink.Addr{IPNet: &net.IPNet{IP: gw6, Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD, Scope: unix.RT_SCOPE_LINK}
		if err := nl.AddrReplace(host, gw); err != nil {
			return fmt.Errorf("add gateway address %s to %s: %w", GatewayIPv6, name, err)
		}
	}
	return nil
}

// hostSysctls are the host side's settings: those every pod needs, and the IPv6 ones (all
// required for an IPv6 pod; without one, written where the kernel has them).
func hostSysctls(name string, v6 bool) (settings, v6settings [][2]string) {
	settings = [][2]string{
		{"net/ipv4/conf/" + name + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + name + "/proxy_delay", "0"},
		{"net/ipv4/conf/" + name + "/forwarding", "1"},
		{"net/ipv4/conf/" + name + "/route_localnet", "1"},
		// Strict reverse-path filtering: a pod may only send from addresses routed to it, so it
		// cannot pass for another pod in others' policy. felix keeps this setting too.
		{"net/ipv4/conf/" + name + "/rp_filter", "1"},
	}
	v6settings = [][2]string{
		{"net/ipv6/conf/" + name + "/accept_ra", "0"},
		{"net/ipv6/conf/" + name + "/accept_dad", "0"},
	}
	if v6 {
		v6settings = append(v6settings,
			[2]string{"net/ipv6/conf/" + name + "/disable_ipv6", "0"},
			[2]string{"net/ipv6/conf/" + name + "/proxy_ndp", "1"},
			[2]string{"net/ipv6/conf/" + name + "/forwarding", "1"})
	}
	return settings, v6settings
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", strings.ReplaceAll(key, "/", "."), err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// configurePodSide runs inside the pod namespace.
func configurePodSide(w Wiring) error {
	// Opened here, inside the pod's namespace, so its requests go to that namespace.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink socket: %w", err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(w.PodIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", w.PodIf, err)
	}
	// The endpoint was written with w.PodMAC while the veth was made: it must be the one.
	if want, err := net.ParseMAC(w.PodMAC); err != nil || !bytes.Equal(link.Attrs().HardwareAddr, want) {
		return fmt.Errorf("%s has MAC address %s, want %s", w.PodIf, link.Attrs().HardwareAddr, w.PodMAC)
	}
	if len(w.IPv6) > 0 {
		// A namespace may inherit disable_ipv6=1 (a host booted with IPv6 off by default, or
		// devconf_inherit_init_net): the IPv6 address could not be added.
		for _, kv := range [][2]string{{"disable_ipv6", "0"}, {"accept_dad", "0"}} {
			if err := writeSysctl("net/ipv6/conf/"+w.PodIf+"/"+kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", w.PodIf, err)
	}
	idx := link.Attrs().Index
	for _, ip := range slices.Concat(w.IPv4, w.IPv6) {
		a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(ip, ip.BitLen()))}
		if ip.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add address %s to %s: %w", a.IPNet, w.PodIf, err)
		}
	}
	if len(w.IPv4) > 0 {
		gwNet := &net.IPNet{IP: gw4, Mask: net.CIDRMask(32, 32)}
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: gwNet, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("add route %s dev %s: %w", GatewayIPv4, w.PodIf, err)
		}
		def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: def, Gw: gw4}); err != nil {
			return fmt.Errorf("add default route via %s: %w", GatewayIPv4, err)
		}
	}
	if len(w.IPv6) > 0 {
		def := &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: def, Gw: gw6}); err != nil {
			return fmt.Errorf("add default route via %s: %w", GatewayIPv6, err)
		}
	}
	return nil
}

// Remove deletes the host side of a veth. Only names with Terrace's prefix are touched: anything
// else is not Terrace's to delete (CONVENTIONS.md).
func (d *LinuxDataplane) Remove(hostIf string) error {
	if !strings.HasPrefix(hostIf, HostIfPrefix) {
		return fmt.Errorf("remove %s: not a Terrace workload interface", hostIf)
	}
	link, err := netlink.LinkByName(hostIf)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostIf, err)
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", hostIf, err)
	}
	return nil
}

// Verify compares the kernel with what Setup makes and reports every difference.
func (d *LinuxDataplane) Verify(w Wiring) error {
	// The namespace first: removing it removes the veth too, and the spec's answer then is
	// "unknown container", not a missing host side.
	podNS, err := openNS(w.NetNS)
	if err != nil {
		return err
	}
	defer podNS.Close()
	var errs []error
	host, err := netlink.LinkByName(w.HostIf)
	if err != nil {
		return fmt.Errorf("host side %s: %w", w.HostIf, err)
	}
	if w.MTU != 0 && host.Attrs().MTU != w.MTU {
		errs = append(errs, fmt.Errorf("host side %s has MTU %d, want %d", w.HostIf, host.Attrs().MTU, w.MTU))
	}
	settings, v6settings := hostSysctls(w.HostIf, len(w.IPv6) > 0)
	if len(w.IPv6) > 0 {
		settings = append(settings, v6settings...)
	}
	for _, kv := range settings {
		got, err := readSysctl(kv[0])
		if err != nil {
			errs = append(errs, err)
		} else if got != kv[1] {
			errs = append(errs, fmt.Errorf("host side %s: %s is %s, want %s", w.HostIf, strings.ReplaceAll(kv[0], "/", "."), got, kv[1]))
		}
	}
	if host.Type() != "veth" {
		errs = append(errs, fmt.Errorf("host side %s is a %s, not a veth", w.HostIf, host.Type()))
	}
	if host.Attrs().HardwareAddr.String() != HostMAC {
		errs = append(errs, fmt.Errorf("host side %s has MAC %s, want %s", w.HostIf, host.Attrs().HardwareAddr, HostMAC))
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("host side %s is down", w.HostIf))
	}
	if len(w.IPv6) > 0 {
		addrs, err := netlink.AddrList(host, netlink.FAMILY_V6)
		if err != nil {
			errs = append(errs, fmt.Errorf("list addresses of %s: %w", w.HostIf, err))
		} else if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(gw6) }) {
			errs = append(errs, fmt.Errorf("host side %s lacks the pod's IPv6 gateway %s", w.HostIf, GatewayIPv6))
		}
	}
	for _, ip := range slices.Concat(w.IPv4, w.IPv6) {
		want := hostRoute(host.Attrs().Index, ip)
		fam := netlink.FAMILY_V4
		if ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Dst: want.Dst}, netlink.RT_FILTER_DST)
		if err != nil {
			errs = append(errs, fmt.Errorf("list routes to %s: %w", want.Dst, err))
			continue
		}
		if !slices.ContainsFunc(rs, func(r netlink.Route) bool {
			return r.LinkIndex == want.LinkIndex && r.Protocol == want.Protocol
		}) {
			errs = append(errs, fmt.Errorf("no route %s dev %s proto %d on the host", want.Dst, w.HostIf, RouteProtocol))
		}
	}
	if err := inNS(podNS, func() error { return verifyPodSide(w, host.Attrs().Index) }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func verifyPodSide(w Wiring, hostIndex int) error {
	link, err := netlink.LinkByName(w.PodIf)
	if err != nil {
		return fmt.Errorf("pod side %s: %w", w.PodIf, err)
	}
	var errs []error
	if link.Type() != "veth" {
		errs = append(errs, fmt.Errorf("pod side %s is a %s, not a veth", w.PodIf, link.Type()))
	} else if link.Attrs().ParentIndex != hostIndex {
		errs = append(errs, fmt.Errorf("pod side %s is not the peer of %s", w.PodIf, w.HostIf))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("pod side %s is down", w.PodIf))
	}
	if w.MTU != 0 && link.Attrs().MTU != w.MTU {
		errs = append(errs, fmt.Errorf("pod side %s has MTU %d, want %d", w.PodIf, link.Attrs().MTU, w.MTU))
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list addresses of %s: %w", w.PodIf, err))...)
	}
	for _, ip := range slices.Concat(w.IPv4, w.IPv6) {
		want := netip.PrefixFrom(ip, ip.BitLen())
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
			p, ok := netipPrefix(a.IPNet)
			return ok && p == want
		}) {
			errs = append(errs, fmt.Errorf("pod side %s lacks address %s", w.PodIf, want))
		}
	}
	// Every table: a plugin chained after this one (sbr) may move the routes into a table of
	// their own, which the spec says CHECK must allow.
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_UNSPEC},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list routes of %s: %w", w.PodIf, err))...)
	}
	has := func(dst string, gw net.IP) bool {
		return slices.ContainsFunc(routes, func(r netlink.Route) bool {
			d := "default"
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones > 0 {
					d = r.Dst.String()
				}
			}
			return d == dst && ((gw == nil && r.Gw == nil) || gw.Equal(r.Gw))
		})
	}
	if len(w.IPv4) > 0 {
		if !has(GatewayIPv4+"/32", nil) {
			errs = append(errs, fmt.Errorf("pod lacks route %s dev %s scope link", GatewayIPv4, w.PodIf))
		}
		if !has("default", gw4) {
			errs = append(errs, fmt.Errorf("pod lacks default route via %s", GatewayIPv4))
		}
	}
	if len(w.IPv6) > 0 && !has("default", gw6) {
		errs = append(errs, fmt.Errorf("pod lacks IPv6 default route via %s", GatewayIPv6))
	}
	return errors.Join(errs...)
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

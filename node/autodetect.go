package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Autodetection method names, as Calico spells them.
const (
	MethodFirstFound = "first-found"
	MethodInterface  = "interface"
	MethodCanReach   = "can-reach"
	MethodNone       = "none" // family not wanted
	MethodFlag       = "flag" // address given with --ip/--ip6
)

// Interface is what autodetection needs to know about one network interface.
type Interface struct {
	Name     string
	Index    int
	Up       bool
	Loopback bool
	Addrs    []netip.Prefix // address with the interface's prefix length
	// Unsettled are the addresses autodetection must not choose: IPv6 ones that are deprecated,
	// tentative, failed duplicate detection, or temporary (RFC 4941, rotated daily).
	Unsettled []netip.Addr
}

// Lister is the small window onto the kernel that autodetection looks through.
type Lister interface {
	Interfaces() ([]Interface, error)
	// SourceFor returns the source address the kernel would choose to reach dst.
	SourceFor(dst netip.Addr) (netip.Addr, error)
}

// Family is 4 or 6.
type Family int

// Method is a parsed autodetection method.
type Method struct {
	Kind   string
	Arg    string // the REGEX list of interface=, the ADDR of can-reach=
	res    []*regexp.Regexp
	target netip.Addr
}

func (m Method) String() string {
	if m.Arg == "" {
		return m.Kind
	}
	return m.Kind + "=" + m.Arg
}

// ParseMethod parses first-found, interface=REGEX, can-reach=ADDR or none. The empty string is
// first-found. can-reach accepts an IP address only: resolving a name would make the choice
// depend on DNS at start-up.
func ParseMethod(s string) (Method, error) {
	s = strings.TrimSpace(s)
	kind, arg, hasArg := strings.Cut(s, "=")
	switch kind {
	case "", MethodFirstFound:
		if hasArg {
			return Method{}, fmt.Errorf("parse autodetection method %q: first-found takes no argument", s)
		}
		return Method{Kind: MethodFirstFound}, nil
	case MethodNone:
		return Method{Kind: MethodNone}, nil
	case MethodInterface:
		if arg == "" {
			return Method{}, fmt.Errorf("parse autodetection method %q: interface= needs a regular expression", s)
		}
		// As Calico: a comma-separated list of expressions, tried in order.
		var res []*regexp.Regexp
		for _, part := range strings.Split(arg, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				return Method{}, fmt.Errorf("parse autodetection method %q: empty expression in the list", s)
			}
			re, err := regexp.Compile(part)
			if err != nil {
				return Method{}, fmt.Errorf("parse autodetection method %q: %w", s, err)
			}
			res = append(res, re)
		}
		return Method{Kind: MethodInterface, Arg: arg, res: res}, nil
	case MethodCanReach:
		a, err := netip.ParseAddr(arg)
		if err != nil {
			return Method{}, fmt.Errorf("parse autodetection method %q: can-reach= needs an IP address: %w", s, err)
		}
		return Method{Kind: MethodCanReach, Arg: arg, target: a.Unmap()}, nil
	}
	return Method{}, fmt.Errorf("parse autodetection method %q: want first-found, interface=REGEX, can-reach=ADDR or none", s)
}

// DefaultExcludes are the interface names first-found skips: Terrace's own workload interfaces
// and the bridge, tunnel and veth devices of other container tools, whose addresses are never the
// host's address on the fabric (Calico's list, plus Terrace's trc*).
var DefaultExcludes = []*regexp.Regexp{
	regexp.MustCompile(`^trc[0-9a-f]{11}$`),
	regexp.MustCompile(`^docker.*`), regexp.MustCompile(`^cbr.*`), regexp.MustCompile(`^dummy.*`),
	regexp.MustCompile(`^virbr.*`), regexp.MustCompile(`^lxcbr.*`), regexp.MustCompile(`^veth.*`),
	regexp.MustCompile(`^lo$`), regexp.MustCompile(`^cali.*`), regexp.MustCompile(`^tunl.*`),
	regexp.MustCompile(`^flannel.*`), regexp.MustCompile(`^kube-ipvs.*`), regexp.MustCompile(`^cni.*`),
	regexp.MustCompile(`^vxlan.*`), regexp.MustCompile(`^wireguard.*`), regexp.MustCompile(`^nodelocaldns.*`),
	regexp.MustCompile(`^podman.*`), regexp.MustCompile(`^br-.*`),
}

// Choice is the outcome of choosing one address family's node address.
type Choice struct {
	Method    string       // the method as given (e.g. "interface=eth.*")
	Addr      netip.Prefix // invalid when no address was chosen (method none)
	Interface string
	Reason    string // one sentence for the log and for Node.status
}

// ErrNoAddress is returned when a method finds no usable address.
var ErrNoAddress = errors.New("no usable address")

// Detect applies m to the interfaces l reports and returns the chosen address of family fam.
func Detect(l Lister, m Method, fam Family) (Choice, error) {
	c := Choice{Method: m.String()}
	if m.Kind == MethodNone {
		c.Reason = fmt.Sprintf("IPv%d autodetection disabled (method none)", fam)
		return c, nil
	}
	ifs, err := l.Interfaces()
	if err != nil {
		return c, fmt.Errorf("list interfaces: %w", err)
	}
	sort.SliceStable(ifs, func(i, j int) bool { return ifs[i].Index < ifs[j].Index })
	switch m.Kind {
	case MethodFirstFound:
		for _, ifc := range ifs {
			if !ifc.Up || ifc.Loopback || excluded(ifc.Name) {
				continue
			}
			if p, ok := firstUsable(ifc, fam); ok {
				c.Addr, c.Interface = p, ifc.Name
				c.Reason = fmt.Sprintf("first usable global unicast IPv%d address on the first up, non-excluded interface (%s) in index order", fam, ifc.Name)
				return c, nil
			}
		}
		return c, fmt.Errorf("detect IPv%d by %s among %s: %w", fam, m, names(ifs), ErrNoAddress)
	case MethodInterface:
		for _, re := range m.res {
			for _, ifc := range ifs {
				if !re.MatchString(ifc.Name) || !ifc.Up {
					continue
				}
				if p, ok := firstUsable(ifc, fam); ok {
					c.Addr, c.Interface = p, ifc.Name
					c.Reason = fmt.Sprintf("first usable global unicast IPv%d address on %s, the first up interface matching %q", fam, ifc.Name, re.String())
					return c, nil
				}
			}
		}
		return c, fmt.Errorf("detect IPv%d: no up interface matching %q has one (interfaces: %s): %w", fam, m.Arg, names(ifs), ErrNoAddress)
	case MethodCanReach:
		if (fam == 4) != m.target.Is4() {
			return c, fmt.Errorf("detect IPv%d: can-reach target %s is not IPv%d", fam, m.target, fam)
		}
		src, err := l.SourceFor(m.target)
		if err != nil {
			return c, fmt.Errorf("detect IPv%d by %s: %w", fam, m, err)
		}
		src = src.Unmap()
		for _, ifc := range ifs {
			for _, p := range ifc.Addrs {
				if p.Addr().Unmap() == src {
					c.Addr, c.Interface = netip.PrefixFrom(src, p.Bits()), ifc.Name
					c.Reason = fmt.Sprintf("the kernel's source address for reaching %s, held by %s", m.target, ifc.Name)
					return c, nil
				}
			}
		}
		c.Addr = netip.PrefixFrom(src, src.BitLen())
		c.Reason = fmt.Sprintf("the kernel's source address for reaching %s (no interface lists it; host prefix assumed)", m.target)
		return c, nil
	}
	return c, fmt.Errorf("detect IPv%d: unknown method %q", fam, m.Kind)
}

// Manual turns an address given by the operator (with or without a prefix length) into a Choice,
// taking the prefix length from the interface that holds the address when none was given.
func Manual(l Lister, s string, fam Family) (Choice, error) {
	c := Choice{Method: MethodFlag}
	p, err := parseManual(s, fam)
	if err != nil {
		return c, err
	}
	c.Addr = p
	c.Reason = "given by the operator"
	ifs, err := l.Interfaces()
	if err != nil {
		c.Reason += fmt.Sprintf(" (interfaces not listed: %v)", err)
		return c, nil
	}
	for _, ifc := range ifs {
		for _, ip := range ifc.Addrs {
			if ip.Addr() == p.Addr() {
				c.Interface = ifc.Name
				if !strings.Contains(s, "/") {
					c.Addr = ip
				}
				c.Reason += "; held by " + ifc.Name
				return c, nil
			}
		}
	}
	c.Reason += "; no local interface holds it"
	return c, nil
}

// parseManual parses an operator-given address of family fam, with or without a prefix length.
func parseManual(s string, fam Family) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		pp, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("parse IPv%d address %q: %w", fam, s, err)
		}
		p = pp
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("parse IPv%d address %q: %w", fam, s, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if (fam == 4) != p.Addr().Is4() {
		return p, fmt.Errorf("parse IPv%d address %q: wrong family", fam, s)
	}
	// Every other host peers with this address and routes to it: it must be one they can
	// reach this host at.
	a := p.Addr()
	switch {
	case a.Zone() != "":
		return p, fmt.Errorf("parse IPv%d address %q: a scoped (link-local) address cannot be a node address", fam, s)
	case !a.IsGlobalUnicast():
		return p, fmt.Errorf("parse IPv%d address %q: not a unicast address other hosts can reach (unspecified, loopback, link-local, multicast or broadcast)", fam, s)
	case p.Bits() == 0:
		return p, fmt.Errorf("parse IPv%d address %q: prefix length 0", fam, s)
	}
	return p, nil
}

// firstUsable picks the interface's settled global unicast address of the family. The kernel
// lists IPv6 addresses newest first, so among several the lowest is taken, for a choice that does
// not change when an address is added.
func firstUsable(ifc Interface, fam Family) (netip.Prefix, bool) {
	var best netip.Prefix
	for _, p := range ifc.Addrs {
		a := p.Addr().Unmap()
		if (fam == 4) != a.Is4() || !a.IsGlobalUnicast() || slices.Contains(ifc.Unsettled, a) {
			continue
		}
		if fam == 4 {
			return netip.PrefixFrom(a, p.Bits()), true
		}
		if !best.IsValid() || a.Less(best.Addr()) {
			best = netip.PrefixFrom(a, p.Bits())
		}
	}
	return best, best.IsValid()
}

func excluded(name string) bool {
	for _, re := range DefaultExcludes {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

func names(ifs []Interface) string {
	var n []string
	for _, i := range ifs {
		n = append(n, i.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// SystemLister reads the interfaces of the calling thread's network namespace.
type SystemLister struct{}

// Interfaces lists interfaces with their addresses. It reads links and addresses in one netlink
// dump each: net.Interface.Addrs dumps every address of the namespace once per interface, which
// costs seconds on a host with a thousand workload veths.
func (SystemLister) Interfaces() ([]Interface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	byIndex := make(map[int][]netip.Prefix, len(links))
	unsettled := map[int][]netip.Addr{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], netip.PrefixFrom(ip.Unmap(), ones))
		// IPv6 only: for IPv4 the same bit as IFA_F_TEMPORARY means secondary, a usable address.
		if ip.Unmap().Is6() && a.Flags&(unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED|unix.IFA_F_TEMPORARY) != 0 {
			unsettled[a.LinkIndex] = append(unsettled[a.LinkIndex], ip.Unmap())
		}
	}
	out := make([]Interface, 0, len(links))
	for _, l := range links {
		at := l.Attrs()
		out = append(out, Interface{
			Name: at.Name, Index: at.Index,
			Up:        at.Flags&net.FlagUp != 0,
			Loopback:  at.Flags&net.FlagLoopback != 0,
			Addrs:     byIndex[at.Index],
			Unsettled: unsettled[at.Index],
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

// SourceFor connects a UDP socket to dst, which makes the kernel pick a route and source address
// without sending a packet, and reports that source.
func (SystemLister) SourceFor(dst netip.Addr) (netip.Addr, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %s: %w", dst, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

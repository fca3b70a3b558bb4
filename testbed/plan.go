package testbed

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Limits of the address plan: host uplinks are /31s numbered from the start of each ToR's /24 and
// the ToR loopbacks sit at .254, so more than 100 hosts would collide with them.
const (
	MaxHosts = 100
	MaxTors  = 2

	DefaultPrefix   = "trctb-"
	DefaultStateDir = "/var/run/terrace-testbed"
	DefaultHostAS   = 64512
	DefaultTorAS    = 65000

	// EtcdAddr is the control-plane address of the embedded etcd inside the ctl namespace.
	EtcdAddr = "203.0.113.1"
	// EtcdPort is etcd's client port.
	EtcdPort = 2379
)

// ErrInvalid marks errors caused by bad input (exit status 2 in the command).
var ErrInvalid = errors.New("invalid input")

// CNIMode selects how pods are wired.
type CNIMode string

const (
	// CNIAuto uses bin/terrace-cni when it answers VERSION, else wires pods by hand; the first pod decides for the others.
	CNIAuto CNIMode = "auto"
	// CNIPlugin always calls bin/terrace-cni.
	CNIPlugin CNIMode = "cni"
	// CNIManual wires pods in the testbed itself (the pure-L3 wiring of CONVENTIONS.md).
	CNIManual CNIMode = "manual"
)

// Options describe a testbed to build.
type Options struct {
	Hosts  int  `json:"hosts"`
	Tors   int  `json:"tors"`
	IPv6   bool `json:"ipv6"`
	NoMesh bool `json:"noMesh"`
	// Prefix starts every namespace name; tests use their own so they never meet a running demo.
	Prefix string `json:"prefix"`
	// StateDir holds state.json and one directory per namespace (configs, sockets, logs, etcd data).
	StateDir string `json:"stateDir"`
	// BinDir holds terrace-node, terracectl, terrace-cni.
	BinDir string `json:"binDir"`
	HostAS uint32 `json:"hostAS"`
	TorAS  uint32 `json:"torAS"`
	// NoNode skips starting terrace-node run (topology-only use); NoEtcd skips the embedded etcd too.
	NoNode   bool    `json:"noNode"`
	NoEtcd   bool    `json:"noEtcd"`
	CNI      CNIMode `json:"cni"`
	LogLevel string  `json:"logLevel"`
	// BGPPassword, when set, protects every host-ToR session with TCP MD5: the ToRs are configured
	// with it, each host gets it as the node-local secret <state-dir>/secrets/bgp/tor and the
	// per-uplink BGPPeers name that secret. Letters, digits and -_.:+= only (it goes into BIRD's
	// configuration); a host BIRD (StartHostBird) does not use it.
	BGPPassword string `json:"bgpPassword,omitempty"`
	// TorRestartTime, when non-zero, is the graceful-restart time (seconds) the ToRs announce:
	// how long a host keeps a silent ToR's routes before withdrawing them (BIRD's default 120 s
	// otherwise). Fault tests shorten it.
	TorRestartTime int `json:"torRestartTime,omitempty"`
	// NodeArgs are extra flags for every terrace-node run (e.g. a short --felix-resync-interval in tests).
	NodeArgs []string `json:"nodeArgs,omitempty"`
	// Logger receives progress; nil discards.
	Logger *slog.Logger `json:"-"`
}

func (o *Options) setDefaults() {
	if o.Tors == 0 {
		o.Tors = 1
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.HostAS == 0 {
		o.HostAS = DefaultHostAS
	}
	if o.TorAS == 0 {
		o.TorAS = DefaultTorAS
	}
	if o.CNI == "" {
		o.CNI = CNIAuto
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.NoEtcd {
		o.NoNode = true
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{1,10}-$`)

var passwordRE = regexp.MustCompile(`^[A-Za-z0-9_.:+=-]{1,80}$`)

func (o *Options) validate() error {
	var errs []error
	if o.Hosts < 1 || o.Hosts > MaxHosts {
		errs = append(errs, fmt.Errorf("host count %d out of range 1..%d", o.Hosts, MaxHosts))
	}
	if o.Tors < 1 || o.Tors > MaxTors {
		errs = append(errs, fmt.Errorf("tor count %d out of range 1..%d", o.Tors, MaxTors))
	}
	if !prefixRE.MatchString(o.Prefix) {
		errs = append(errs, fmt.Errorf("prefix %q must match %s", o.Prefix, prefixRE))
	}
	if o.HostAS == o.TorAS {
		errs = append(errs, fmt.Errorf("host AS and ToR AS are both %d; the ToR peers over eBGP", o.HostAS))
	}
	if o.TorRestartTime < 0 || o.TorRestartTime > 4095 {
		errs = append(errs, fmt.Errorf("ToR restart time %d s out of range 0..4095 (the capability's 12 bits)", o.TorRestartTime))
	}
	if o.BGPPassword != "" && !passwordRE.MatchString(o.BGPPassword) {
		// Never echo the password itself.
		errs = append(errs, errors.New("bgp password may only hold 1-80 letters, digits and -_.:+="))
	}
	switch o.CNI {
	case CNIAuto, CNIPlugin, CNIManual:
	default:
		errs = append(errs, fmt.Errorf("cni mode %q is not one of auto, cni, manual", o.CNI))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate options: %w: %w", ErrInvalid, err)
	}
	return nil
}

// HostName and TorName give the conventional names (host-1 …, tor-1, tor-2).
func HostName(i int) string { return "host-" + strconv.Itoa(i) }

// TorName gives the conventional ToR name.
func TorName(t int) string { return "tor-" + strconv.Itoa(t) }

// torBase is the /24 each ToR numbers its host links from.
func torBase(t int) netip.Addr {
	if t == 1 {
		return netip.AddrFrom4([4]byte{192, 0, 2, 0})
	}
	return netip.AddrFrom4([4]byte{198, 51, 100, 0})
}

func add4(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// uplinkAddrs returns the ToR-side and host-side addresses of host i's /31 to ToR t.
func uplinkAddrs(t, i int) (tor, host netip.Addr) {
	base := torBase(t)
	return add4(base, 2*(i-1)), add4(base, 2*(i-1)+1)
}

// uplinkAddrs6 returns the ToR-side and host-side addresses of host i's /64 to ToR t,
// 2001:db8:0:<t><i as two hex digits>::/64 inside the 2001:db8::/48 underlay.
func uplinkAddrs6(t, i int) (tor, host netip.Addr) {
	sub := uint16(t)<<8 | uint16(i)
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	b[6], b[7] = byte(sub>>8), byte(sub)
	b[15] = 1
	tor = netip.AddrFrom16(b)
	b[15] = 2
	host = netip.AddrFrom16(b)
	return tor, host
}

// torRouterID is the ToR's loopback and BGP router ID.
func torRouterID(t int) netip.Addr { return add4(torBase(t), 254) }

// ctlHostAddr is host i's control-plane address (etcd is at EtcdAddr).
func ctlHostAddr(i int) netip.Addr {
	return add4(netip.AddrFrom4([4]byte{203, 0, 113, 0}), 10+i)
}

// manualPodNet is the per-host range pods wired by hand take their /32 from, 198.18.<i>.0/24
// (IPAM, once it wires pods, allocates blocks from the whole 198.18.0.0/15 pool instead).
func manualPodNet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
}

// manualPodNet6 is the IPv6 counterpart, 2001:db8:1000:<i>::/64.
func manualPodNet6(i int) netip.Prefix {
	var b [16]byte
	b[0], b[1], b[2], b[3], b[4], b[5] = 0x20, 0x01, 0x0d, 0xb8, 0x10, 0x00
	b[6], b[7] = byte(i>>8), byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// Pool CIDRs the testbed configures for IPAM.
const (
	PoolV4 = "198.18.0.0/15"
	PoolV6 = "2001:db8:1000::/48"
)

// InjectPrefixes returns n host routes for ToR injection (BGP scale benchmarks), counting up from
// 198.18.64.0 so that the first IPAM blocks of a small testbed (from 198.18.0.0) stay clear.
// At most 114688 fit before the end of 198.18.0.0/15.
func InjectPrefixes(n int) ([]netip.Prefix, error) {
	const room = 2*65536 - 64*256
	if n < 0 || n > room {
		return nil, fmt.Errorf("generate prefixes: %w: count %d out of range 0..%d", ErrInvalid, n, room)
	}
	start := netip.AddrFrom4([4]byte{198, 18, 64, 0})
	out := make([]netip.Prefix, n)
	for k := range n {
		out[k] = netip.PrefixFrom(add4(start, k), 32)
	}
	return out, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$`)

// Target is a parsed exec/fault target: a namespace role (ctl, tor-N, host-N) optionally with a pod.
type Target struct {
	Node string // ctl, tor-1, host-2
	Pod  string // empty unless HOST/POD
}

func (t Target) String() string {
	if t.Pod == "" {
		return t.Node
	}
	return t.Node + "/" + t.Pod
}

// ParseTarget parses "ctl", "tor-N", "host-N" or "host-N/POD".
func ParseTarget(s string) (Target, error) {
	node, pod, hasPod := strings.Cut(s, "/")
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("parse target %q: %w: %s", s, ErrInvalid, why)
	}
	switch {
	case node == "ctl":
	case strings.HasPrefix(node, "tor-"), strings.HasPrefix(node, "host-"):
		_, num, _ := strings.Cut(node, "-")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || strconv.Itoa(n) != num {
			return bad("want ctl, tor-N, host-N or host-N/POD")
		}
	default:
		return bad("want ctl, tor-N, host-N or host-N/POD")
	}
	if hasPod {
		if !strings.HasPrefix(node, "host-") {
			return bad("only hosts have pods")
		}
		if !nameRE.MatchString(pod) {
			return bad("pod name must be lower-case letters, digits and '-', at most 30 characters")
		}
	}
	return Target{Node: node, Pod: pod}, nil
}

// ownedNamespace reports whether a namespace name is one a testbed with this prefix creates:
// prefix + ctl | tor-N | host-N | host-N-POD. Anything else (even with the prefix) is left alone.
func ownedNamespace(prefix, ns string) bool {
	rest, ok := strings.CutPrefix(ns, prefix)
	if !ok {
		return false
	}
	return ownedRE.MatchString(rest)
}

var ownedRE = regexp.MustCompile(`^(ctl|tor-[0-9]+|host-[0-9]+(-[a-z0-9-]+)?)$`)

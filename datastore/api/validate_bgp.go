package api

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var logLevels = []string{"Trace", "Debug", "Info", "Warning", "Error", "Fatal"}

// defaultHoldTime is the hold time of a BGPPeer that sets none (GoBGP's default, as BIRD's).
const defaultHoldTime = 90 * time.Second

func (v *validator) bgpConfig(c *BGPConfiguration) {
	global := v.configName(KindBGPConfiguration, c.Metadata.Name)
	s := &c.Spec
	if s.LogSeverityScreen != "" {
		v.oneOf("spec.logSeverityScreen", s.LogSeverityScreen, logLevels...)
	}
	if s.ASNumber != nil && *s.ASNumber == 0 {
		v.add("spec.asNumber", "must be 1-4294967295")
	}
	v.portNumber("spec.listenPort", s.ListenPort, true)
	for _, f := range []struct {
		path   string
		blocks []ServiceIPBlock
	}{
		{"spec.serviceLoadBalancerIPs", s.ServiceLoadBalancerIPs}, {"spec.serviceExternalIPs", s.ServiceExternalIPs},
		{"spec.serviceClusterIPs", s.ServiceClusterIPs},
	} {
		for i, b := range f.blocks {
			if _, err := parsePrefixOrAddr(b.CIDR); err != nil {
				v.add(idx(f.path, i)+".cidr", "%q is not a CIDR or an address", b.CIDR)
			}
		}
	}
	named := map[string]bool{}
	for i, cm := range s.Communities {
		p := idx("spec.communities", i)
		if cm.Name == "" || labelNameRE.FindString(cm.Name) == "" {
			v.add(p+".name", "%q must be a non-empty name of letters, digits, '-', '_' and '.'", cm.Name)
		}
		named[cm.Name] = true
		if e := communityError(cm.Value); e != "" {
			v.add(p+".value", "%s", e)
		}
	}
	for i, pa := range s.PrefixAdvertisements {
		p := idx("spec.prefixAdvertisements", i)
		if _, err := parsePrefixOrAddr(pa.CIDR); err != nil {
			v.add(p+".cidr", "%q is not a CIDR or an address", pa.CIDR)
		}
		for j, cm := range pa.Communities {
			if !named[cm] && communityError(cm) != "" {
				v.add(idx(p+".communities", j), "%q is neither a community named in spec.communities nor a value aa:nn or aa:nn:mm", cm)
			}
		}
	}
	if s.NodeMeshPassword != nil {
		v.password("spec.nodeMeshPassword", s.NodeMeshPassword)
	}
	v.restartTime("spec.nodeMeshMaxRestartTime", s.NodeMeshMaxRestartTime)
	switch s.BindMode {
	case "", "None", "NodeIP":
	default:
		v.add("spec.bindMode", "%q is not one of None, NodeIP", s.BindMode)
	}
	// Calico's pattern (an interface name, '*' as wildcard). Terrace advertises no interface
	// routes, so the list has no effect; it is still checked so a manifest means what it says.
	for i, name := range s.IgnoredInterfaces {
		if !ignoredIfaceRE.MatchString(name) {
			v.add(idx("spec.ignoredInterfaces", i), "%q must be 1-15 letters, digits, '_', '.', '-' or '*'", name)
		}
	}
	if s.LocalWorkloadPeeringIPV4 != "" {
		v.add("spec.localWorkloadPeeringIPV4", "Terrace does not peer with workloads; must be empty")
	}
	if s.LocalWorkloadPeeringIPV6 != "" {
		v.add("spec.localWorkloadPeeringIPV6", "Terrace does not peer with workloads; must be empty")
	}
	if !global {
		// As in Calico, these are cluster-wide settings; a per-node value would split the mesh.
		for _, f := range []struct {
			path string
			set  bool
		}{
			{"spec.nodeToNodeMeshEnabled", s.NodeToNodeMeshEnabled != nil},
			{"spec.asNumber", s.ASNumber != nil},
			{"spec.serviceLoadBalancerIPs", len(s.ServiceLoadBalancerIPs) > 0},
			{"spec.serviceExternalIPs", len(s.ServiceExternalIPs) > 0},
			{"spec.serviceClusterIPs", len(s.ServiceClusterIPs) > 0},
			{"spec.nodeMeshPassword", s.NodeMeshPassword != nil},
			{"spec.nodeMeshMaxRestartTime", s.NodeMeshMaxRestartTime != nil},
		} {
			if f.set {
				v.add(f.path, "may only be set in the cluster-wide BGPConfiguration %q", DefaultConfigName)
			}
		}
	}
}

// communityError checks a standard ("aa:nn", 16-bit parts) or large ("aa:nn:mm", 32-bit parts)
// community value.
func communityError(s string) string {
	if !communityRE.MatchString(s) {
		return "community " + strconv.Quote(s) + " must be aa:nn (standard) or aa:nn:mm (large)"
	}
	parts := strings.Split(s, ":")
	bits := 16
	if len(parts) == 3 {
		bits = 32
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, bits); err != nil {
			return "community " + strconv.Quote(s) + ": each part must fit in " + strconv.Itoa(bits) + " bits"
		}
	}
	return ""
}

func (v *validator) bgpPeer(s *BGPPeerSpec) {
	if s.Node != "" && s.NodeSelector != "" {
		v.add("spec.nodeSelector", "node and nodeSelector cannot both be set")
	}
	if s.Node != "" {
		if e := subdomainError(s.Node); e != "" {
			v.add("spec.node", "%s", e)
		}
	}
	if s.NodeSelector != "" {
		v.selector("spec.nodeSelector", s.NodeSelector)
	}
	switch {
	case s.PeerIP != "" && s.PeerSelector != "":
		v.add("spec.peerSelector", "peerIP and peerSelector cannot both be set")
	case s.PeerIP == "" && s.PeerSelector == "":
		v.add("spec.peerIP", "peerIP or peerSelector is required")
	case s.PeerIP != "":
		if e := peerIPError(s.PeerIP); e != "" {
			v.add("spec.peerIP", "%s", e)
		}
		if s.ASNumber == 0 {
			v.add("spec.asNumber", "is required with peerIP (1-4294967295, plain or dotted)")
		}
	default:
		v.selector("spec.peerSelector", s.PeerSelector)
		if s.ASNumber != 0 {
			v.add("spec.asNumber", "must be empty with peerSelector: the selected nodes' own AS numbers are used")
		}
	}
	if s.LocalASNumber != nil && *s.LocalASNumber == 0 {
		v.add("spec.localASNumber", "must be 1-4294967295")
	}
	switch s.NextHopMode {
	case "", NextHopAuto, NextHopSelf, NextHopKeep:
	default:
		v.add("spec.nextHopMode", "%q is not one of Auto, Self, Keep", s.NextHopMode)
	}
	if s.KeepOriginalNextHop && s.NextHopMode != "" && s.NextHopMode != NextHopKeep {
		v.add("spec.nextHopMode", "contradicts keepOriginalNextHop: true")
	}
	if s.Password != nil {
		v.password("spec.password", s.Password)
	}
	switch s.SourceAddress {
	case "", SourceAddressUseNodeIP, SourceAddressNone:
	default:
		v.add("spec.sourceAddress", "%q is not one of UseNodeIP, None", s.SourceAddress)
	}
	switch s.FailureDetectionMode {
	case "", "None":
	case "BFDIfDirectlyConnected":
		v.add("spec.failureDetectionMode", "Terrace has no BFD; only \"None\" is accepted")
	default:
		v.add("spec.failureDetectionMode", "%q is not one of None, BFDIfDirectlyConnected", s.FailureDetectionMode)
	}
	switch s.RestartMode {
	case "", RestartGraceful:
	case RestartLongLivedGraceful:
		v.add("spec.restartMode", "Terrace implements graceful restart only; only \"GracefulRestart\" is accepted")
	default:
		v.add("spec.restartMode", "%q is not one of GracefulRestart, LongLivedGracefulRestart", s.RestartMode)
	}
	v.restartTime("spec.maxRestartTime", s.MaxRestartTime)
	v.duration("spec.keepaliveTime", s.KeepaliveTime)
	v.duration("spec.holdTime", s.HoldTime)
	// BGP carries whole seconds: a fraction would be cut off on the wire, and "keepalive shorter
	// than hold" checked here could turn into equal ones there.
	for _, t := range []struct {
		path string
		d    *Duration
	}{{"spec.keepaliveTime", s.KeepaliveTime}, {"spec.holdTime", s.HoldTime}} {
		if t.d != nil && t.d.Duration%time.Second != 0 {
			v.add(t.path, "%s is not a whole number of seconds (BGP timers are in seconds)", t.d.Duration)
		}
	}
	// RFC 4271: a hold time is 0 or at least 3 seconds, and keepalives must come more often.
	if s.HoldTime != nil && s.HoldTime.Duration != 0 && s.HoldTime.Duration < 3*time.Second {
		v.add("spec.holdTime", "must be 0 or at least 3s (RFC 4271)")
	}
	switch {
	case s.HoldTime != nil && s.KeepaliveTime != nil && s.HoldTime.Duration != 0 && s.KeepaliveTime.Duration >= s.HoldTime.Duration:
		v.add("spec.keepaliveTime", "must be shorter than holdTime")
	case (s.HoldTime == nil || s.HoldTime.Duration == 0) && s.KeepaliveTime != nil && s.KeepaliveTime.Duration >= defaultHoldTime:
		v.add("spec.keepaliveTime", "must be shorter than the hold time (%s when holdTime is not set)", defaultHoldTime)
	}
	// BIRD's gateway mode has no equivalent knob: Terrace always installs the next hop it learned.
	switch s.BIRDGatewayMode {
	case "", "Recursive", "DirectIfDirectlyReachable":
	default:
		v.add("spec.birdGatewayMode", "%q is not one of Recursive, DirectIfDirectlyReachable", s.BIRDGatewayMode)
	}
	if s.NumAllowedLocalASNumbers != nil && *s.NumAllowedLocalASNumbers != 0 {
		v.add("spec.numAllowedLocalASNumbers", "Terrace does not accept routes carrying its own AS (allowas-in); only 0 is accepted")
	}
	if s.TTLSecurity != nil && *s.TTLSecurity != 0 {
		v.add("spec.ttlSecurity", "Terrace does not implement GTSM (RFC 5082); only 0 is accepted")
	}
	if s.EBGPMultihopTTL != nil && (*s.EBGPMultihopTTL < 1 || *s.EBGPMultihopTTL > 255) {
		v.add("spec.ebgpMultihopTTL", "must be 1-255")
	}
	if s.ReachableBy != "" {
		v.add("spec.reachableBy", "Terrace does not install a route to reach the peer; must be empty")
	}
	seen := map[string]int{}
	for i, name := range s.Filters {
		p := idx("spec.filters", i)
		if e := subdomainError(name); e != "" {
			v.add(p, "BGPFilter name %q %s", name, e)
		} else if j, dup := seen[name]; dup {
			// A second application of the same filter can never match anything the first did not.
			v.add(p, "%q is already listed at spec.filters[%d]", name, j)
		} else {
			seen[name] = i
		}
	}
	if s.LocalWorkloadSelector != "" {
		v.add("spec.localWorkloadSelector", "Terrace does not peer with workloads; must be empty")
	}
	switch s.ReversePeering {
	case "", "Auto", "Manual":
	default:
		v.add("spec.reversePeering", "%q is not one of Auto, Manual", s.ReversePeering)
	}
}

// maxBGPFilterRules bounds each rule list: far more than anyone writes by hand, so a longer list
// is a generator gone wrong, and every rule costs work on each route the speaker considers.
const maxBGPFilterRules = 1000

func (v *validator) bgpFilter(s *BGPFilterSpec) {
	for _, l := range []struct {
		path   string
		rules  []BGPFilterRule
		family int
		export bool
	}{
		{"spec.exportV4", s.ExportV4, 4, true}, {"spec.importV4", s.ImportV4, 4, false},
		{"spec.exportV6", s.ExportV6, 6, true}, {"spec.importV6", s.ImportV6, 6, false},
	} {
		if len(l.rules) > maxBGPFilterRules {
			// Checking each rule of such a list would only bury this one message.
			v.add(l.path, "has %d rules; at most %d are allowed", len(l.rules), maxBGPFilterRules)
			continue
		}
		for i := range l.rules {
			v.bgpFilterRule(idx(l.path, i), l.path, &l.rules[i], l.family, l.export)
		}
	}
}

func (v *validator) bgpFilterRule(path, list string, r *BGPFilterRule, fam int, export bool) {
	switch r.Action {
	case BGPFilterAccept, BGPFilterReject:
	case "":
		v.add(path+".action", "is required: Accept or Reject")
	default:
		v.add(path+".action", "%q is not one of Accept, Reject", r.Action)
	}
	maxBits := 32
	if fam == 6 {
		maxBits = 128
	}
	// Without a valid cidr, prefixLength bounds are still checked against the whole family.
	minBits, why := 0, ""
	switch {
	case r.CIDR == "" && r.MatchOperator != "":
		v.add(path+".cidr", "is required with matchOperator")
	case r.CIDR != "" && r.MatchOperator == "":
		v.add(path+".matchOperator", "is required with cidr")
	}
	if r.CIDR != "" {
		p, err := netip.ParsePrefix(r.CIDR)
		switch {
		case err != nil:
			v.add(path+".cidr", "%q is not a CIDR", r.CIDR)
		case family(p.Addr()) != fam:
			v.add(path+".cidr", "%q is IPv%d but %s holds IPv%d routes", r.CIDR, family(p.Addr()), list, fam)
		case p != p.Masked():
			v.add(path+".cidr", "%q has host bits set; the network address is %s", r.CIDR, p.Masked())
		default:
			// A route shorter than the cidr cannot lie inside it.
			minBits, why = p.Bits(), " (from the cidr's prefix length to the longest IPv"+strconv.Itoa(fam)+" prefix)"
		}
	}
	switch r.MatchOperator {
	case "", BGPFilterEqual, BGPFilterNotEqual, BGPFilterIn, BGPFilterNotIn:
	default:
		v.add(path+".matchOperator", "%q is not one of Equal, NotEqual, In, NotIn", r.MatchOperator)
	}
	if pl := r.PrefixLength; pl != nil {
		if r.CIDR == "" || (r.MatchOperator != BGPFilterIn && r.MatchOperator != BGPFilterNotIn) {
			// Equal and NotEqual compare the whole prefix, so a length range would mean nothing.
			v.add(path+".prefixLength", "requires cidr and matchOperator In or NotIn")
		}
		for _, b := range []struct {
			name string
			val  *int32
		}{{"min", pl.Min}, {"max", pl.Max}} {
			if b.val != nil && (int(*b.val) < minBits || int(*b.val) > maxBits) {
				v.add(path+".prefixLength."+b.name, "%d is outside %d-%d%s", *b.val, minBits, maxBits, why)
			}
		}
		if pl.Min != nil && pl.Max != nil && *pl.Min > *pl.Max {
			v.add(path+".prefixLength", "min %d is greater than max %d", *pl.Min, *pl.Max)
		}
	}
	switch r.Source {
	case "":
	case BGPFilterSourceRemotePeers:
		if !export {
			// Every imported route comes from a peer, so the match would say nothing.
			v.add(path+".source", "RemotePeers is allowed only in exportV4 and exportV6 (it matches routes learned from BGP peers)")
		}
	default:
		v.add(path+".source", "%q is not a known source: only RemotePeers is", r.Source)
	}
	if r.Interface != "" {
		v.add(path+".interface", "Terrace does not match routes by interface; must be empty")
	}
}

// peerIPError accepts "addr", "ipv4:port" and "[ipv6]:port".
func peerIPError(s string) string {
	if a, err := parseAddr(s); err == nil && a.IsValid() {
		return ""
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" {
		return strconv.Quote(s) + " is not an IP address, ipv4:port or [ipv6]:port"
	}
	if ap.Port() == 0 {
		return strconv.Quote(s) + ": port must be 1-65535"
	}
	return ""
}

func (v *validator) password(path string, p *BGPPassword) {
	switch {
	case p.SecretKeyRef != nil && p.File != "":
		v.add(path, "secretKeyRef and file cannot both be set")
	case p.SecretKeyRef != nil:
		if e := subdomainError(p.SecretKeyRef.Name); e != "" {
			v.add(path+".secretKeyRef.name", "%s", e)
		}
		// Kubernetes' config map key rule: the key is a file name under the secret's directory,
		// so "." and ".." (which name directories) are refused too.
		if k := p.SecretKeyRef.Key; !secretKeyRE.MatchString(k) || len(k) > 253 || k == "." || strings.HasPrefix(k, "..") {
			v.add(path+".secretKeyRef.key", "%q must be at most 253 letters, digits, '-', '_' and '.', and not \".\" or start with \"..\"", k)
		}
	case p.File != "":
		if !filepath.IsAbs(p.File) {
			v.add(path+".file", "%q must be an absolute path on the node", p.File)
		}
	default:
		v.add(path, "secretKeyRef or file is required")
	}
}

// MaxRestartTime is the longest graceful-restart time BGP can announce: RFC 4724 gives it 12 bits.
const MaxRestartTime = 4095 * time.Second

// restartTime checks a graceful-restart time: a longer one would wrap on the wire (4096 s is
// sent as 0, telling peers to drop the routes at once) and spill into the capability's flags.
func (v *validator) restartTime(path string, d *Duration) {
	v.duration(path, d)
	if d != nil && d.Duration > MaxRestartTime {
		v.add(path, "%s is longer than BGP's graceful-restart time can say (at most %s, 4095 s)", d.Duration, MaxRestartTime)
	}
}

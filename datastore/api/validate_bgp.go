package api

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var logLevels = []string{"Trace", "Debug", "Info", "Warning", "Error", "Fatal"}

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
			if _, err := netip.ParsePrefix(b.CIDR); err != nil {
				v.add(idx(f.path, i)+".cidr", "%q is not a CIDR", b.CIDR)
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
		if _, err := netip.ParsePrefix(pa.CIDR); err != nil {
			v.add(p+".cidr", "%q is not a CIDR", pa.CIDR)
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
	v.duration("spec.nodeMeshMaxRestartTime", s.NodeMeshMaxRestartTime)
	switch s.BindMode {
	case "", "None", "NodeIP":
	default:
		v.add("spec.bindMode", "%q is not one of None, NodeIP", s.BindMode)
	}
	for i, name := range s.IgnoredInterfaces {
		if name == "" {
			v.add(idx("spec.ignoredInterfaces", i), "must not be empty")
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
	v.duration("spec.maxRestartTime", s.MaxRestartTime)
	v.duration("spec.keepaliveTime", s.KeepaliveTime)
	v.duration("spec.holdTime", s.HoldTime)
	// RFC 4271: a hold time is 0 or at least 3 seconds, and keepalives must come more often.
	if s.HoldTime != nil && s.HoldTime.Duration != 0 && s.HoldTime.Duration < 3*time.Second {
		v.add("spec.holdTime", "must be 0 or at least 3s (RFC 4271)")
	}
	if s.HoldTime != nil && s.KeepaliveTime != nil && s.HoldTime.Duration != 0 && s.KeepaliveTime.Duration >= s.HoldTime.Duration {
		v.add("spec.keepaliveTime", "must be shorter than holdTime")
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
	if len(s.Filters) > 0 {
		v.add("spec.filters", "Terrace has no BGPFilter resource; must be empty")
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
		if !secretKeyRE.MatchString(p.SecretKeyRef.Key) {
			v.add(path+".secretKeyRef.key", "%q must be letters, digits, '-', '_' and '.'", p.SecretKeyRef.Key)
		}
	case p.File != "":
		if !filepath.IsAbs(p.File) {
			v.add(path+".file", "%q must be an absolute path on the node", p.File)
		}
	default:
		v.add(path, "secretKeyRef or file is required")
	}
}

package api

import (
	"math/bits"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// MinRefreshInterval is the shortest periodic kernel refresh FelixConfiguration may ask for.
const MinRefreshInterval = time.Second

// TerraceInterfacePrefix is the prefix of Terrace's host-side workload interfaces (CONVENTIONS.md).
const TerraceInterfacePrefix = "trc"

func (v *validator) felixConfig(c *FelixConfiguration) {
	v.configName(KindFelixConfiguration, c.Metadata.Name)
	s := &c.Spec
	levels := append([]string{"None"}, logLevels...)
	for _, f := range []struct{ path, val string }{
		{"spec.logSeverityScreen", s.LogSeverityScreen}, {"spec.logSeverityFile", s.LogSeverityFile},
		{"spec.logSeveritySys", s.LogSeveritySys},
	} {
		if f.val != "" {
			v.oneOf(f.path, f.val, levels...)
		}
	}
	for _, f := range []struct {
		path string
		d    *Duration
	}{
		{"spec.reportingInterval", s.ReportingInterval}, {"spec.reportingTTL", s.ReportingTTL},
		{"spec.routeRefreshInterval", s.RouteRefreshInterval},
		{"spec.iptablesRefreshInterval", s.IptablesRefreshInterval},
		{"spec.ipsetsRefreshInterval", s.IpsetsRefreshInterval}, {"spec.iptablesLockTimeout", s.IptablesLockTimeout},
	} {
		v.duration(f.path, f.d)
	}
	// Each refresh re-reads the whole table from the kernel (about a second with tens of thousands
	// of rules on two cores), so a typo like 10ms would keep felix busy doing nothing else; 0 is
	// Calico's "never".
	for _, f := range []struct {
		path string
		d    *Duration
	}{
		{"spec.routeRefreshInterval", s.RouteRefreshInterval},
		{"spec.iptablesRefreshInterval", s.IptablesRefreshInterval},
		{"spec.ipsetsRefreshInterval", s.IpsetsRefreshInterval},
	} {
		if f.d != nil && f.d.Duration > 0 && f.d.Duration < MinRefreshInterval {
			v.add(f.path, "%s is below the minimum of %s (0 disables the refresh)", f.d.Duration, MinRefreshInterval)
		}
	}
	enums := []struct {
		path, val string
		allowed   []string
	}{
		{"spec.iptablesBackend", s.IptablesBackend, []string{"Legacy", "NFT", "Auto"}},
		{"spec.chainInsertMode", s.ChainInsertMode, []string{"Insert", "Append"}},
		{"spec.defaultEndpointToHostAction", s.DefaultEndpointToHostAction, []string{"Drop", "Return", "Accept"}},
		{"spec.iptablesFilterAllowAction", s.IptablesFilterAllowAction, []string{"Accept", "Return"}},
		{"spec.iptablesFilterDenyAction", s.IptablesFilterDenyAction, []string{"Drop", "Reject"}},
		{"spec.iptablesMangleAllowAction", s.IptablesMangleAllowAction, []string{"Accept", "Return"}},
		{"spec.routeSource", s.RouteSource, []string{"CalicoIPAM", "WorkloadIPs"}},
		{"spec.bpfLogLevel", s.BPFLogLevel, []string{"Off", "Info", "Debug"}},
	}
	for _, e := range enums {
		if e.val != "" {
			v.oneOf(e.path, e.val, e.allowed...)
		}
	}
	if s.InterfacePrefix != "" && s.InterfacePrefix != TerraceInterfacePrefix {
		v.add("spec.interfacePrefix", "Terrace names workload interfaces %q+hash; only %q is accepted", TerraceInterfacePrefix, TerraceInterfacePrefix)
	}
	for i, ex := range strings.Split(s.InterfaceExclude, ",") {
		ex = strings.TrimSpace(ex)
		if len(ex) > 1 && strings.HasPrefix(ex, "/") && strings.HasSuffix(ex, "/") {
			if _, err := regexp.Compile(ex[1 : len(ex)-1]); err != nil {
				v.add("spec.interfaceExclude", "entry %d: invalid regular expression %s: %v", i, ex, err)
			}
		} else if ex != "" && !ValidInterfaceName(ex) {
			v.add("spec.interfaceExclude", "entry %d: %q is not a valid interface name (write a regular expression between slashes)", i, ex)
		}
	}
	// Terrace's two verdict marks are the mask's lowest two bits.
	if s.IptablesMarkMask != nil && bits.OnesCount32(*s.IptablesMarkMask) < 2 {
		v.add("spec.iptablesMarkMask", "%#x has %d bits set; Terrace needs 2 (its lowest two are the accept and pass marks)", *s.IptablesMarkMask, bits.OnesCount32(*s.IptablesMarkMask))
	}
	v.protoPorts("spec.failsafeInboundHostPorts", s.FailsafeInboundHostPorts)
	v.protoPorts("spec.failsafeOutboundHostPorts", s.FailsafeOutboundHostPorts)
	if s.HealthPort != nil {
		v.portNumber("spec.healthPort", *s.HealthPort, false)
	}
	if s.PrometheusMetricsPort != nil {
		v.portNumber("spec.prometheusMetricsPort", *s.PrometheusMetricsPort, false)
	}
	v.hostOrIP("spec.healthHost", s.HealthHost)
	v.hostOrIP("spec.prometheusMetricsHost", s.PrometheusMetricsHost)
	v.ip("spec.natOutgoingAddress", s.NATOutgoingAddress, 0)
	if s.NATPortRange != nil {
		v.port("spec.natPortRange", *s.NATPortRange, false)
	}
	for _, m := range []struct {
		path string
		v    *int
	}{
		{"spec.ipipMTU", s.IPIPMTU}, {"spec.vxlanMTU", s.VXLANMTU}, {"spec.vxlanMTUV6", s.VXLANMTUV6},
		{"spec.wireguardMTU", s.WireguardMTU}, {"spec.wireguardMTUV6", s.WireguardMTUV6},
	} {
		if m.v != nil && (*m.v < 0 || *m.v > 65535) {
			v.add(m.path, "%d is not an MTU (0-65535)", *m.v)
		}
	}
	off := []struct {
		path, why string
		val       *bool
	}{
		{"spec.ipipEnabled", "Terrace never encapsulates", s.IPIPEnabled},
		{"spec.vxlanEnabled", "Terrace never encapsulates", s.VXLANEnabled},
		{"spec.wireguardEnabled", "Terrace does not run Wireguard", s.WireguardEnabled},
		{"spec.wireguardEnabledV6", "Terrace does not run Wireguard", s.WireguardEnabledV6},
		{"spec.bpfEnabled", "Terrace's dataplane is iptables", s.BPFEnabled},
		{"spec.xdpEnabled", "Terrace's dataplane is iptables", s.XDPEnabled},
	}
	for _, o := range off {
		if o.val != nil && *o.val {
			v.add(o.path, "%s; only false is accepted", o.why)
		}
	}
	switch s.FloatingIPs {
	case "", "Disabled":
	case "Enabled":
		v.add("spec.floatingIPs", "Terrace does not implement floating IPs; only \"Disabled\" is accepted")
	default:
		v.add("spec.floatingIPs", "%q is not one of Enabled, Disabled", s.FloatingIPs)
	}
}

func (v *validator) protoPorts(path string, pps *[]ProtoPort) {
	if pps == nil {
		return
	}
	for i, pp := range *pps {
		p := idx(path, i)
		switch strings.ToUpper(pp.Protocol) {
		case "TCP", "UDP", "SCTP":
		default:
			v.add(p+".protocol", "%q must be TCP, UDP or SCTP", pp.Protocol)
		}
		v.portNumber(p+".port", pp.Port, false)
		if pp.Net != "" {
			if _, err := netip.ParsePrefix(pp.Net); err != nil {
				v.add(p+".net", "%q is not a CIDR", pp.Net)
			}
		}
	}
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$`)

// hostOrIP checks an address felix listens on: an IP address without zone, or a host name of
// RFC 1123 labels (felix resolves it when it binds).
func (v *validator) hostOrIP(path, s string) {
	if s == "" {
		return
	}
	if _, err := parseAddr(s); err == nil {
		return
	}
	bad := len(s) > 253
	for _, l := range strings.Split(s, ".") {
		bad = bad || len(l) > 63 || !hostLabelRE.MatchString(l)
	}
	if bad {
		v.add(path, "%q is not an IP address or host name (labels of 1-63 letters, digits and '-', not starting or ending with '-')", s)
	}
}

package api

// FelixConfiguration holds dataplane agent settings: "default" for the cluster, "node.<name>" for
// one node. Only the settings that mean something to Terrace are modelled; Calico settings for
// features Terrace lacks (BPF, Wireguard, IPIP, VXLAN) are accepted only with their "off" value.
type FelixConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta             `json:"metadata"`
	Spec     FelixConfigurationSpec `json:"spec"`
}

// FelixConfigurationSpec follows Calico's field names.
type FelixConfigurationSpec struct {
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	LogSeverityFile   string `json:"logSeverityFile,omitempty"`
	LogSeveritySys    string `json:"logSeveritySys,omitempty"`
	LogFilePath       string `json:"logFilePath,omitempty"`
	LogPrefix         string `json:"logPrefix,omitempty"`

	ReportingInterval        *Duration `json:"reportingInterval,omitempty"`
	ReportingTTL             *Duration `json:"reportingTTL,omitempty"`
	EndpointReportingEnabled *bool     `json:"endpointReportingEnabled,omitempty"`

	IPv6Support             *bool     `json:"ipv6Support,omitempty"`
	RouteRefreshInterval    *Duration `json:"routeRefreshInterval,omitempty"`
	IptablesRefreshInterval *Duration `json:"iptablesRefreshInterval,omitempty"`
	IpsetsRefreshInterval   *Duration `json:"ipsetsRefreshInterval,omitempty"`
	IptablesBackend         string    `json:"iptablesBackend,omitempty"`
	IptablesLockTimeout     *Duration `json:"iptablesLockTimeout,omitempty"`
	IptablesMarkMask        *uint32   `json:"iptablesMarkMask,omitempty"`
	ChainInsertMode         string    `json:"chainInsertMode,omitempty"`

	DefaultEndpointToHostAction string `json:"defaultEndpointToHostAction,omitempty"`
	IptablesFilterAllowAction   string `json:"iptablesFilterAllowAction,omitempty"`
	IptablesFilterDenyAction    string `json:"iptablesFilterDenyAction,omitempty"`
	IptablesMangleAllowAction   string `json:"iptablesMangleAllowAction,omitempty"`

	InterfacePrefix  string `json:"interfacePrefix,omitempty"`
	InterfaceExclude string `json:"interfaceExclude,omitempty"`

	// A nil list means the defaults; an explicit empty list means no failsafe ports.
	FailsafeInboundHostPorts  *[]ProtoPort `json:"failsafeInboundHostPorts,omitempty"`
	FailsafeOutboundHostPorts *[]ProtoPort `json:"failsafeOutboundHostPorts,omitempty"`

	HealthEnabled            *bool  `json:"healthEnabled,omitempty"`
	HealthHost               string `json:"healthHost,omitempty"`
	HealthPort               *int   `json:"healthPort,omitempty"`
	PrometheusMetricsEnabled *bool  `json:"prometheusMetricsEnabled,omitempty"`
	PrometheusMetricsHost    string `json:"prometheusMetricsHost,omitempty"`
	PrometheusMetricsPort    *int   `json:"prometheusMetricsPort,omitempty"`

	NATOutgoingAddress   string `json:"natOutgoingAddress,omitempty"`
	NATPortRange         *Port  `json:"natPortRange,omitempty"`
	RemoveExternalRoutes *bool  `json:"removeExternalRoutes,omitempty"`
	RouteSource          string `json:"routeSource,omitempty"`

	// Tunnel MTUs are accepted (Calico's own sample sets ipipMTU) and mean nothing: Terrace
	// creates no tunnel devices.
	IPIPMTU        *int `json:"ipipMTU,omitempty"`
	VXLANMTU       *int `json:"vxlanMTU,omitempty"`
	VXLANMTUV6     *int `json:"vxlanMTUV6,omitempty"`
	WireguardMTU   *int `json:"wireguardMTU,omitempty"`
	WireguardMTUV6 *int `json:"wireguardMTUV6,omitempty"`

	// Features Terrace does not have; accepted only when off.
	IPIPEnabled        *bool  `json:"ipipEnabled,omitempty"`
	VXLANEnabled       *bool  `json:"vxlanEnabled,omitempty"`
	WireguardEnabled   *bool  `json:"wireguardEnabled,omitempty"`
	WireguardEnabledV6 *bool  `json:"wireguardEnabledV6,omitempty"`
	BPFEnabled         *bool  `json:"bpfEnabled,omitempty"`
	BPFLogLevel        string `json:"bpfLogLevel,omitempty"`
	XDPEnabled         *bool  `json:"xdpEnabled,omitempty"`
	FloatingIPs        string `json:"floatingIPs,omitempty"`
}

// ProtoPort is one failsafe port: protocol "TCP" or "UDP", a port, and optionally a CIDR the
// remote end must be in.
type ProtoPort struct {
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Net      string `json:"net,omitempty"`
}

// DefaultFailsafeInboundHostPorts are the ports no policy can close inbound on a host endpoint:
// SSH, DHCP client, BGP, etcd and the Kubernetes API server.
func DefaultFailsafeInboundHostPorts() []ProtoPort {
	return []ProtoPort{
		{Protocol: "TCP", Port: 22}, {Protocol: "UDP", Port: 68}, {Protocol: "TCP", Port: 179},
		{Protocol: "TCP", Port: 2379}, {Protocol: "TCP", Port: 2380}, {Protocol: "TCP", Port: 6443},
	}
}

// DefaultFailsafeOutboundHostPorts are the ports no policy can close outbound from a host endpoint:
// DNS, DHCP server, BGP, etcd and the Kubernetes API server.
func DefaultFailsafeOutboundHostPorts() []ProtoPort {
	return []ProtoPort{
		{Protocol: "UDP", Port: 53}, {Protocol: "UDP", Port: 67}, {Protocol: "TCP", Port: 179},
		{Protocol: "TCP", Port: 2379}, {Protocol: "TCP", Port: 2380}, {Protocol: "TCP", Port: 6443},
	}
}

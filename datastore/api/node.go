package api

// Node is one host running terrace-node.
type Node struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     NodeSpec   `json:"spec"`
	// Status is written by the node's own agent; it is never desired state.
	Status NodeStatus `json:"status,omitzero"`
}

// NodeSpec follows Calico's NodeSpec. The VXLAN/IPIP/Wireguard tunnel fields are accepted only
// empty because Terrace never encapsulates.
type NodeSpec struct {
	BGP                  *NodeBGPSpec       `json:"bgp,omitempty"`
	Addresses            []NodeAddress      `json:"addresses,omitempty"`
	OrchRefs             []OrchRef          `json:"orchRefs,omitempty"`
	IPv4VXLANTunnelAddr  string             `json:"ipv4VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddr   string             `json:"vxlanTunnelMACAddr,omitempty"`
	IPv6VXLANTunnelAddr  string             `json:"ipv6VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddrV6 string             `json:"vxlanTunnelMACAddrV6,omitempty"`
	Wireguard            *NodeWireguardSpec `json:"wireguard,omitempty"`
}

// NodeBGPSpec holds a node's BGP addresses (CIDR notation, e.g. "192.0.2.10/24", as Calico writes
// them; a bare address is accepted), its AS number (BGPConfiguration's when nil) and, when set, the
// route reflector cluster ID that makes it a reflector.
type NodeBGPSpec struct {
	ASNumber                *ASNumber `json:"asNumber,omitempty"`
	IPv4Address             string    `json:"ipv4Address,omitempty"`
	IPv6Address             string    `json:"ipv6Address,omitempty"`
	IPv4IPIPTunnelAddr      string    `json:"ipv4IPIPTunnelAddr,omitempty"`
	RouteReflectorClusterID string    `json:"routeReflectorClusterID,omitempty"`
}

// NodeAddress is one address of the node with its type (InternalIP, ExternalIP, CalicoNodeIP).
type NodeAddress struct {
	Address string `json:"address"`
	Type    string `json:"type,omitempty"`
}

// Node address types.
const (
	NodeAddressInternalIP   = "InternalIP"
	NodeAddressExternalIP   = "ExternalIP"
	NodeAddressCalicoNodeIP = "CalicoNodeIP"
)

// OrchRef names the node in an orchestrator.
type OrchRef struct {
	NodeName     string `json:"nodeName,omitempty"`
	Orchestrator string `json:"orchestrator"`
}

// NodeWireguardSpec is accepted for Calico compatibility only when empty.
type NodeWireguardSpec struct {
	InterfaceIPv4Address string `json:"interfaceIPv4Address,omitempty"`
	InterfaceIPv6Address string `json:"interfaceIPv6Address,omitempty"`
}

// NodeStatus is what the node's agent reports about itself.
type NodeStatus struct {
	// Autodetection records how the node's addresses were chosen, because a wrong node address is
	// the most common cause of broken BGP: it must be visible in `terracectl get node -o yaml`.
	Autodetection        *Autodetection `json:"autodetection,omitempty"`
	PodCIDRs             []string       `json:"podCIDRs,omitempty"`
	WireguardPublicKey   string         `json:"wireguardPublicKey,omitempty"`
	WireguardPublicKeyV6 string         `json:"wireguardPublicKeyV6,omitempty"`
}

// Autodetection says which method chose the node's addresses and why.
type Autodetection struct {
	// Method is "flag" (given with --ip/--ip6), "first-found", "interface=REGEX" or "can-reach=ADDR".
	Method    string `json:"method,omitempty"`
	IPv4      string `json:"ipv4,omitempty"`
	IPv6      string `json:"ipv6,omitempty"`
	Interface string `json:"interface,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Time is when the choice was made (RFC 3339).
	Time string `json:"time,omitempty"`
}

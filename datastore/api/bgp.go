package api

// BGPPeer is a BGP neighbour for all nodes (no node or nodeSelector), one node (node), or the nodes
// a selector picks. With peerSelector the neighbours are the selected Nodes themselves (the way to
// build route reflector topologies).
type BGPPeer struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec follows Calico's BGPPeerSpec.
type BGPPeerSpec struct {
	Node                     string       `json:"node,omitempty"`
	PeerIP                   string       `json:"peerIP,omitempty"`
	ASNumber                 ASNumber     `json:"asNumber,omitempty"`
	LocalASNumber            *ASNumber    `json:"localASNumber,omitempty"`
	NodeSelector             string       `json:"nodeSelector,omitempty"`
	PeerSelector             string       `json:"peerSelector,omitempty"`
	KeepOriginalNextHop      bool         `json:"keepOriginalNextHop,omitempty"`
	NextHopMode              string       `json:"nextHopMode,omitempty"`
	Password                 *BGPPassword `json:"password,omitempty"`
	SourceAddress            string       `json:"sourceAddress,omitempty"`
	FailureDetectionMode     string       `json:"failureDetectionMode,omitempty"`
	RestartMode              string       `json:"restartMode,omitempty"`
	MaxRestartTime           *Duration    `json:"maxRestartTime,omitempty"`
	KeepaliveTime            *Duration    `json:"keepaliveTime,omitempty"`
	HoldTime                 *Duration    `json:"holdTime,omitempty"`
	BIRDGatewayMode          string       `json:"birdGatewayMode,omitempty"`
	NumAllowedLocalASNumbers *int         `json:"numAllowedLocalASNumbers,omitempty"`
	TTLSecurity              *int         `json:"ttlSecurity,omitempty"`
	EBGPMultihopTTL          *int         `json:"ebgpMultihopTTL,omitempty"`
	ReachableBy              string       `json:"reachableBy,omitempty"`
	Filters                  []string     `json:"filters,omitempty"`
	LocalWorkloadSelector    string       `json:"localWorkloadSelector,omitempty"`
	ReversePeering           string       `json:"reversePeering,omitempty"`
}

// BGPPeer enumerations, spelled as in Calico.
const (
	SourceAddressUseNodeIP = "UseNodeIP"
	SourceAddressNone      = "None"

	NextHopAuto = "Auto"
	NextHopSelf = "Self"
	NextHopKeep = "Keep"

	RestartGraceful          = "GracefulRestart"
	RestartLongLivedGraceful = "LongLivedGracefulRestart"
)

// BGPPassword names where the MD5 password lives; the password itself is never stored in etcd.
// Calico's secretKeyRef{name,key} is read on each node from <state-dir>/secrets/<name>/<key>
// (by convention /var/lib/terrace/secrets); File names a node-local file directly.
type BGPPassword struct {
	SecretKeyRef *SecretKeySelector `json:"secretKeyRef,omitempty"`
	File         string             `json:"file,omitempty"`
}

// SecretKeySelector names one key of a secret.
type SecretKeySelector struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Optional *bool  `json:"optional,omitempty"`
}

// BGPFilter is a named list of import and export rules for BGP routes, per address family; a
// BGPPeer applies the filters it names (spec.filters), in order, before Terrace's own export rules.
type BGPFilter struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta    `json:"metadata"`
	Spec     BGPFilterSpec `json:"spec"`
}

// BGPFilterSpec follows Calico's BGPFilterSpec.
type BGPFilterSpec struct {
	ExportV4 []BGPFilterRule `json:"exportV4,omitempty"`
	ImportV4 []BGPFilterRule `json:"importV4,omitempty"`
	ExportV6 []BGPFilterRule `json:"exportV6,omitempty"`
	ImportV6 []BGPFilterRule `json:"importV6,omitempty"`
}

// BGPFilterRule matches routes and accepts or rejects them; the first matching rule decides.
type BGPFilterRule struct {
	CIDR          string                 `json:"cidr,omitempty"`
	PrefixLength  *BGPFilterPrefixLength `json:"prefixLength,omitempty"`
	Source        string                 `json:"source,omitempty"`
	Interface     string                 `json:"interface,omitempty"`
	MatchOperator string                 `json:"matchOperator,omitempty"`
	Action        string                 `json:"action"`
}

// BGPFilterPrefixLength bounds the prefix length of routes an In or NotIn rule matches.
type BGPFilterPrefixLength struct {
	Min *int32 `json:"min,omitempty"`
	Max *int32 `json:"max,omitempty"`
}

// BGPFilter enumerations, spelled as in Calico.
const (
	BGPFilterAccept            = "Accept"
	BGPFilterReject            = "Reject"
	BGPFilterEqual             = "Equal"
	BGPFilterNotEqual          = "NotEqual"
	BGPFilterIn                = "In"
	BGPFilterNotIn             = "NotIn"
	BGPFilterSourceRemotePeers = "RemotePeers"
)

// BGPConfiguration holds BGP settings: "default" for the cluster, "node.<name>" for one node.
type BGPConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta           `json:"metadata"`
	Spec     BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec follows Calico's BGPConfigurationSpec.
type BGPConfigurationSpec struct {
	LogSeverityScreen        string                `json:"logSeverityScreen,omitempty"`
	NodeToNodeMeshEnabled    *bool                 `json:"nodeToNodeMeshEnabled,omitempty"`
	ASNumber                 *ASNumber             `json:"asNumber,omitempty"`
	ListenPort               int                   `json:"listenPort,omitempty"`
	ServiceLoadBalancerIPs   []ServiceIPBlock      `json:"serviceLoadBalancerIPs,omitempty"`
	ServiceExternalIPs       []ServiceIPBlock      `json:"serviceExternalIPs,omitempty"`
	ServiceClusterIPs        []ServiceIPBlock      `json:"serviceClusterIPs,omitempty"`
	Communities              []Community           `json:"communities,omitempty"`
	PrefixAdvertisements     []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`
	NodeMeshPassword         *BGPPassword          `json:"nodeMeshPassword,omitempty"`
	NodeMeshMaxRestartTime   *Duration             `json:"nodeMeshMaxRestartTime,omitempty"`
	BindMode                 string                `json:"bindMode,omitempty"`
	IgnoredInterfaces        []string              `json:"ignoredInterfaces,omitempty"`
	LocalWorkloadPeeringIPV4 string                `json:"localWorkloadPeeringIPV4,omitempty"`
	LocalWorkloadPeeringIPV6 string                `json:"localWorkloadPeeringIPV6,omitempty"`
}

// ServiceIPBlock is one CIDR of service addresses to advertise.
type ServiceIPBlock struct {
	CIDR string `json:"cidr,omitempty"`
}

// Community names a BGP community value: "aa:nn" (standard) or "aa:nn:mm" (large).
type Community struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// PrefixAdvertisement attaches communities (names from Communities or literal values) to a CIDR.
type PrefixAdvertisement struct {
	CIDR        string   `json:"cidr,omitempty"`
	Communities []string `json:"communities,omitempty"`
}

// BGP defaults, as in Calico.
const (
	DefaultASNumber   ASNumber = 64512
	DefaultListenPort          = 179
	// DefaultConfigName is the cluster-wide BGPConfiguration/FelixConfiguration name; per-node
	// ones are named NodeConfigPrefix + node name.
	DefaultConfigName = "default"
	NodeConfigPrefix  = "node."
)

package api

// IPPool is a range of workload addresses that IPAM carves into blocks.
type IPPool struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     IPPoolSpec `json:"spec"`
}

// IPPoolSpec follows Calico's IPPoolSpec. ipipMode and vxlanMode exist so Calico manifests apply;
// only "Never" (or empty) is accepted because Terrace routes without encapsulation.
type IPPoolSpec struct {
	CIDR             string   `json:"cidr"`
	VXLANMode        string   `json:"vxlanMode,omitempty"`
	IPIPMode         string   `json:"ipipMode,omitempty"`
	NATOutgoing      bool     `json:"natOutgoing"`
	Disabled         bool     `json:"disabled,omitempty"`
	DisableBGPExport bool     `json:"disableBGPExport,omitempty"`
	BlockSize        int      `json:"blockSize,omitempty"`
	NodeSelector     string   `json:"nodeSelector,omitempty"`
	AllowedUses      []string `json:"allowedUses,omitempty"`
	AssignmentMode   string   `json:"assignmentMode,omitempty"`
}

// Encapsulation modes and allowed uses, as Calico spells them.
const (
	EncapNever       = "Never"
	EncapAlways      = "Always"
	EncapCrossSubnet = "CrossSubnet"

	AllowedUseWorkload     = "Workload"
	AllowedUseTunnel       = "Tunnel"
	AllowedUseLoadBalancer = "LoadBalancer"

	AssignmentAutomatic = "Automatic"
	AssignmentManual    = "Manual"
)

// Default and allowed block sizes (prefix lengths).
const (
	DefaultBlockSize4 = 26
	DefaultBlockSize6 = 122
	MinBlockSize4     = 20
	MaxBlockSize4     = 32
	MinBlockSize6     = 116
	MaxBlockSize6     = 128
)

// IPAMConfiguration holds cluster-wide IPAM settings. Calico allows one, named "default".
type IPAMConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta            `json:"metadata"`
	Spec     IPAMConfigurationSpec `json:"spec"`
}

// IPAMConfigurationSpec: StrictAffinity forbids borrowing addresses from other hosts' blocks;
// MaxBlocksPerHost of 0 means no limit.
type IPAMConfigurationSpec struct {
	StrictAffinity     bool  `json:"strictAffinity"`
	MaxBlocksPerHost   int   `json:"maxBlocksPerHost,omitempty"`
	AutoAllocateBlocks *bool `json:"autoAllocateBlocks,omitempty"`
}

// IPAMConfigurationName is the only accepted IPAMConfiguration name.
const IPAMConfigurationName = "default"

package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/terracenet/terrace/cni/shim"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/internal/loglevel"
)

// Plugin types this binary answers to.
const (
	PluginType = "terrace"
	IPAMType   = "terrace-ipam"
)

// Defaults used when neither the network configuration nor the environment says otherwise.
const (
	DefaultEtcdEndpoint = "http://127.0.0.1:2379"
	DefaultNodeSocket   = shim.DefaultNodeSocket
	DefaultLogFile      = shim.DefaultLogFile
	DefaultMTU          = 1500
)

// Environment variables consulted where a configuration key is absent (CONVENTIONS.md).
const (
	EnvEtcdEndpoints = "TERRACE_ETCD_ENDPOINTS"
	EnvEtcdCA        = "TERRACE_ETCD_CA"
	EnvEtcdCert      = "TERRACE_ETCD_CERT"
	EnvEtcdKey       = "TERRACE_ETCD_KEY"
	EnvNodeName      = "TERRACE_NODE_NAME"
	EnvNodeSocket    = shim.EnvNodeSocket
	EnvLogLevel      = "TERRACE_LOG_LEVEL"
	EnvLogFile       = shim.EnvLogFile
)

// NetConf is the network configuration as the runtime sends it on stdin. Keys follow Calico's
// so existing configurations carry over. Unknown keys are ignored: runtimes add their own
// (capabilities, runtimeConfig) and CNI requires plugins to tolerate them.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// DatastoreType is Calico's; Terrace's datastore is etcd, so a configuration carried over
	// with "kubernetes" is refused rather than left to fail as if etcd were briefly down.
	DatastoreType  string `json:"datastore_type"`
	EtcdEndpoints  string `json:"etcd_endpoints"`
	EtcdCACertFile string `json:"etcd_ca_cert_file"`
	EtcdCertFile   string `json:"etcd_cert_file"`
	EtcdKeyFile    string `json:"etcd_key_file"`
	NodeName       string `json:"nodename"`
	NodeSocket     string `json:"node_socket"`
	// NodeSocketAlt is the camel-case spelling some configurations use for node_socket.
	NodeSocketAlt string `json:"nodeSocket"`
	MTU           int    `json:"mtu"`
	LogLevel      string `json:"log_level"`
	LogFilePath   string `json:"log_file_path"`
	// PolicySetupTimeoutSeconds > 0 makes ADD wait until the node agent reports the endpoint's
	// policy programmed.
	PolicySetupTimeoutSeconds int `json:"policy_setup_timeout_seconds"`

	IPAM IPAMConf `json:"ipam"`
	Args *struct {
		CNI struct {
			Labels []Label `json:"labels"`
			// IPs are requested addresses (the CNI "args" convention).
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args,omitempty"`
	// RuntimeConfig carries what the runtime fills in for the capabilities the plugin declares
	// in its conflist; "ips" (requested addresses) is the one Terrace reads.
	RuntimeConfig *struct {
		IPs []string `json:"ips"`
	} `json:"runtimeConfig,omitempty"`

	RawPrevResult    map[string]any       `json:"prevResult,omitempty"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// Attachments is the key the CNI 1.1.0 text first gave GC's list (renamed
	// cni.dev/valid-attachments; libcni sends both): a runtime written from that text sends only it.
	Attachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// gcAttachments is GC's list of valid attachments from either key. A request with neither is
// refused rather than read as "nothing is valid", which would tear down every pod of the network
// on the node; libcni sends an empty list, not none, when nothing is valid.
func (c *Config) gcAttachments() ([]types.GCAttachment, error) {
	if c.Raw.ValidAttachments == nil && c.Raw.Attachments == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			"GC without cni.dev/valid-attachments: refusing to treat every attachment as stale", "")
	}
	return slices.Concat(c.Raw.ValidAttachments, c.Raw.Attachments), nil
}

// IPAMConf is the "ipam" section. assign_ipv4/assign_ipv6 are strings in Calico's configs
// ("true"), booleans in hand-written ones; both are accepted.
type IPAMConf struct {
	Type       string   `json:"type"`
	AssignIPv4 *Bool    `json:"assign_ipv4,omitempty"`
	AssignIPv6 *Bool    `json:"assign_ipv6,omitempty"`
	IPv4Pools  []string `json:"ipv4_pools,omitempty"`
	IPv6Pools  []string `json:"ipv6_pools,omitempty"`
}

// Label is one entry of the args.cni.labels convention.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Bool unmarshals from true/false or "true"/"false".
type Bool bool

// UnmarshalJSON accepts a JSON boolean or a string holding one.
func (b *Bool) UnmarshalJSON(data []byte) error {
	var v bool
	if err := json.Unmarshal(data, &v); err == nil {
		*b = Bool(v)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("parse boolean: %s is neither true/false nor a string", data)
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true":
		*b = true
	case "false":
		*b = false
	default:
		return fmt.Errorf("parse boolean: %q is not \"true\" or \"false\"", s)
	}
	return nil
}

// EtcdConfig says how to reach the datastore.
type EtcdConfig struct {
	Endpoints             []string
	CAFile, CertFile, Key string
}

// Config is a network configuration with every default and environment fallback applied and
// checked: what a command acts on.
type Config struct {
	// Ignored lists what ParseConfigForDel found wrong and let pass (DEL does not use it).
	Ignored            []string
	Raw                NetConf
	Network            string
	CNIVersion         string
	Etcd               EtcdConfig
	Node               string
	NodeSocket         string
	MTU                int
	LogLevel           slog.Level
	LogFile            string
	PolicySetupTimeout time.Duration
	AssignIPv4         bool
	AssignIPv6         bool
	IPv4Pools          []string
	IPv6Pools          []string
	Labels             map[string]string
	// IPs are the addresses the pod asks for (runtimeConfig.ips, else args.cni.ips); IPsFrom
	// says which key gave them. The ones of CNI_ARGS IP= are in PodArgs.
	IPs     []netip.Addr
	IPsFrom string
	// IPsErr is what is wrong with the requested addresses (a CNI error, code 7). Only ADD fails
	// on it: DEL and CHECK must still be able to clean up and look at a pod whose request was bad.
	IPsErr error
}

// MaxPolicySetupTimeoutSeconds bounds policy_setup_timeout_seconds: an hour is already far longer
// than any runtime waits for a plugin.
const MaxPolicySetupTimeoutSeconds = 3600

// ParseConfig decodes and resolves a network configuration. getenv supplies the TERRACE_*
// fallbacks and hostname the default node name (both injectable so tests need no environment).
// Errors are *types.Error with code ErrDecodingFailure (not JSON) or ErrInvalidNetworkConfig.
func ParseConfig(data []byte, getenv func(string) string, hostname func() (string, error)) (*Config, error) {
	return parseConfig(data, getenv, hostname, false)
}

// ParseConfigForDel is ParseConfig for DEL: a setting only ADD and CHECK use (mtu, log_level,
// the ipam section, labels, the policy wait) that is wrong does not stop the teardown — the spec
// wants DEL to complete as far as it can, and a runtime retries a failed DEL for ever, leaving the
// pod stuck. Such problems are in Config.Ignored; a wrong log_level logs at info.
func ParseConfigForDel(data []byte, getenv func(string) string, hostname func() (string, error)) (*Config, error) {
	return parseConfig(data, getenv, hostname, true)
}

func parseConfig(data []byte, getenv func(string) string, hostname func() (string, error), forDel bool) (*Config, error) {
	var nc NetConf
	var ignored []string
	if err := json.Unmarshal(data, &nc); err != nil {
		// DEL must not fail on a wrongly typed setting it does not use ("mtu": "1500"): the
		// runtime would retry it for ever. Those keys are dropped and named in Ignored.
		lenient, dropped := dropMistypedAddOnly(data)
		if !forDel || len(dropped) == 0 || json.Unmarshal(lenient, &nc) != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration: "+err.Error(), "")
		}
		ignored = dropped
	}
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	later := func(format string, a ...any) {
		if forDel {
			ignored = append(ignored, fmt.Sprintf(format, a...))
		} else {
			bad(format, a...)
		}
	}
	if nc.CNIVersion == "" {
		bad("cniVersion is required")
	}
	if nc.Name == "" {
		bad("name is required")
	}
	pick := func(v, env, def string) string {
		if v != "" {
			return v
		}
		if e := strings.TrimSpace(getenv(env)); e != "" {
			return e
		}
		return def
	}
	c := &Config{Raw: nc, Network: nc.Name, CNIVersion: nc.CNIVersion}

	for _, ep := range strings.Split(pick(nc.EtcdEndpoints, EnvEtcdEndpoints, DefaultEtcdEndpoint), ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("etcd_endpoints: %q is not an http:// or https:// URL", ep)
			continue
		}
		c.Etcd.Endpoints = append(c.Etcd.Endpoints, ep)
	}
	if len(c.Etcd.Endpoints) == 0 && len(errs) == 0 {
		bad("etcd_endpoints: no endpoint given")
	}
	c.Etcd.CAFile = pick(nc.EtcdCACertFile, EnvEtcdCA, "")
	c.Etcd.CertFile = pick(nc.EtcdCertFile, EnvEtcdCert, "")
	c.Etcd.Key = pick(nc.EtcdKeyFile, EnvEtcdKey, "")
	if (c.Etcd.CertFile == "") != (c.Etcd.Key == "") {
		bad("etcd_cert_file and etcd_key_file must be given together")
	}

	c.Node = pick(nc.NodeName, EnvNodeName, "")
	if c.Node == "" && hostname != nil {
		h, err := hostname()
		if err != nil {
			bad("nodename is not set and the host name is unknown: %v", err)
		}
		c.Node = strings.ToLower(h)
	}
	if c.Node == "" {
		bad("nodename is required")
	} else if !isSubdomain(c.Node) {
		bad("nodename %q must be an RFC 1123 subdomain (lower-case letters, digits, '-' and '.')", c.Node)
	}
	if nc.NodeSocket == "" {
		nc.NodeSocket = nc.NodeSocketAlt
	}
	c.NodeSocket = pick(nc.NodeSocket, EnvNodeSocket, DefaultNodeSocket)

	switch nc.DatastoreType {
	case "", "etcdv3", "etcd":
	default:
		bad("datastore_type %q is not supported: Terrace's datastore is etcd (etcdv3); set etcd_endpoints", nc.DatastoreType)
	}
	switch {
	case nc.MTU == 0:
		c.MTU = DefaultMTU
	case nc.MTU < 68 || nc.MTU > 65535:
		later("mtu %d is outside 68-65535", nc.MTU)
	default:
		c.MTU = nc.MTU
	}
	lvl, err := parseLevel(pick(nc.LogLevel, EnvLogLevel, "info"))
	if err != nil {
		later("log_level: %v", err)
	}
	c.LogLevel = lvl
	c.LogFile = pick(nc.LogFilePath, EnvLogFile, DefaultLogFile)
	switch {
	case nc.PolicySetupTimeoutSeconds < 0:
		later("policy_setup_timeout_seconds %d is negative", nc.PolicySetupTimeoutSeconds)
	case nc.PolicySetupTimeoutSeconds > MaxPolicySetupTimeoutSeconds:
		// Larger values are a mistake (or "for ever"), and would overflow the deadlines.
		later("policy_setup_timeout_seconds %d is over %d", nc.PolicySetupTimeoutSeconds, MaxPolicySetupTimeoutSeconds)
	default:
		c.PolicySetupTimeout = time.Duration(nc.PolicySetupTimeoutSeconds) * time.Second
	}

	switch nc.IPAM.Type {
	case "", IPAMType:
	default:
		later("ipam.type %q is not supported: only %q", nc.IPAM.Type, IPAMType)
	}
	// Calico's defaults: IPv4 on, IPv6 off.
	c.AssignIPv4, c.AssignIPv6 = true, false
	if nc.IPAM.AssignIPv4 != nil {
		c.AssignIPv4 = bool(*nc.IPAM.AssignIPv4)
	}
	if nc.IPAM.AssignIPv6 != nil {
		c.AssignIPv6 = bool(*nc.IPAM.AssignIPv6)
	}
	if !c.AssignIPv4 && !c.AssignIPv6 {
		later("ipam: assign_ipv4 and assign_ipv6 are both false; nothing to assign")
	}
	if c.AssignIPv6 && c.MTU < 1280 {
		// The kernel gives a link below IPv6's minimum MTU no IPv6 at all.
		later("mtu %d is below 1280, the least IPv6 allows, and ipam.assign_ipv6 is true", c.MTU)
	}
	c.IPv4Pools, c.IPv6Pools = nc.IPAM.IPv4Pools, nc.IPAM.IPv6Pools
	for _, p := range c.IPv4Pools {
		if strings.TrimSpace(p) == "" {
			later("ipam.ipv4_pools: empty pool name")
		}
	}
	for _, p := range c.IPv6Pools {
		if strings.TrimSpace(p) == "" {
			later("ipam.ipv6_pools: empty pool name")
		}
	}
	if nc.Args != nil {
		for i, l := range nc.Args.CNI.Labels {
			if l.Key == "" {
				later("args.cni.labels[%d]: key is required", i)
				continue
			}
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels[l.Key] = l.Value
		}
		// Refused here rather than by the datastore after the address and veth exist.
		if err := api.ValidateLabels("args.cni.labels", c.Labels); err != nil {
			later("%v", err)
		}
	}
	// runtimeConfig (the runtime's, per pod) wins over args (the configuration's).
	if nc.RuntimeConfig != nil && len(nc.RuntimeConfig.IPs) > 0 {
		c.IPsFrom = "runtimeConfig.ips"
		c.IPs, c.IPsErr = parseRequested(nc.RuntimeConfig.IPs, c.IPsFrom, types.ErrInvalidNetworkConfig)
	} else if nc.Args != nil && len(nc.Args.CNI.IPs) > 0 {
		c.IPsFrom = "args.cni.ips"
		c.IPs, c.IPsErr = parseRequested(nc.Args.CNI.IPs, c.IPsFrom, types.ErrInvalidNetworkConfig)
	}
	if len(errs) > 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration: "+strings.Join(errs, "; "), "")
	}
	c.Ignored = ignored
	return c, nil
}

// addOnlyKeys are the configuration keys only ADD and CHECK use.
var addOnlyKeys = []string{"mtu", "log_level", "policy_setup_timeout_seconds", "ipam", "args", "runtimeConfig"}

// dropMistypedAddOnly returns data without the ADD-only keys whose values do not decode into
// their fields, and what was wrong with each; data itself when it is not a JSON object.
func dropMistypedAddOnly(data []byte) ([]byte, []string) {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return data, nil
	}
	var dropped []string
	for _, k := range addOnlyKeys {
		v, ok := m[k]
		if !ok {
			continue
		}
		one, _ := json.Marshal(map[string]json.RawMessage{k: v})
		var nc NetConf
		if err := json.Unmarshal(one, &nc); err != nil {
			dropped = append(dropped, fmt.Sprintf("%s: %v", k, err))
			delete(m, k)
		}
	}
	if len(dropped) == 0 {
		return data, nil
	}
	out, err := json.Marshal(m)
	if err != nil {
		return data, nil
	}
	return out, dropped
}

// maxRequested bounds the addresses one attachment may ask for.
const maxRequested = 16

// parseRequested reads requested pod addresses: each an address, or an address with a prefix
// length as the CNI conventions write them ("10.1.2.3/24"; a Terrace pod gets the address as a
// /32 or /128 whatever the length says). Problems come back together as one CNI error of code,
// each naming where, and no addresses.
func parseRequested(entries []string, where string, code uint) ([]netip.Addr, error) {
	if len(entries) > maxRequested {
		return nil, types.NewError(code, fmt.Sprintf("invalid requested addresses: %s: %d addresses requested, at most %d", where, len(entries), maxRequested), "")
	}
	var out []netip.Addr
	var bad []string
	for i, e := range entries {
		ip, err := parseRequestedAddr(e)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s[%d]: %v", where, i, err))
		case slices.Contains(out, ip):
			bad = append(bad, fmt.Sprintf("%s[%d]: %s is requested twice", where, i, ip))
		default:
			out = append(out, ip)
		}
	}
	if len(bad) > 0 {
		return nil, types.NewError(code, "invalid requested addresses: "+strings.Join(bad, "; "), "")
	}
	return out, nil
}

func parseRequestedAddr(s string) (netip.Addr, error) {
	t := strings.TrimSpace(s)
	var ip netip.Addr
	var err error
	if strings.Contains(t, "/") {
		var p netip.Prefix
		if p, err = netip.ParsePrefix(t); err == nil {
			ip = p.Addr()
		}
	} else {
		ip, err = netip.ParseAddr(t)
	}
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address (or address/length)", s)
	}
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsMulticast(), ip.IsLinkLocalUnicast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("%s cannot be a pod's address", ip)
	}
	return ip, nil
}

func parseLevel(s string) (slog.Level, error) { return loglevel.Parse(s) }

// PodArgs are the CNI_ARGS Terrace reads: the pod a Kubernetes runtime names, and requested
// addresses.
type PodArgs struct {
	Namespace string       // K8S_POD_NAMESPACE
	Name      string       // K8S_POD_NAME
	UID       string       // K8S_POD_UID
	IPs       []netip.Addr // IP: comma-separated addresses (or address/length), as the static IPAM plugin takes them
	// IPsErr says what is wrong with IP (a CNI error, code 4); as Config.IPsErr, only ADD fails on it.
	IPsErr error
}

// ParseCNIArgs parses CNI_ARGS ("K=V;K=V"). Keys other than the K8S_POD_* ones and IP are
// ignored, as runtimes pass IgnoreUnknown=1 and keys for other plugins. A malformed pair is
// ErrInvalidEnvironmentVariables; a bad address in IP is PodArgs.IPsErr.
func ParseCNIArgs(s string) (PodArgs, error) {
	var a PodArgs
	if strings.TrimSpace(s) == "" {
		return a, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", kv), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		case "IP":
			a.IPs, a.IPsErr = parseRequested(strings.Split(v, ","), "CNI_ARGS IP", types.ErrInvalidEnvironmentVariables)
		}
	}
	// Checked here, before anything is allocated or wired: the endpoint named after them would
	// otherwise be refused only at the end of ADD, reported as a plugin bug.
	if a.Namespace != "" {
		if e := api.NamespaceError(a.Namespace); e != "" {
			return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS K8S_POD_NAMESPACE %q %s", a.Namespace, e), "")
		}
	}
	if a.Name != "" {
		if e := api.NameError(a.Name); e != "" {
			return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS K8S_POD_NAME %q %s", a.Name, e), "")
		}
	}
	return a, nil
}

// parseCNIArgsLenient is ParseCNIArgs skipping pairs it cannot read.
func parseCNIArgsLenient(s string) PodArgs {
	var kept []string
	for _, kv := range strings.Split(s, ";") {
		if k, _, ok := strings.Cut(kv, "="); ok && k != "" {
			kept = append(kept, kv)
		}
	}
	a, _ := ParseCNIArgs(strings.Join(kept, ";"))
	return a
}

// asCNIError returns err as a *types.Error, or nil if it is not one.
func asCNIError(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

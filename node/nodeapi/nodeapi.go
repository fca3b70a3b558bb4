// Package nodeapi holds the wire types of terrace-node's local API for the CNI plugin's datastore
// work (served by package node), so the server and its clients share one definition. It must never
// import anything that talks to etcd or the kernel: the plugin links it without linking etcd.
package nodeapi

import "net/netip"

// API error codes, stable: the CNI plugin maps them to its own errors.
const (
	CodeInvalid        = "invalid"         // malformed request (400) or resource failing validation (422)
	CodeWrongNode      = "wrong-node"      // the request is about another node (403)
	CodeNotFound       = "not-found"       // 404
	CodeExists         = "exists"          // 409
	CodeConflict       = "conflict"        // resourceVersion mismatch (409)
	CodePoolsExhausted = "pools-exhausted" // no free address (409)
	CodeNoPools        = "no-pools"        // no usable pool (422)
	CodeAddressInUse   = "address-in-use"  // a requested address is held by another handle (409)
	CodeNotInPool      = "not-in-pool"     // a requested address is in no pool (422)
	CodeUnavailable    = "unavailable"     // not connected yet, or etcd did not answer (503)
	CodeInternal       = "internal"        // 500
	// CodeNetnsUnseen: the agent cannot see the pod's network namespace at the path the runtime
	// gave (another mount or PID namespace than the runtime's); the plugin does the command (422).
	CodeNetnsUnseen = "netns-unseen"
	// CodeStopping: the agent is shutting down and takes no new commands (503).
	CodeStopping = "stopping"
	// CodeForbidden: only root may have the agent run CNI commands (403).
	CodeForbidden = "forbidden"
)

// APIError is the body of every error response.
type APIError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// DatastoreInfo is the body of GET /v1/datastore.
type DatastoreInfo struct {
	NodeName string `json:"nodeName"`
	Ready    bool   `json:"ready"`
}

// AssignRequest is the body of POST /v1/ipam/assign: Num4 and Num6 addresses IPAM picks, or
// exactly the addresses IPs (all or nothing).
type AssignRequest struct {
	Node      string            `json:"node"`
	Handle    string            `json:"handle"`
	Num4      int               `json:"num4,omitempty"`
	Num6      int               `json:"num6,omitempty"`
	IPs       []netip.Addr      `json:"ips,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
	IPv4Pools []string          `json:"ipv4Pools,omitempty"`
	IPv6Pools []string          `json:"ipv6Pools,omitempty"`
}

// AssignResponse lists the addresses assigned.
type AssignResponse struct {
	IPv4 []netip.Addr `json:"ipv4"`
	IPv6 []netip.Addr `json:"ipv6"`
}

// ReleaseRequest frees the addresses of Handle, or the addresses IPs; exactly one is set.
// Releasing a handle that does not exist is success (nothing to do).
type ReleaseRequest struct {
	Handle string       `json:"handle,omitempty"`
	IPs    []netip.Addr `json:"ips,omitempty"`
}

// ReleaseResponse says what was freed (by handle) or what was not assigned (by address).
type ReleaseResponse struct {
	Released    []netip.Addr `json:"released,omitempty"`
	Unallocated []netip.Addr `json:"unallocated,omitempty"`
}

// HandleResponse lists a handle's addresses.
type HandleResponse struct {
	IPs []netip.Addr `json:"ips"`
}

// CNIRequest is the body of POST /v1/cni: one whole CNI command (ADD, DEL or CHECK) that the
// plugin process hands to the agent to run, as the runtime gave it to the plugin.
type CNIRequest struct {
	// Plugin is the plugin the runtime called: "" for terrace, "terrace-ipam" for the IPAM
	// plugin alone (which only assigns and releases addresses).
	Plugin      string `json:"plugin,omitempty"`
	Command     string `json:"command"`
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns"`
	IfName      string `json:"ifName"`
	Args        string `json:"args,omitempty"`
	Path        string `json:"path,omitempty"`
	// StdinData is the network configuration exactly as the runtime wrote it.
	StdinData []byte `json:"stdinData"`
	// Env holds the TERRACE_* variables of the plugin's environment, which the configuration
	// falls back on; Hostname is the plugin's host name, the default node name.
	Env      map[string]string `json:"env,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	// FailAt names a step of ADD to fail on purpose; agents built without failure points refuse it.
	FailAt string `json:"failAt,omitempty"`
	// NetnsDev and NetnsIno identify the namespace at Netns as the plugin sees it (0 when it
	// could not stat it), so an agent that resolves the path to another namespace refuses.
	NetnsDev uint64 `json:"netnsDev,omitempty"`
	NetnsIno uint64 `json:"netnsIno,omitempty"`
	// PluginPid is the plugin process's pid, logged with the command.
	PluginPid int `json:"pluginPid,omitempty"`
	// NetnsOverride is CNI_NETNS_OVERRIDE: "1" or "true" lets CNI_NETNS be the plugin's own
	// namespace, as skel allows.
	NetnsOverride string `json:"netnsOverride,omitempty"`
	// Unchecked says the plugin applied none of skel's checks to the invocation, which the agent
	// then must (the terrace-cni shim links no skel). Always sent by such a plugin: an older agent,
	// which does not apply them, refuses the unknown field, and the plugin hands the command to
	// terrace-cni-etcd, which is skel.
	Unchecked bool `json:"unchecked,omitempty"`
	// RequestsAddresses says the invocation asks for specific pod addresses (runtimeConfig.ips,
	// args.cni.ips or CNI_ARGS IP=). An agent from before requested addresses would quietly
	// give the pod others; it refuses the unknown field instead, and terrace-cni-etcd, which
	// honours them, runs the command.
	RequestsAddresses bool `json:"requestsAddresses,omitempty"`
}

// CNIResponse is the outcome of a command the agent ran: Result (what the plugin prints) on
// success, Error (the CNI error the plugin prints) on failure.
type CNIResponse struct {
	Result []byte    `json:"result,omitempty"`
	Error  *CNIError `json:"error,omitempty"`
}

// CNIError is a CNI error as the spec prints it.
type CNIError struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *CNIError) Error() string {
	if e.Details != "" {
		return e.Msg + "; " + e.Details
	}
	return e.Msg
}

// AttachmentKey names the attachment a command is about (container ID and interface): commands
// for one attachment are ordered, never run side by side.
func (r CNIRequest) AttachmentKey() string { return r.ContainerID + "/" + r.IfName }

// Refusal is an error for a request the agent did not act on at all (wrong node, malformed, a
// namespace it cannot see), with the API code to answer; the plugin then does the command itself.
type Refusal struct {
	Code    string
	Message string
}

func (r *Refusal) Error() string { return r.Message }

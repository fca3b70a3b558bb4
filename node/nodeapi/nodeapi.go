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
	CodeUnavailable    = "unavailable"     // not connected yet, or etcd did not answer (503)
	CodeInternal       = "internal"        // 500
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

// AssignRequest is the body of POST /v1/ipam/assign.
type AssignRequest struct {
	Node      string            `json:"node"`
	Handle    string            `json:"handle"`
	Num4      int               `json:"num4,omitempty"`
	Num6      int               `json:"num6,omitempty"`
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

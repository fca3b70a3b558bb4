// Package cni is the Terrace CNI plugin's logic: it wires a pod as a pure-L3 endpoint (address from
// ipam, a veth whose host side routes a /32, the 169.254.1.1 gateway) and records its
// WorkloadEndpoint so felix and bgp take over. It must never program policy or routes to other
// hosts, and never leave half-made state behind when a step fails. The same code runs in two
// places: inside terrace-node, which runs ADD, DEL and CHECK for the terrace-cni shim
// (agentrun.go, package cni/shim), and in terrace-cni-etcd, the complete plugin the shim hands a
// command to when the agent does not take it. It links no etcd client itself (Backend is injected).
package cni

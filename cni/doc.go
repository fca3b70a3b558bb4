// Package cni is the terrace-cni plugin: it wires a pod as a pure-L3 endpoint (address from ipam, a veth
// whose host side routes a /32, the 169.254.1.1 gateway) and records its WorkloadEndpoint so felix and
// bgp take over. It must never program policy or routes to other hosts, and never leave half-made state
// behind when a step fails. Its datastore work goes to the node agent over the node socket; the
// terrace-cni binary links no etcd client and, when the agent does not answer, hands the whole command
// to terrace-cni-etcd before changing anything (fallback_linux.go).
package cni

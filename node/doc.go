// Package node is the terrace-node daemon's room: its configuration, registering the host's own
// Node resource (with the addresses it chose and why), address autodetection, the local HTTP API
// on the node socket, and the daemon's lifecycle. Felix and the BGP speaker plug into it as
// components that report their status here.
//
// The local API also serves the CNI plugin (ipamapi.go): whole ADD, DEL and CHECK commands, run
// by a CommandRunner that cmd/terrace-node wires in from package cni (this package does not link
// the plugin's code), and the datastore work for this node (address assignment through one warm
// allocator, the node's WorkloadEndpoints), so a plugin process needs no etcd connection of its
// own.
//
// It must never write any resource other than its own Node and, on the plugin's behalf, this
// node's WorkloadEndpoints and address assignments; and never change the network configuration
// of the host itself (the plugin's commands wire pods through the runner): autodetection only
// reads interfaces and asks the kernel which source address it would use (a UDP connect that
// sends nothing).
package node

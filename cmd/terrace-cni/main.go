// Command terrace-cni is the Terrace CNI plugin (type "terrace"); invoked as terrace-ipam (a link
// made by `make build`) it is the IPAM plugin alone. It is a shim: the node agent runs ADD, DEL
// and CHECK, and everything else, or any command when the agent does not take it, goes to
// terrace-cni-etcd from the same directory (package cni/shim).
package main

import "github.com/terracenet/terrace/cni/shim"

func main() { shim.Main() }

// Command terrace-cni is the Terrace CNI plugin (type "terrace"); invoked as terrace-ipam (a link
// made by `make build`) it is the IPAM plugin alone. It links no etcd client: the node agent does
// its datastore work, and when the agent does not answer (or for GC and STATUS, which read etcd
// themselves) it execs terrace-cni-etcd from its own directory with the same command. All logic
// lives in package cni; this file only wires the kernel and the fallback into it.
package main

import "github.com/terracenet/terrace/cni"

func main() {
	fb := cni.PrepareFallback()
	cni.Main(fb.Connector(), fb.Later(), cni.NewLinuxDataplane())
}

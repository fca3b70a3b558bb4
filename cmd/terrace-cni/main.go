// Command terrace-cni is the Terrace CNI plugin (type "terrace"); invoked as terrace-ipam (a link
// made by `make build`) it is the IPAM plugin alone. All logic lives in package cni; this file
// only wires the real datastore, IPAM and kernel into it.
package main

import "github.com/terracenet/terrace/cni"

func main() {
	cni.Main(connect, cni.NewLinuxDataplane())
}

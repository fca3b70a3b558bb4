// Command terrace-cni-etcd is the Terrace CNI plugin with the etcd client linked in: what
// terrace-cni execs when the node agent does not answer, or for the commands that read etcd
// themselves (GC, STATUS). It must sit in the same directory as terrace-cni. Run directly, it is
// a complete plugin that hands ADD, DEL and CHECK to the node agent first, like terrace-cni, and
// does them itself when the agent does not take them.
package main

import "github.com/terracenet/terrace/cni"

func main() {
	cni.Main(connect, cni.NewLinuxDataplane())
}

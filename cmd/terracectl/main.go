// Command terracectl manages Terrace's resources in etcd (create, apply, replace, delete, get,
// label) and asks the local terrace-node for its status. It owns the command line and how results
// are shown; it must never write anything but what the user asked for, and never write a document
// it found invalid.
package main

import "os"

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

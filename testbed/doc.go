// Package testbed builds a real multi-host Terrace fabric on one machine out of network namespaces,
// veth pairs and real daemons: a control namespace running the embedded etcd (`terrace-node etcd`),
// one or two BIRD 2 top-of-rack routers, N hosts each running `terrace-node run`, and pods wired to
// the hosts. It offers the same operations as the terrace-testbed command (up, down, exec, pods,
// connectivity checks, faults, status) as a Go API, so end-to-end tests are ordinary Go tests.
//
// The testbed owns only namespaces whose names start with its prefix, the processes it started (by
// recorded pid, verified against /proc/<pid>/cmdline) and its state directory. It must never change the
// root network namespace: every veth is created directly inside the namespaces that use it, sysctls
// are written only inside its own namespaces, and only the addresses of CONVENTIONS.md are used.
package testbed

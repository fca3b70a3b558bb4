// Package felix is the policy and dataplane half of terrace-node: it turns the datastore's endpoints,
// policies and network sets into iptables chains, ipsets, routes to local workloads and interface
// settings on this host. Desired state is computed by pure code; the writers under dataplane/ apply
// only the difference and resync from the kernel. It must never touch kernel objects that are not
// Terrace's (see docs/conventions.md) and never talk BGP.
package felix

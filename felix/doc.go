// Package felix is the policy and dataplane half of terrace-node: it turns the datastore's endpoints,
// policies and network sets into iptables chains, ipsets, routes to local workloads and interface
// settings on this host. Desired state is computed by pure code; the writers under dataplane/ apply
// only the difference and resync from the kernel. It must never touch kernel objects that are not
// Terrace's (see docs/conventions.md) and never talk BGP.
//
// This package holds the agent that runs the "compute, then apply" loop: a datastore syncer over
// Kinds and a kv syncer over this node's IPAM affinities feed felix/calc from one goroutine; at
// most every ApplyInterval the calculated delta is pushed into the writers and applied in the
// order they require (ipset updates, then the iptables tables side by side, then ipset
// deletions; routes and sysctls beside all of that). While the datastore is still being listed
// the iptables and ipset writers read the kernel ahead (Prime), so a restart does not pay for
// iptables-save between "in sync" and "programmed". Nothing is programmed before the datastore is
// in sync, and a writer may delete stale objects only after its first complete apply
// (SetInSync), so a restart never opens a gap.
// Periodic resyncs repair drift, each class of writers on its own timer as in Calico
// (iptablesRefreshInterval: the tables; ipsetsRefreshInterval: the ipsets; routeRefreshInterval:
// the routes and interface settings); a failing writer is retried with backoff and reported in
// readiness while the others go on. Once a local workload endpoint's policy is in the kernel its
// status key (datastore.EndpointStatusKey) is written, from a separate goroutine. Health and
// Prometheus metrics are served over HTTP on loopback by default. FelixConfiguration is followed
// while the agent runs: the calculation reads its runtime settings, and changes of the agent's own
// (endpoint addresses, refresh intervals) move a listener or reset a refresh ticker in place,
// never restarting the loop or flushing the dataplane. The agent must never write
// desired state to the datastore, only status under /terrace/status/v1/<node>/.
package felix

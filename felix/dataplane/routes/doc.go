// Package routes owns the kernel routes of one (table, protocol) owner: routes to local workloads
// and blackholes for this host's blocks (protocol 80, "terrace") or BGP-learned routes with one or
// more gateways (protocol 81, "terrace-bgp"). It keeps desired routes keyed by prefix, applies the
// difference through netlink and repairs drift by listing routes of its own protocol only. It must
// never replace or delete a route of another protocol, even one for the same prefix, and never
// delete a stale route of its own before the caller has declared the datastore in sync.
package routes

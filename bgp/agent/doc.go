// Package agent is the BGP side of terrace-node: it follows the datastore (Nodes, BGPPeers,
// BGPConfigurations, IPPools) and IPAM's blocks, computes the speaker's configuration with
// bgp/config, drives bgp/speaker, and programs the routes the speaker learns into the kernel as
// protocol 81 ("terrace-bgp") routes in the main table, resolving next hops that are not on a
// connected subnet through the underlay (as BIRD's recursive gateways do).
//
// It must never write to the datastore, never touch a kernel route of another protocol, never
// delete one of its own routes before the datastore is in sync and the first apply after start
// has happened (so a restart reconciles instead of flushing), and never log a BGP password.
package agent

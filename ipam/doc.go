// Package ipam is Terrace's address management: it owns the IPAM keys in etcd
// (/terrace/ipam/v1/blocks, /affinities and /handles), hands out workload addresses from IPPools in
// per-host blocks, releases them by handle or by address, releases a removed node's affinities and
// finds leaks. Every write is a compare-and-swap on etcd mod revisions (block and handle together in
// one transaction), so it never hands out one address twice and never loses one. Inside one
// Allocator the writers of a block take turns (concurrent assignments share one transaction), so
// only separate processes race; a lost race is retried after a growing random pause.
//
// It must never create or change resources (IPPools, Nodes, WorkloadEndpoints are read through the
// typed datastore client); its one resource write is DeletePool, which deletes an IPPool in the
// same transaction that proves no address was allocated in it since it counted. It must never
// touch the kernel, and never write a block without naming the revision it read. The pure block
// and handle types (block.go, records.go) do no I/O and are tested without etcd.
package ipam

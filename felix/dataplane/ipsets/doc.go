// Package ipsets owns Terrace's ipsets (names starting "trc", at most 31 characters): it keeps the
// desired sets and their members, writes only the difference through one "ipset restore" per
// apply (building a temporary set and swapping it in for large changes), and reads the kernel back
// with "ipset save" to repair drift. It must never create, change or destroy a set without the trc
// prefix, and never destroy a set of ours before the caller has declared the datastore in sync.
package ipsets

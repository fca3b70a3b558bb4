// Package kv is Terrace's raw etcd access: connection (TLS, user/password), get/list/create/update/
// delete with optimistic concurrency on revisions, and a syncer that lists then watches key prefixes
// and resyncs by itself. It deals in keys and bytes only; it must never know resource types or
// decode values, and never retry a write on the caller's behalf.
package kv

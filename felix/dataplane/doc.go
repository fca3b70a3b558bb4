// Package dataplane groups the kernel writers of felix: iptables (chains and jumps), ipsets, routes
// and per-interface sysctls. Each writer keeps desired and actual state, applies only the difference
// in one batch and can re-read the kernel (Resync) to repair drift. Writers only ever change kernel
// objects Terrace owns (prefix trc / protocols 80 and 81, see CONVENTIONS.md) and never remove
// anything before their caller has declared the datastore in sync. The policy calculation that
// feeds them lives elsewhere; this package holds no policy logic.
package dataplane

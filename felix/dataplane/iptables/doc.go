// Package iptables owns Terrace's iptables state for one table and one IP version: the trc- chains
// and the jump rules Terrace inserts at the top of kernel chains (INPUT, FORWARD, POSTROUTING ...).
// It writes through one iptables-restore --noflush transaction per Apply containing only what
// changed, recognises its rules by a "trc:<hash>" comment, and reads the kernel back with
// iptables-save to repair drift. It must never change a rule without a trc: comment or a chain
// without the trc- prefix, and never delete anything before SetInSync has been called.
package iptables

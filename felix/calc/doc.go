// Package calc is felix's calculation graph: fed with datastore resource updates and this node's
// name, it maintains incrementally the desired dataplane of this host — ipsets (ipsets.Meta plus
// members), iptables chains and kernel-chain insertions per table and IP version (iptables.Chain),
// routes to local workloads and blackholes for this node's IPAM blocks (routes.Target) — and a
// per-endpoint policy revision the node agent reports once the kernel holds it. It owns what the
// policy model means on the wire; it must never do I/O, start goroutines, read the clock or touch
// the kernel: the writers under felix/dataplane apply its Delta.
//
// Use: New(Config{NodeName, IPv6}); feed every syncer update to OnUpdate and this node's IPAM
// blocks to SetBlocks; call Flush after each batch and record the returned Delta into the writers
// (Delta.RecordInto), then apply them (ipset updates, iptables, ipset deletions, routes). Once
// applied, each EndpointStatus in the Delta is programmed at its Revision. Desired returns the full
// state for inspection and tests.
//
// # Semantics (Calico's, with Terrace's choices where Calico depends on Kubernetes)
//
// Local endpoints are the WorkloadEndpoints whose spec.node is this node (with an interface name)
// and this node's HostEndpoints with an interface name ("*" means every interface that is not a
// workload's) or with expectedIPs alone: those are placed on the host interfaces (SetHostInterfaces)
// holding one of the addresses, unless an endpoint names the interface; the lowest key wins a tie.
//
// Policies apply per direction ("types") in order: spec.order ascending, a missing order last,
// then the name (namespace/name for NetworkPolicy). A NetworkPolicy selects only workload endpoints
// in its own namespace; a GlobalNetworkPolicy selects workload and host endpoints, narrowed by its
// namespaceSelector when set. Isolation is Kubernetes-style: an endpoint is isolated for a
// direction only once at least one policy selects it for that direction; with no policy the
// direction allows everything. Once isolated, the first policy rule that matches decides: Allow
// accepts, Deny drops, Log logs and continues, Pass skips all remaining policies. Terrace has one
// tier and no Profile kind, so after a Pass the packet reaches the profile stage, which in Terrace
// always allows, exactly as every Kubernetes pod's per-namespace profile (kns.<namespace>) does in
// Calico. A packet no policy allowed or passed is dropped.
//
// Namespaces: Terrace has no Namespace kind. An endpoint's or network set's namespace labels are
// projectcalico.org/name (the namespace's name) plus every label of the endpoint written as
// "pcns.<key>" (Calico's own prefix for namespace labels inherited by endpoints), read as <key>.
// A rule's namespaceSelector is evaluated against those namespace labels; global() in it selects
// the non-namespaced entities (host endpoints, global network sets). As in Calico, in a
// NetworkPolicy a rule selector (or notSelector) without namespaceSelector means "in the policy's
// own namespace"; in a GlobalNetworkPolicy it means every namespace and the non-namespaced
// entities. notSelector is never narrowed by namespace.
//
// Selectors in rules become hash:net ipsets named ipsets.NameFor(family, identity) whose members
// are the addresses of every endpoint in the cluster (workload ipNetworks, host expectedIPs) and
// the nets of every NetworkSet and GlobalNetworkSet that match; a selector that matches nothing
// yields an empty set, which is valid and matches nothing. More than one net in nets/notNets also
// becomes a hash:net set. Each IP version is rendered separately; a rule that cannot match in a
// version (ipVersion, ICMP vs ICMPv6, nets only of the other family) is left out of that
// version's chains.
//
// Dataplane layout (filter table of each IP version): FORWARD, INPUT and OUTPUT jump to
// trc-FORWARD, trc-INPUT and trc-OUTPUT. Workload traffic is dispatched on the trc+11hex interface
// names to trc-fw-<hex> (from workload = egress policy) and trc-tw-<hex> (to workload = ingress
// policy); with more than 16 workloads the dispatch chains branch on the next hex digit of the
// name (trc-from-wl-dispatch-<digits>, trc-to-wl-dispatch-<digits>), so a packet meets a few dozen
// interface matches rather than one per endpoint. Host endpoint traffic goes to trc-fh-* (from
// host endpoint = ingress, INPUT) and trc-th-* (to host endpoint = egress, OUTPUT), each starting
// with the failsafe chains that no policy can close. Policy chains are trc-pi-* and trc-po-*.
// Traffic from a workload to the host first passes the workload's egress policy and then
// FelixConfiguration defaultEndpointToHostAction (Drop by default, as in Calico).
// Host-to-local-workload traffic is not filtered (kubelet probes), as in Calico. Every endpoint
// chain accepts established flows first, clears the verdict marks and, when policies select the
// endpoint in that direction, goes (-g) to the policy-list chain trc-pl-<hash of the ordered
// policy chains>, shared by every endpoint with the same list (1,000 endpoints under 50 distinct
// lists are 50 lists, not 1,000 copies). The list jumps to each policy chain in turn; policy
// verdicts travel back in two mark bits, the lowest two of FelixConfiguration iptablesMarkMask
// (by default 0x10000, accept: the list returns; and 0x20000, pass: the remaining policies and
// the final drop are skipped). An Allow rule is one rule that goes (-g) to
// trc-allow, which sets the mark and so returns straight to the list; Pass likewise goes to
// trc-pass; Deny, and the end of a list, jump to trc-deny, which DROPs or (FelixConfiguration
// iptablesFilterDenyAction Reject) REJECTs; Log is a LOG with prefix trc-ingress:/trc-egress:.
// What policy allowed is ACCEPTed at the end of trc-FORWARD, or of trc-INPUT/trc-OUTPUT for host
// endpoints (by the accept mark), or handed back to the kernel chain (iptablesFilterAllowAction
// Return); chainInsertMode Append puts Terrace's jumps at the end of the kernel chains.
// In nat POSTROUTING, traffic from a pool with natOutgoing (not disabled) to a destination outside
// every pool is masqueraded (or SNATed to natOutgoingAddress).
//
// Service accounts, as in Calico: a workload endpoint carries projectcalico.org/serviceaccount
// (spec.serviceAccountName) and its account's labels as "pcsa.<key>"; a rule's serviceAccounts
// (names and/or selector, the selector also seeing projectcalico.org/name) narrows its selector
// set, and a policy's serviceAccountSelector narrows the endpoints it applies to.
//
// Two local endpoints claiming one interface name: the lower key owns the chains and dispatch
// entry; the other is left out of Desired.Endpoints (so it never reports ready) until the owner goes.
//
// Named ports (ports/notPorts entries that are names) become hash:ip,port sets holding
// "address,proto:port" of every endpoint in the side's selector scope that declares a port of that
// name and the rule's protocol (TCP, UDP, SCTP); a side's numeric chunks and named-port sets are
// alternatives, so a rule may render to several iptables rules.
//
// Not implemented: applyOnForward host policy (refused by validation), profiles. Workload source
// addresses are checked before any policy: IPv4 by strict rp_filter on every workload interface
// (set by the CNI plugin and kept by felix's sysctl writer), IPv6 by ChainPrerouting in the raw
// table (rpfilter match on trc+ interfaces).
package calc

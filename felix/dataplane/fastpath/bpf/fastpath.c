// Terrace's forwarding fast path: a tc ingress program that forwards the IPv4 and IPv6 packets of
// flows that
// netfilter has already accepted and conntrack has seen answered, straight to the device they
// would leave by, past the IP stack and iptables. Everything it cannot prove the kernel would
// forward unchanged goes on to the kernel as before (TC_ACT_UNSPEC, so other tcx programs run
// too). It never drops: the worst a stale entry can do is send a packet the slow way.
//
// Built with `make bpf` (clang); the object is committed beside this file.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

// kfuncs are only callable from GPL-compatible programs.
char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10

// conntrack status bits (include/uapi/linux/netfilter/nf_conntrack_common.h)
#define IPS_SEEN_REPLY (1UL << 1)
#define IPS_ASSURED (1UL << 2)
#define IPS_CONFIRMED (1UL << 3)
#define IPS_SRC_NAT (1UL << 4)
#define IPS_DST_NAT (1UL << 5)
#define IPS_SEQ_ADJUST (1UL << 6)
#define IPS_DYING (1UL << 9)
#define PACKET_HOST 0
#define IPS_HELPER (1UL << 13)
#define TCP_CONNTRACK_ESTABLISHED 3

// Only the fields read here; CO-RE relocates them against the running kernel's struct nf_conn.
struct ip_ct_tcp___trc {
	__u8 state;
} __attribute__((preserve_access_index));

struct nf_ct_udp___trc {
	unsigned long stream_ts; // jiffies after which a replied flow counts as a stream
} __attribute__((preserve_access_index));

union nf_conntrack_proto___trc {
	struct ip_ct_tcp___trc tcp;
	struct nf_ct_udp___trc udp;
} __attribute__((preserve_access_index));

struct nf_conn___trc {
	unsigned long status;
	__u32 mark;
	union nf_conntrack_proto___trc proto;
} __attribute__((preserve_access_index));

// The original 12-byte layout, which every kernel with these kfuncs accepts.
struct bpf_ct_opts___trc {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

extern struct nf_conn___trc *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts___trc *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn___trc *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn___trc *ct, __u32 timeout) __ksym;
extern int bpf_ct_change_status(struct nf_conn___trc *ct, __u32 status) __ksym;

// Set by the loader from the namespace's nf_conntrack_*_timeout_* sysctls: a fast-pathed packet
// refreshes its entry as conntrack itself would, so a busy flow never expires under it.
volatile const __u32 tcp_established_timeout_ms = 432000000;
volatile const __u32 udp_stream_timeout_ms = 120000;
volatile const __u32 udp_timeout_ms = 30000;

// One entry per address of a local workload, written by felix from its routes: the host-side
// interface the address is routed to.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   // IPv4 address, network order
	__type(value, __u32); // ifindex
} trc_fp_wl4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct in6_addr);
	__type(value, __u32); // ifindex
} trc_fp_wl6 SEC(".maps");

// The host interfaces packets may leave by (felix's, with this program on them): a route through
// anything else (a tunnel that needs the kernel's route attached to the packet, say) is the
// kernel's to follow.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);   // ifindex
	__type(value, __u32); // unused
} trc_fp_out SEC(".maps");

enum {
	STAT_FORWARDED,       // sent on by the fast path
	STAT_NOT_ESTABLISHED, // no conntrack entry, or one not (yet) answered or established
	STAT_NOT_ELIGIBLE,    // NAT, helper, TTL, options, fragments, TCP control, not routed
	STAT_SPOOFED,         // from a workload interface with a source that is not its own
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} trc_fp_stats SEC(".maps");

static __always_inline int count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&trc_fp_stats, &what);
	if (v)
		*v += 1;
	return TC_ACT_UNSPEC;
}

// The last write to the packet: the checksum helper invalidates every packet pointer.
static __always_inline void decrement_ttl(struct __sk_buff *skb, struct iphdr *ip)
{
	__u16 old = bpf_htons((__u16)ip->ttl << 8);
	ip->ttl--;
	__u16 new = bpf_htons((__u16)ip->ttl << 8);
	bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, sizeof(__u16));
}

// hop counts the hop in the IP header, the packet's last write. IPv4's header checksum absorbs
// the change, so a checksum the NIC computed over the packet (CHECKSUM_COMPLETE) stays right;
// IPv6 has none, and the store mends that sum instead.
static __always_inline void hop(struct __sk_buff *skb, void *l3, int v6)
{
	if (v6) {
		__u8 hl = ((struct ipv6hdr *)l3)->hop_limit - 1;
		bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hl, sizeof(hl), BPF_F_RECOMPUTE_CSUM);
	} else {
		decrement_ttl(skb, l3);
	}
}

// l4 reads the ports into t and the L4 header's length; it returns 0 for a packet the fast path
// may take. Conntrack must see every change of a TCP connection's state, and would call a
// segment of an established connection without ACK invalid.
static __always_inline int l4(void *hdr, void *end, __u8 proto, __u32 l4max, __be16 *sport, __be16 *dport, __u32 *len)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = hdr;
		if ((void *)(th + 1) > end || th->syn || th->fin || th->rst || !th->ack || th->doff < 5)
			return -1;
		*sport = th->source;
		*dport = th->dest;
		*len = th->doff * 4;
		return 0;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *uh = hdr;
		// Conntrack calls a datagram longer than its packet, or shorter than its header, invalid.
		if ((void *)(uh + 1) > end || bpf_ntohs(uh->len) < sizeof(*uh) || bpf_ntohs(uh->len) > l4max)
			return -1;
		*sport = uh->source;
		*dport = uh->dest;
		*len = sizeof(*uh);
		return 0;
	}
	return -1;
}

// established says whether conntrack holds the flow as iptables would accept it as ESTABLISHED
// without looking at policy: a confirmed entry that has seen a reply (for TCP, in the established
// state), without NAT or a helper to apply. It refreshes the entry as conntrack would. Returns a
// STAT_ reason, or -1 when the packet may be taken.
static __always_inline int established(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tsz, __u8 proto)
{
	struct bpf_ct_opts___trc opts = {.netns_id = -1, .l4proto = proto};
	struct nf_conn___trc *ct = bpf_skb_ct_lookup(skb, t, tsz, &opts, sizeof(opts));
	if (!ct)
		return STAT_NOT_ESTABLISHED;
	unsigned long status = ct->status;
	int ok = (status & (IPS_SEEN_REPLY | IPS_CONFIRMED)) == (IPS_SEEN_REPLY | IPS_CONFIRMED);
	int eligible = !(status & (IPS_SRC_NAT | IPS_DST_NAT | IPS_SEQ_ADJUST | IPS_HELPER | IPS_DYING));
	// A connection mark is someone's rule at work (policy routing on it, mangle): theirs to see.
	if (bpf_core_field_exists(ct->mark) && ct->mark)
		eligible = 0;
	if (ok && proto == IPPROTO_TCP)
		ok = ct->proto.tcp.state == TCP_CONNTRACK_ESTABLISHED;
	if (ok && eligible) {
		if (proto == IPPROTO_TCP) {
			bpf_ct_change_timeout(ct, tcp_established_timeout_ms);
		} else if ((long)(ct->proto.udp.stream_ts - bpf_jiffies64()) < 0) {
			// As conntrack does for a replied flow that has gone on for its first 2 s: the
			// stream timeout, and assured (an entry that is not is the first evicted when
			// the table fills).
			bpf_ct_change_timeout(ct, udp_stream_timeout_ms);
			if (!(status & IPS_ASSURED))
				bpf_ct_change_status(ct, (__u32)status | IPS_ASSURED);
		} else {
			bpf_ct_change_timeout(ct, udp_timeout_ms);
		}
	}
	bpf_ct_release(ct);
	if (!ok)
		return STAT_NOT_ESTABLISHED;
	if (!eligible)
		return STAT_NOT_ELIGIBLE;
	return -1;
}

// A tagged frame belongs to a VLAN device the stack has yet to pick; a frame for another MAC
// (promiscuous, flooded) is one the stack would drop.
static __always_inline int for_this_host(struct __sk_buff *skb)
{
	return !skb->vlan_present && skb->pkt_type == PACKET_HOST;
}

// route sends the packet where the kernel's route lookup (fib, filled in but for the result)
// says, or leaves it to the kernel. The lookup brings the route's MTU check: the route's MTU (with
// learned path MTU) against the packet, or against one segment of a GSO packet, as forwarding
// would. dst is felix's interface for the destination when it is a local workload.
static __always_inline int route(struct __sk_buff *skb, struct ethhdr *eth, void *l3, struct bpf_fib_lookup *fib, __u32 *dst)
{
	int v6 = fib->family == AF_INET6;
	if (dst) {
		// A local workload is entered through its veth's peer, skipping a second pass through
		// the backlog; only the interface felix maps this very address to qualifies. The pod's
		// MAC is the kernel's neighbour entry for it (none yet: the slow path resolves it).
		if (bpf_fib_lookup(skb, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS || fib->ifindex != *dst ||
		    fib->ifindex == skb->ingress_ifindex)
			return count(STAT_NOT_ELIGIBLE);
		__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
		hop(skb, l3, v6);
		count(STAT_FORWARDED);
		return bpf_redirect_peer(fib->ifindex, 0);
	}
	// Out of the host: the kernel's neighbour code resolves the next hop (and probes a stale
	// entry) as forwarding would.
	if (bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib->ifindex == skb->ingress_ifindex)
		return count(STAT_NOT_ELIGIBLE);
	__u32 out = fib->ifindex;
	if (!bpf_map_lookup_elem(&trc_fp_out, &out))
		return count(STAT_NOT_ELIGIBLE);
	// The lookup says the next hop's family: an IPv4 route may have an IPv6 gateway (RFC 8950).
	struct bpf_redir_neigh nh = {};
	if (fib->family == AF_INET6) {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, sizeof(nh.ipv6_nh));
	} else {
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib->ipv4_dst;
	}
	hop(skb, l3, v6);
	count(STAT_FORWARDED);
	return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
}

static __always_inline int forward4(struct __sk_buff *skb, int from_workload)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || !for_this_host(skb))
		return TC_ACT_UNSPEC;
	__u32 saddr = ip->saddr, daddr = ip->daddr;

	__u32 *dst = bpf_map_lookup_elem(&trc_fp_wl4, &daddr);
	if (from_workload) {
		// A workload may only send from its own addresses: strict rp_filter, as on the slow
		// path, which is also what keeps it out of other pods' conntrack entries.
		__u32 *src = bpf_map_lookup_elem(&trc_fp_wl4, &saddr);
		if (!src || *src != skb->ingress_ifindex)
			return count(STAT_SPOOFED);
	} else if (!dst) {
		return TC_ACT_UNSPEC; // not for a local workload: the host's own traffic
	}

	// What ip_rcv would refuse or treat specially goes to it.
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1 ||
	    tot_len > skb->len - ETH_HLEN)
		return count(STAT_NOT_ELIGIBLE);

	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = saddr;
	t.ipv4.daddr = daddr;
	__u8 proto = ip->protocol;
	__u32 l4len;
	if (tot_len < sizeof(*ip) || l4(ip + 1, end, proto, tot_len - sizeof(*ip), &t.ipv4.sport, &t.ipv4.dport, &l4len) ||
	    tot_len < sizeof(*ip) + l4len)
		return count(STAT_NOT_ELIGIBLE);
	int why = established(skb, &t, sizeof(t.ipv4), proto);
	if (why >= 0)
		return count(why);

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = proto;
	fib.sport = t.ipv4.sport;
	fib.dport = t.ipv4.dport;
	fib.tot_len = skb->gso_size ? sizeof(*ip) + l4len + skb->gso_size : tot_len;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	return route(skb, eth, ip, &fib, dst);
}

// forward6 is forward4 for IPv6: no header checksum, no fragments in the fixed header, but an
// extension header (fragments among them) sends the packet to the kernel.
static __always_inline int forward6(struct __sk_buff *skb, int from_workload)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);

	if ((void *)(ip6 + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6) || !for_this_host(skb))
		return TC_ACT_UNSPEC;
	// Link-local traffic is never forwarded.
	if ((ip6->saddr.in6_u.u6_addr8[0] == 0xfe && (ip6->saddr.in6_u.u6_addr8[1] & 0xc0) == 0x80) ||
	    (ip6->daddr.in6_u.u6_addr8[0] == 0xfe && (ip6->daddr.in6_u.u6_addr8[1] & 0xc0) == 0x80) ||
	    ip6->daddr.in6_u.u6_addr8[0] == 0xff)
		return TC_ACT_UNSPEC;
	struct in6_addr saddr = ip6->saddr, daddr = ip6->daddr;

	__u32 *dst = bpf_map_lookup_elem(&trc_fp_wl6, &daddr);
	if (from_workload) {
		__u32 *src = bpf_map_lookup_elem(&trc_fp_wl6, &saddr);
		if (!src || *src != skb->ingress_ifindex)
			return count(STAT_SPOOFED);
	} else if (!dst) {
		return TC_ACT_UNSPEC;
	}

	__u32 tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if (ip6->version != 6 || ip6->hop_limit <= 1 || tot_len > skb->len - ETH_HLEN)
		return count(STAT_NOT_ELIGIBLE);

	struct bpf_sock_tuple t = {};
	__builtin_memcpy(t.ipv6.saddr, &saddr, sizeof(saddr));
	__builtin_memcpy(t.ipv6.daddr, &daddr, sizeof(daddr));
	__u8 proto = ip6->nexthdr;
	__u32 l4len;
	if (l4(ip6 + 1, end, proto, tot_len - sizeof(*ip6), &t.ipv6.sport, &t.ipv6.dport, &l4len) || tot_len < sizeof(*ip6) + l4len)
		return count(STAT_NOT_ELIGIBLE);
	int why = established(skb, &t, sizeof(t.ipv6), proto);
	if (why >= 0)
		return count(why);

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
	fib.l4_protocol = proto;
	fib.sport = t.ipv6.sport;
	fib.dport = t.ipv6.dport;
	fib.tot_len = skb->gso_size ? sizeof(*ip6) + l4len + skb->gso_size : tot_len;
	__builtin_memcpy(fib.ipv6_src, &saddr, sizeof(saddr));
	__builtin_memcpy(fib.ipv6_dst, &daddr, sizeof(daddr));
	fib.ifindex = skb->ingress_ifindex;
	return route(skb, eth, ip6, &fib, dst);
}

static __always_inline int forward(struct __sk_buff *skb, int from_workload)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return forward4(skb, from_workload);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return forward6(skb, from_workload);
	return TC_ACT_UNSPEC;
}

// On the host side of every workload interface.
SEC("tc")
int trc_fp_from_wl(struct __sk_buff *skb)
{
	return forward(skb, 1);
}

// On the host's own interfaces (uplinks): traffic for local workloads.
SEC("tc")
int trc_fp_to_wl(struct __sk_buff *skb)
{
	return forward(skb, 0);
}

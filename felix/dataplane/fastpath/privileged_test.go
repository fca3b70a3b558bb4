package fastpath

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/terracenet/terrace/internal/nstest"
)

// fabric is one host namespace between a pod (behind a veth named like Terrace's) and a remote
// router namespace, with iptables policy in the host that uses conntrack as felix's does:
// ESTABLISHED accepted, new flows only to allowedPort.
type fabric struct {
	host, pod, remote string
	hostNS            netns.NsHandle
	wlIf, uplink      string
}

const (
	podAddr6    = "2001:db8:1000::10"
	podAlias6   = "2001:db8:1000::11"
	remoteAddr6 = "2001:db8::1"
	podAddr     = "198.18.0.10"
	podAlias    = "198.18.0.11" // on the pod's eth0 but not the pod's: a spoofed source
	remoteAddr  = "192.0.2.1"
	allowedPort = 5000
	deniedPort  = 6000
	natPort     = 7000
)

func newFabric(t *testing.T) *fabric {
	t.Helper()
	f := &fabric{
		host: nstest.New(t, "iptables-nft-restore"), pod: nstest.New(t), remote: nstest.New(t),
		wlIf: "trc0a1b2c3d4e5", uplink: "up0",
	}
	run := func(ns string, args ...string) { nstest.Run(t, ns, args...) }
	for _, ns := range []string{f.host, f.pod, f.remote} {
		// Addresses usable at once, link-local ones too: no duplicate address detection.
		run(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	run(f.host, "ip", "link", "add", f.wlIf, "type", "veth", "peer", "name", "eth0", "netns", f.pod)
	run(f.host, "ip", "link", "set", f.wlIf, "address", "ee:ee:ee:ee:ee:ee", "up")
	run(f.host, "ip", "link", "add", f.uplink, "type", "veth", "peer", "name", "down0", "netns", f.remote)
	run(f.host, "ip", "addr", "add", "192.0.2.0/31", "dev", f.uplink)
	run(f.host, "ip", "link", "set", f.uplink, "up")
	run(f.host, "ip", "route", "add", podAddr+"/32", "dev", f.wlIf)
	// Proxy ARP answers for 169.254.1.1 only where the host has a route to it.
	run(f.host, "ip", "route", "add", "default", "via", remoteAddr)
	// What felix sets with the fast path (Sysctls); the writer attaches nothing without it.
	run(f.host, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1")
	run(f.host, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf."+f.wlIf+".proxy_arp=1",
		"net.ipv4.conf."+f.wlIf+".rp_filter=1", "net.ipv4.neigh."+f.wlIf+".proxy_delay=0")
	run(f.pod, "ip", "addr", "add", podAddr+"/32", "dev", "eth0")
	run(f.pod, "ip", "addr", "add", podAlias+"/32", "dev", "eth0")
	run(f.pod, "ip", "link", "set", "eth0", "up")
	run(f.pod, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
	run(f.pod, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
	run(f.remote, "ip", "addr", "add", remoteAddr+"/31", "dev", "down0")
	run(f.remote, "ip", "link", "set", "down0", "up")
	run(f.remote, "ip", "route", "add", "198.18.0.0/24", "via", "192.0.2.0")
	// IPv6 beside it: the pod reaches the host side's link-local address (from its MAC).
	run(f.host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	run(f.host, "ip", "-6", "addr", "add", "2001:db8::/127", "dev", f.uplink, "nodad")
	run(f.host, "ip", "-6", "route", "add", podAddr6+"/128", "dev", f.wlIf)
	run(f.host, "ip", "-6", "route", "add", "default", "via", remoteAddr6)
	run(f.pod, "ip", "-6", "addr", "add", podAddr6+"/128", "dev", "eth0", "nodad")
	// Deprecated, so the kernel never picks it as a source itself.
	run(f.pod, "ip", "-6", "addr", "add", podAlias6+"/128", "dev", "eth0", "nodad", "preferred_lft", "0")
	run(f.pod, "ip", "-6", "route", "add", "default", "via", "fe80::ecee:eeff:feee:eeee", "dev", "eth0")
	run(f.remote, "ip", "-6", "addr", "add", remoteAddr6+"/127", "dev", "down0", "nodad")
	run(f.remote, "ip", "-6", "route", "add", "2001:db8:1000::/64", "via", "2001:db8::")
	// The slow path's policy, as felix writes it: established flows accepted before any rule.
	rules := fmt.Sprintf(`*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p udp --dport %d -j ACCEPT
-A FORWARD -p tcp --dport %d -j ACCEPT
-A FORWARD -p udp --dport %d -j ACCEPT
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o %s -p udp --dport %d -j MASQUERADE
COMMIT
`, allowedPort, allowedPort, natPort, f.uplink, natPort)
	nstest.RunInput(t, f.host, strings.NewReader(rules), "iptables-nft-restore")
	rules6 := fmt.Sprintf(`*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p ipv6-icmp -j ACCEPT
-A FORWARD -p udp --dport %d -j ACCEPT
-A FORWARD -p tcp --dport %d -j ACCEPT
COMMIT
`, allowedPort, allowedPort)
	nstest.RunInput(t, f.host, strings.NewReader(rules6), "ip6tables-nft-restore")
	var err error
	f.hostNS, err = netns.GetFromName(f.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.hostNS.Close() })
	return f
}

// listenRemoteTCP listens on the remote's allowed TCP port at addr (remoteAddr or
// remoteAddr6); closed at cleanup.
func (f *fabric) listenRemoteTCP(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := nstest.Enter(f.remote, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, fmt.Sprint(allowedPort)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialFromPod connects from the pod to the remote's allowed TCP port at addr.
func (f *fabric) dialFromPod(t *testing.T, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := nstest.Enter(f.pod, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, fmt.Sprint(allowedPort)), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// load loads the programs for the host and a writer that puts them on the workload interface and
// the uplink with the pod's address mapped; both are closed at cleanup.
func (f *fabric) load(t *testing.T) (*BPF, *Writer) {
	t.Helper()
	k, err := LoadBPF(&f.hostNS)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	w := New(k, nil)
	t.Cleanup(func() { w.Close() })
	w.SetWorkload(netip.MustParseAddr(podAddr), f.wlIf)
	w.SetWorkload(netip.MustParseAddr(podAddr6), f.wlIf)
	w.SetHostInterfaces([]string{f.uplink})
	if err := w.Apply(context.Background()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return k, w
}

// udpPeer is a UDP socket in a namespace that reports each datagram's TTL (hop limit).
type udpPeer struct {
	c   *net.UDPConn
	pc  *ipv4.PacketConn // IPv4
	pc6 *ipv6.PacketConn // IPv6
}

func listenUDP(t *testing.T, ns, addr string) *udpPeer {
	t.Helper()
	var p udpPeer
	err := nstest.Enter(ns, func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			return err
		}
		p.c = c
		return nil
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { p.c.Close() })
	if netip.MustParseAddrPort(addr).Addr().Is6() {
		p.pc6 = ipv6.NewPacketConn(p.c)
		if err := p.pc6.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	p.pc = ipv4.NewPacketConn(p.c)
	if err := p.pc.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	return &p
}

// recv waits for one datagram; ok is false after the timeout.
func (p *udpPeer) recv(t *testing.T, timeout time.Duration) (payload string, from *net.UDPAddr, ttl int, ok bool) {
	t.Helper()
	buf := make([]byte, 2048)
	p.c.SetReadDeadline(time.Now().Add(timeout))
	if p.pc6 != nil {
		n, cm, src, err := p.pc6.ReadFrom(buf)
		if err != nil {
			return "", nil, 0, false
		}
		if cm != nil {
			ttl = cm.HopLimit
		}
		return string(buf[:n]), src.(*net.UDPAddr), ttl, true
	}
	n, cm, src, err := p.pc.ReadFrom(buf)
	if err != nil {
		return "", nil, 0, false
	}
	if cm != nil {
		ttl = cm.TTL
	}
	return string(buf[:n]), src.(*net.UDPAddr), ttl, true
}

func (p *udpPeer) send(t *testing.T, to string, payload string) {
	t.Helper()
	if _, err := p.c.WriteToUDPAddrPort([]byte(payload), netip.MustParseAddrPort(to)); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
}

func stats(t *testing.T, k *BPF) Stats {
	t.Helper()
	s, err := k.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// exchange sends n datagrams from pod to remote and answers each, checking every one arrives
// with the TTL one hop leaves (64 - 1).
func exchange(t *testing.T, pod, remote *udpPeer, remoteAP string, n int) {
	t.Helper()
	for i := range n {
		msg := fmt.Sprintf("ping %d", i)
		pod.send(t, remoteAP, msg)
		got, from, ttl, ok := remote.recv(t, 2*time.Second)
		if !ok || got != msg {
			t.Fatalf("remote: datagram %d: got %q ok=%v, want %q", i, got, ok, msg)
		}
		if ttl != 63 {
			t.Errorf("remote: datagram %d arrived with TTL %d, want 63 (one routed hop)", i, ttl)
		}
		if want := pod.c.LocalAddr().(*net.UDPAddr).IP; !from.IP.Equal(want) {
			t.Fatalf("remote: datagram from %s, want the pod's %s (no NAT on this flow)", from.IP, want)
		}
		remote.c.WriteToUDP([]byte("pong "+msg), from)
		got, _, ttl, ok = pod.recv(t, 2*time.Second)
		if !ok || got != "pong "+msg {
			t.Fatalf("pod: reply %d: got %q ok=%v", i, got, ok)
		}
		if ttl != 63 {
			t.Errorf("pod: reply %d arrived with TTL %d, want 63", i, ttl)
		}
	}
}

// TestFastPathUDP: the first datagram of a flow and its reply go through iptables; once
// conntrack has seen the reply, the rest take the fast path in both directions, arrive intact
// with the TTL (hop limit) decremented, and the flow survives the programs going away. IPv4 and
// IPv6.
func TestFastPathUDP(t *testing.T) {
	for _, v := range []struct{ name, pod, remote string }{
		{"ipv4", podAddr + ":4000", fmt.Sprintf("%s:%d", remoteAddr, allowedPort)},
		{"ipv6", "[" + podAddr6 + "]:4000", fmt.Sprintf("[%s]:%d", remoteAddr6, allowedPort)},
	} {
		t.Run(v.name, func(t *testing.T) { testFastPathUDP(t, v.pod, v.remote) })
	}
}

func testFastPathUDP(t *testing.T, podAP, remoteAP string) {
	f := newFabric(t)
	k, w := f.load(t)
	pod := listenUDP(t, f.pod, podAP)
	remote := listenUDP(t, f.remote, remoteAP)

	exchange(t, pod, remote, remoteAP, 1)
	before := stats(t, k)
	if before.Forwarded != 0 {
		t.Errorf("forwarded %d packets before the flow was answered; want 0", before.Forwarded)
	}
	if before.NotEstablished == 0 {
		t.Errorf("the first datagram was not counted as not established: %+v", before)
	}
	exchange(t, pod, remote, remoteAP, 20)
	after := stats(t, k)
	// 20 each way; the first from the pod may still race the reply's confirmation.
	if got := after.Forwarded - before.Forwarded; got < 39 {
		t.Errorf("fast path forwarded %d of 40 packets of an established flow: %+v", got, after)
	}

	// Without the programs the same flow goes on through the kernel.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	exchange(t, pod, remote, remoteAP, 5)
	if s := stats(t, k); s.Forwarded != after.Forwarded {
		t.Errorf("forwarded %d more packets after the links were closed", s.Forwarded-after.Forwarded)
	}
}

// TestFastPathLeavesPolicyToIptables: a flow iptables drops is never answered, so never fast
// pathed; a workload's packets from an address that is not its own are not taken (and the
// kernel's rp_filter drops them); a masqueraded flow stays on the slow path and keeps its NAT.
func TestFastPathLeavesPolicyToIptables(t *testing.T) {
	f := newFabric(t)
	k, _ := f.load(t)

	// Denied by policy: nothing arrives, however often the pod tries.
	pod := listenUDP(t, f.pod, podAddr+":4001")
	denied := listenUDP(t, f.remote, fmt.Sprintf("%s:%d", remoteAddr, deniedPort))
	for range 5 {
		pod.send(t, fmt.Sprintf("%s:%d", remoteAddr, deniedPort), "let me in")
	}
	if got, _, _, ok := denied.recv(t, 500*time.Millisecond); ok {
		t.Errorf("a datagram iptables drops arrived: %q", got)
	}

	// Spoofed source: the pod's alias is not in felix's map.
	spoof := listenUDP(t, f.pod, podAlias+":4002")
	remote := listenUDP(t, f.remote, fmt.Sprintf("%s:%d", remoteAddr, allowedPort))
	before := stats(t, k)
	spoof.send(t, fmt.Sprintf("%s:%d", remoteAddr, allowedPort), "spoofed")
	if got, _, _, ok := remote.recv(t, 500*time.Millisecond); ok {
		t.Errorf("a datagram from a foreign source arrived: %q", got)
	}
	if s := stats(t, k); s.Spoofed == before.Spoofed || s.Forwarded != before.Forwarded {
		t.Errorf("spoofed datagram: counters went from %+v to %+v, want one more spoofed, none forwarded", before, s)
	}
	// IPv6: the alias is not the pod's either (the kernel has no route to it through the pod's
	// interface, so it is not forwarded at all).
	spoof6 := listenUDP(t, f.pod, "["+podAlias6+"]:4002")
	remote6 := listenUDP(t, f.remote, fmt.Sprintf("[%s]:%d", remoteAddr6, allowedPort))
	before = stats(t, k)
	spoof6.send(t, fmt.Sprintf("[%s]:%d", remoteAddr6, allowedPort), "spoofed")
	// This fabric's ip6tables has no source check (felix's raw rpfilter rule is that), so the
	// kernel may forward it: what matters here is that the fast path did not take it.
	remote6.recv(t, 500*time.Millisecond)
	if s := stats(t, k); s.Spoofed == before.Spoofed || s.Forwarded != before.Forwarded {
		t.Errorf("spoofed IPv6 datagram: counters went from %+v to %+v, want one more spoofed, none forwarded", before, s)
	}

	// Masqueraded: answered, but conntrack's NAT must apply to every packet.
	natPod := listenUDP(t, f.pod, podAddr+":4003")
	natRemote := listenUDP(t, f.remote, fmt.Sprintf("%s:%d", remoteAddr, natPort))
	before = stats(t, k)
	for i := range 5 {
		natPod.send(t, fmt.Sprintf("%s:%d", remoteAddr, natPort), "nat")
		_, from, _, ok := natRemote.recv(t, 2*time.Second)
		if !ok {
			t.Fatalf("masqueraded datagram %d lost", i)
		}
		if from.IP.String() != "192.0.2.0" {
			t.Fatalf("masqueraded datagram %d from %s, want the host's 192.0.2.0", i, from.IP)
		}
		natRemote.c.WriteToUDP([]byte("back"), from)
		if _, _, _, ok := natPod.recv(t, 2*time.Second); !ok {
			t.Fatalf("reply to masqueraded datagram %d lost", i)
		}
	}
	if s := stats(t, k); s.Forwarded != before.Forwarded {
		t.Errorf("fast path forwarded %d packets of a masqueraded flow", s.Forwarded-before.Forwarded)
	}
}

// TestFastPathTCP: a bulk TCP transfer through the fast path arrives byte for byte, and the
// connection closes cleanly (FIN and its ACKs through conntrack, liberal about windows as felix
// sets it).
func TestFastPathTCP(t *testing.T) {
	for _, remote := range []string{remoteAddr, remoteAddr6} {
		t.Run(remote, func(t *testing.T) { testFastPathTCP(t, remote) })
	}
}

func testFastPathTCP(t *testing.T, remote string) {
	f := newFabric(t)
	k, _ := f.load(t)
	ln := f.listenRemoteTCP(t, remote)
	data := make([]byte, 32<<20)
	rand.Read(data)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write([]byte("done"))
		got <- b
	}()
	c := f.dialFromPod(t, remote)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	ack, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(ack) != "done" {
		t.Fatalf("after the transfer: read %q, %v; want done and a clean close", ack, err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("received %d bytes, not the %d sent", len(b), len(data))
	}
	if s := stats(t, k); s.Forwarded < 100 {
		t.Errorf("fast path forwarded %d packets of a 32 MiB transfer: %+v", s.Forwarded, s)
	}
}

// TestFastPathRecreatedInterface: a workload interface deleted and made again under the same
// name (a pod restarted) loses its link with the old device; a resync attaches to the new one.
func TestFastPathRecreatedInterface(t *testing.T) {
	f := newFabric(t)
	k, w := f.load(t)
	first := w.attached[f.wlIf]
	nstest.Run(t, f.host, "ip", "link", "del", f.wlIf)
	if first.a.Live() {
		t.Fatal("the link to a deleted interface still reports itself live")
	}
	nstest.Run(t, f.host, "ip", "link", "add", f.wlIf, "type", "veth", "peer", "name", "eth0", "netns", f.pod)
	nstest.Run(t, f.host, "ip", "link", "set", f.wlIf, "address", "ee:ee:ee:ee:ee:ee", "up")
	if err := w.Resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := w.attached[f.wlIf]
	if now.ifindex == first.ifindex || !now.a.Live() {
		t.Fatalf("after the resync: attached to ifindex %d (live %v), the old one was %d", now.ifindex, now.a.Live(), first.ifindex)
	}
	got, err := k.Workloads()
	if err != nil {
		t.Fatal(err)
	}
	if got[netip.MustParseAddr(podAddr)] != now.ifindex {
		t.Errorf("map entry for the pod: ifindex %d, want the new interface's %d", got[netip.MustParseAddr(podAddr)], now.ifindex)
	}
}

// TestFastPathLeavesTooBigToTheKernel: a packet of an established flow that does not fit the
// uplink's MTU (a datagram, or the segments of a GSO packet) goes to the kernel, which drops it
// and tells the pod the path MTU (ICMP fragmentation needed), as forwarding would; the fast path
// must not push it out oversized (a veth would even deliver it).
func TestFastPathLeavesTooBigToTheKernel(t *testing.T) {
	f := newFabric(t)
	// The host's side only: the remote still offers a 1460-byte MSS, so the pod's segments are
	// bigger than the uplink takes, and the veth would deliver them.
	nstest.Run(t, f.host, "ip", "link", "set", f.uplink, "mtu", "1000")
	k, _ := f.load(t)
	learned := func() bool {
		return strings.Contains(nstest.Run(t, f.pod, "ip", "-4", "route", "get", remoteAddr), "mtu 1000")
	}
	waitLearned := func(what string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for !learned() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the pod never learned the path MTU: %s", what, nstest.Run(t, f.pod, "ip", "-4", "route", "get", remoteAddr))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	t.Run("datagram", func(t *testing.T) {
		remoteAP := fmt.Sprintf("%s:%d", remoteAddr, allowedPort)
		pod := listenUDP(t, f.pod, podAddr+":4004")
		remote := listenUDP(t, f.remote, remoteAP)
		exchange(t, pod, remote, remoteAP, 3) // established, and fast-pathed from here on
		before := stats(t, k)
		big := strings.Repeat("x", 1200)
		pod.send(t, remoteAP, big)
		if got, _, _, ok := remote.recv(t, 500*time.Millisecond); ok {
			t.Fatalf("a %d-byte datagram crossed a 1000-byte MTU unfragmented (DF is set)", len(got))
		}
		if s := stats(t, k); s.Forwarded != before.Forwarded || s.NotEligible == before.NotEligible {
			t.Errorf("counters went from %+v to %+v: want the big datagram left to the kernel", before, s)
		}
		waitLearned("datagram")
		exchange(t, pod, remote, remoteAP, 3) // small datagrams still go through
	})
	nstest.Run(t, f.pod, "ip", "route", "flush", "cache")

	t.Run("gso", func(t *testing.T) {
		if learned() {
			t.Fatal("set-up: the path MTU is still cached")
		}
		ln := f.listenRemoteTCP(t, remoteAddr)
		got := make(chan int64, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- -1
				return
			}
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			got <- n
		}()
		c := f.dialFromPod(t, remoteAddr)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		data := make([]byte, 4<<20) // the pod's TSO sends 1448-byte segments in GSO packets
		if _, err := c.Write(data); err != nil {
			t.Fatalf("write: %v", err)
		}
		c.Close()
		if n := <-got; n != int64(len(data)) {
			t.Fatalf("received %d of %d bytes", n, len(data))
		}
		waitLearned("gso")
	})
}

// TestFastPathLeavesOnlyByHostInterfaces: a packet is sent out only by an interface felix put
// the program on as one of the host's own; a route through any other (here the uplink, once
// felix no longer lists it) is the kernel's to follow.
func TestFastPathLeavesOnlyByHostInterfaces(t *testing.T) {
	f := newFabric(t)
	k, w := f.load(t)
	remoteAP := fmt.Sprintf("%s:%d", remoteAddr, allowedPort)
	pod := listenUDP(t, f.pod, podAddr+":4005")
	remote := listenUDP(t, f.remote, remoteAP)
	exchange(t, pod, remote, remoteAP, 3)
	w.SetHostInterfaces(nil)
	if err := w.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := stats(t, k)
	exchange(t, pod, remote, remoteAP, 5)
	if s := stats(t, k); s.Forwarded != before.Forwarded || s.NotEligible-before.NotEligible != 5 {
		t.Errorf("counters went from %+v to %+v: want the pod's 5 datagrams left to the kernel, none forwarded", before, s)
	}
}

package node

import (
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/internal/nstest"
)

// inFreshNetns runs fn on a locked OS thread moved into a new, empty network namespace. The
// thread is never unlocked, so it exits with the goroutine and the namespace dies with it; the
// root namespace is never touched.
func inFreshNetns(t *testing.T, fn func()) {
	t.Helper()
	nstest.RequireRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare network namespace: %v", err)
			return
		}
		fn()
	}()
	<-done
}

func addDummy(t *testing.T, name string, addrs ...string) {
	t.Helper()
	// A veth pair with both ends here: dummy links need a module this kernel may not have.
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "p-" + name[:min(len(name), 10)]}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	peer, err := netlink.LinkByName(link.PeerName)
	if err != nil {
		t.Fatalf("find peer of %s: %v", name, err)
	}
	if err := netlink.LinkSetUp(peer); err != nil {
		t.Fatalf("set peer of %s up: %v", name, err)
	}
	for _, a := range addrs {
		ipn, err := netlink.ParseIPNet(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("add %s to %s: %v", a, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

func TestSystemListerInNetns(t *testing.T) {
	inFreshNetns(t, func() {
		// Created in this order so the excluded names have lower indexes than the real uplink.
		addDummy(t, "docker0", "198.51.100.1/24")
		addDummy(t, "trc0123456789a", "198.18.0.1/32")
		addDummy(t, "ens3", "192.0.2.10/24", "2001:db8::10/64")
		addDummy(t, "ens4", "203.0.113.10/24")
		down := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens5"}, PeerName: "p-ens5"}
		if err := netlink.LinkAdd(down); err != nil {
			t.Fatal(err)
		}

		l := SystemLister{}
		tests := []struct {
			method string
			fam    Family
			want   string
			wantIf string
		}{
			{"first-found", 4, "192.0.2.10/24", "ens3"},
			{"first-found", 6, "2001:db8::10/64", "ens3"},
			{"interface=ens4", 4, "203.0.113.10/24", "ens4"},
			{"can-reach=192.0.2.77", 4, "192.0.2.10/24", "ens3"},
			{"can-reach=203.0.113.200", 4, "203.0.113.10/24", "ens4"},
			{"can-reach=198.51.100.50", 4, "198.51.100.1/24", "docker0"},
			{"can-reach=2001:db8::99", 6, "2001:db8::10/64", "ens3"},
		}
		for _, tt := range tests {
			m, err := ParseMethod(tt.method)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Detect(l, m, tt.fam)
			if err != nil {
				t.Errorf("%s: %v", tt.method, err)
				continue
			}
			if c.Addr.String() != tt.want || c.Interface != tt.wantIf {
				t.Errorf("%s IPv%d: got %s on %q, want %s on %q", tt.method, tt.fam, c.Addr, c.Interface, tt.want, tt.wantIf)
			}
		}
		// No route at all: the kernel refuses, and nothing is sent anywhere.
		if _, err := Detect(l, Method{Kind: MethodCanReach, Arg: "100.64.0.1", target: netip.MustParseAddr("100.64.0.1")}, 4); err == nil {
			t.Error("can-reach without a route succeeded")
		}
		ifs, err := l.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range ifs {
			if i.Name == "ens5" && i.Up {
				t.Error("ens5 reported up")
			}
			if i.Name == "lo" && !i.Loopback {
				t.Error("lo not reported as loopback")
			}
		}
		if _, err := net.InterfaceByName("ens3"); err != nil {
			t.Errorf("stdlib does not see ens3 in this namespace: %v", err)
		}

		// A deprecated IPv6 address added after the good one is listed first by the kernel;
		// autodetection must pass over it, and over one that failed duplicate detection.
		ens4, err := netlink.LinkByName("ens4")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []*netlink.Addr{
			{IPNet: mustIPNet(t, "2001:db8:4::30/64"), Flags: unix.IFA_F_NODAD},
			{IPNet: mustIPNet(t, "2001:db8:4::10/64"), Flags: unix.IFA_F_NODAD, PreferedLft: 0, ValidLft: 3600},
		} {
			if err := netlink.AddrAdd(ens4, a); err != nil {
				t.Fatalf("add %s: %v", a.IPNet, err)
			}
		}
		m, _ := ParseMethod("interface=ens4")
		c, err := Detect(l, m, 6)
		if err != nil || c.Addr.String() != "2001:db8:4::30/64" {
			t.Errorf("interface=ens4 IPv6 with a deprecated address beside the good one: %s %v, want 2001:db8:4::30/64", c.Addr, err)
		}
	})
}

func mustIPNet(t *testing.T, s string) *net.IPNet {
	t.Helper()
	n, err := netlink.ParseIPNet(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

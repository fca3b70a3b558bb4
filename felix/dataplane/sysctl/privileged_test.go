package sysctl

import (
	"strings"
	"testing"

	"github.com/terracenet/terrace/internal/nstest"
)

// TestRealSysctls writes the workload settings through /proc/sys inside a fresh namespace and
// checks them with sysctl(8) run in that namespace, plus repair of a tampered value.
func TestRealSysctls(t *testing.T) {
	ns := nstest.New(t, "sysctl")
	rootFwd, err := ProcFS{}.Read("net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, ns, "ip", "link", "add", "trc0123456789a", "type", "veth", "peer", "name", "wl0")
	m := New(ProcFS{}, nil)
	m.SetHost(HostSettings(true, true))
	if err := m.SetInterface("trc0123456789a", true, true); err != nil {
		t.Fatal(err)
	}
	if err := nstest.Do(t, ns, func() error { return m.Apply(ctx) }); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		for _, s := range append(HostSettings(true, true), WorkloadSettings("trc0123456789a", true, true)...) {
			got := strings.TrimSpace(nstest.Run(t, ns, "cat", "/proc/sys/"+s.Path))
			if got != s.Value {
				t.Errorf("%s = %q, want %q", s.Path, got, s.Value)
			}
		}
	}
	check()
	// The root namespace is untouched (reading it is allowed; writing never).
	if got, _ := (ProcFS{}).Read("net/ipv4/ip_forward"); got != rootFwd {
		t.Fatalf("root namespace ip_forward changed from %s to %s", rootFwd, got)
	}
	// The peer was not told about and keeps its defaults.
	if got := strings.TrimSpace(nstest.Run(t, ns, "cat", "/proc/sys/net/ipv4/conf/wl0/proxy_arp")); got != "0" {
		t.Errorf("wl0 proxy_arp = %s, want untouched 0", got)
	}
	nstest.Run(t, ns, "sysctl", "-w", "net.ipv4.conf.trc0123456789a.proxy_arp=0")
	nstest.Run(t, ns, "sysctl", "-w", "net.ipv6.conf.trc0123456789a.accept_ra=2")
	if err := nstest.Do(t, ns, func() error { return m.Resync(ctx) }); err != nil {
		t.Fatal(err)
	}
	check()
}

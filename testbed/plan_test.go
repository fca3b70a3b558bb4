package testbed

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUplinkAddrs(t *testing.T) {
	tests := []struct {
		tor, host      int
		wantTor, wantH string
	}{
		{1, 1, "192.0.2.0", "192.0.2.1"},
		{1, 2, "192.0.2.2", "192.0.2.3"},
		{1, 100, "192.0.2.198", "192.0.2.199"},
		{2, 1, "198.51.100.0", "198.51.100.1"},
		{2, 3, "198.51.100.4", "198.51.100.5"},
	}
	for _, tt := range tests {
		tor, host := uplinkAddrs(tt.tor, tt.host)
		if got := [2]string{tor.String(), host.String()}; got != [2]string{tt.wantTor, tt.wantH} {
			t.Errorf("uplinkAddrs(%d,%d) = %v, want %s %s", tt.tor, tt.host, got, tt.wantTor, tt.wantH)
		}
		// The /31 must hold both ends and never reach the ToR loopback at .254.
		p := netip.PrefixFrom(tor, 31).Masked()
		if !p.Contains(host) || p.Contains(torRouterID(tt.tor)) {
			t.Errorf("link %s: host %s or loopback %s misplaced", p, host, torRouterID(tt.tor))
		}
	}
}

func TestAddressesStayInConventionRanges(t *testing.T) {
	underlay := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")}
	in := func(a netip.Addr, ps ...netip.Prefix) bool {
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	v6 := netip.MustParsePrefix("2001:db8::/48")
	pods := netip.MustParsePrefix("198.18.0.0/15")
	pods6 := netip.MustParsePrefix("2001:db8:1000::/48")
	ctl := netip.MustParsePrefix("203.0.113.0/24")
	seen := map[netip.Addr]string{}
	for tor := 1; tor <= MaxTors; tor++ {
		for h := 1; h <= MaxHosts; h++ {
			a, b := uplinkAddrs(tor, h)
			a6, b6 := uplinkAddrs6(tor, h)
			for _, x := range []netip.Addr{a, b} {
				if !in(x, underlay...) {
					t.Fatalf("uplink address %s outside the underlay ranges", x)
				}
			}
			for _, x := range []netip.Addr{a6, b6} {
				if !v6.Contains(x) {
					t.Fatalf("uplink address %s outside %s", x, v6)
				}
			}
			for _, x := range []netip.Addr{a, b, a6, b6, torRouterID(tor)} {
				if prev, dup := seen[x]; dup && prev != "rid" {
					t.Fatalf("address %s used twice", x)
				}
				seen[x] = "link"
			}
			seen[torRouterID(tor)] = "rid"
		}
	}
	for h := 1; h <= MaxHosts; h++ {
		if !ctl.Contains(ctlHostAddr(h)) || ctlHostAddr(h).String() == EtcdAddr {
			t.Fatalf("control address of host %d: %s", h, ctlHostAddr(h))
		}
		if !pods.Contains(manualPodNet(h).Addr()) || !pods6.Contains(manualPodNet6(h).Addr()) {
			t.Fatalf("manual pod range of host %d outside the workload ranges", h)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string // substring of the error; "" = valid
	}{
		{"ok", Options{Hosts: 3}, ""},
		{"zero hosts", Options{Hosts: 0}, "host count 0 out of range"},
		{"too many hosts", Options{Hosts: MaxHosts + 1}, "out of range"},
		{"three tors", Options{Hosts: 1, Tors: 3}, "tor count 3"},
		{"bad prefix", Options{Hosts: 1, Prefix: "Bad_"}, "prefix"},
		{"same AS", Options{Hosts: 1, HostAS: 65000}, "host AS and ToR AS"},
		{"bad cni", Options{Hosts: 1, CNI: "magic"}, "cni mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.setDefaults()
			err := o.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("validate = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr bool
	}{
		{"ctl", Target{Node: "ctl"}, false},
		{"tor-2", Target{Node: "tor-2"}, false},
		{"host-12", Target{Node: "host-12"}, false},
		{"host-1/web-0", Target{Node: "host-1", Pod: "web-0"}, false},
		{"host-01", Target{}, true},
		{"host-", Target{}, true},
		{"host-0", Target{}, true},
		{"tor-1/x", Target{}, true},
		{"host-1/", Target{}, true},
		{"host-1/Web", Target{}, true},
		{"router", Target{}, true},
		{"", Target{}, true},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTarget(%q) error = %v, wantErr %t", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("ParseTarget(%q).String() = %q", tt.in, got.String())
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"ctl", "tor-1", "host-3/web", "host-1/", "x/y/z", "host-99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTarget(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		// Whatever parses must round-trip and name a namespace the testbed would own.
		if got.String() != s {
			t.Fatalf("round trip %q -> %q", s, got.String())
		}
		ns := "trctb-" + strings.ReplaceAll(s, "/", "-")
		if !ownedNamespace("trctb-", ns) {
			t.Fatalf("target %q maps to namespace %q the testbed would not recognise", s, ns)
		}
	})
}

func TestOwnedNamespace(t *testing.T) {
	tests := []struct {
		ns   string
		want bool
	}{
		{"trctb-ctl", true},
		{"trctb-tor-1", true},
		{"trctb-host-3", true},
		{"trctb-host-3-web", true},
		{"trctb-other", false},
		{"trctb-", false},
		{"trctbx-host-1", false},
		{"other-host-1", false},
		{"trctb-host-a", false},
	}
	for _, tt := range tests {
		if got := ownedNamespace("trctb-", tt.ns); got != tt.want {
			t.Errorf("ownedNamespace(%q) = %t, want %t", tt.ns, got, tt.want)
		}
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"", map[string]string{}, false},
		{"role=frontend", map[string]string{"role": "frontend"}, false},
		{"a=1, b=2", map[string]string{"a": "1", "b": "2"}, false},
		{"app.kubernetes.io/name=web,empty=", map[string]string{"app.kubernetes.io/name": "web", "empty": ""}, false},
		{"novalue", nil, true},
		{"a=1,a=2", nil, true},
		{"=x", nil, true},
		{"a=b c", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseLabels(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLabels(%q) error = %v, wantErr %t", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); err == nil && diff != "" {
			t.Errorf("ParseLabels(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"a=b", "a=b,c=d", "x/y=z", ",", "a==b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseLabels(s)
		if err != nil {
			return
		}
		// Parsed labels printed back must parse to the same map.
		again, err := ParseLabels(FormatLabels(m))
		if err != nil {
			t.Fatalf("reparse %q: %v", FormatLabels(m), err)
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", s, diff)
		}
	})
}

func TestInjectPrefixes(t *testing.T) {
	ps, err := InjectPrefixes(3)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.18.64.0/32"), netip.MustParsePrefix("198.18.64.1/32"), netip.MustParsePrefix("198.18.64.2/32")}
	if diff := cmp.Diff(want, ps, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("InjectPrefixes(3) (-want +got):\n%s", diff)
	}
	max, err := InjectPrefixes(114688)
	if err != nil {
		t.Fatal(err)
	}
	if last := max[len(max)-1]; last.Addr().String() != "198.19.255.255" {
		t.Errorf("last prefix %s, want 198.19.255.255", last)
	}
	if _, err := InjectPrefixes(114689); !errors.Is(err, ErrInvalid) {
		t.Errorf("InjectPrefixes beyond the pool: %v, want ErrInvalid", err)
	}
}

func TestDefaultRoute(t *testing.T) {
	tests := []struct {
		dst  string
		gws  []string
		want string
	}{
		{"default", []string{"192.0.2.0 dev tor-1"}, "route add default via 192.0.2.0 dev tor-1"},
		{"default", []string{"192.0.2.0 dev tor-1", "198.51.100.0 dev tor-2"},
			"route add default nexthop via 192.0.2.0 dev tor-1 nexthop via 198.51.100.0 dev tor-2"},
	}
	for _, tt := range tests {
		if got := defaultRoute(tt.dst, tt.gws); got != tt.want {
			t.Errorf("defaultRoute(%v) = %q, want %q", tt.gws, got, tt.want)
		}
	}
}

func TestHostIfName(t *testing.T) {
	a, b := hostIfName("default", "web"), hostIfName("default", "db")
	if len(a) != 14 || !strings.HasPrefix(a, "trc") || a == b {
		t.Errorf("hostIfName: %q %q: want distinct 14-character trc names", a, b)
	}
	if hostIfName("default", "web") != a {
		t.Error("hostIfName is not deterministic")
	}
}

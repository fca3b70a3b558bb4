package node

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type fakeLister struct {
	ifs []Interface
	src map[netip.Addr]netip.Addr
	err error
}

func (f fakeLister) Interfaces() ([]Interface, error) { return f.ifs, f.err }
func (f fakeLister) SourceFor(dst netip.Addr) (netip.Addr, error) {
	if s, ok := f.src[dst]; ok {
		return s, nil
	}
	return netip.Addr{}, errors.New("network is unreachable")
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

var hostIfs = []Interface{
	{Name: "lo", Index: 1, Up: true, Loopback: true, Addrs: pfx("127.0.0.1/8", "::1/128")},
	{Name: "docker0", Index: 2, Up: true, Addrs: pfx("172.17.0.1/16")},
	{Name: "trc0123456789a", Index: 3, Up: true, Addrs: pfx("198.18.0.1/32")},
	{Name: "eth0", Index: 5, Up: true, Addrs: pfx("fe80::1/64", "192.0.2.10/24", "2001:db8::10/64")},
	{Name: "eth1", Index: 4, Up: false, Addrs: pfx("198.51.100.9/24")},
	{Name: "ens5", Index: 6, Up: true, Addrs: pfx("198.51.100.20/24", "2001:db8:1::20/64")},
	{Name: "trcfoo", Index: 7, Up: true, Addrs: pfx("203.0.113.5/24")},
	{Name: "wlan0", Index: 8, Up: true, Addrs: pfx("2001:db8:2::9/64", "2001:db8:2::40/64", "2001:db8:2::30/64"),
		Unsettled: []netip.Addr{netip.MustParseAddr("2001:db8:2::9")}},
}

func TestDetect(t *testing.T) {
	l := fakeLister{ifs: hostIfs, src: map[netip.Addr]netip.Addr{
		netip.MustParseAddr("198.51.100.1"): netip.MustParseAddr("198.51.100.20"),
		netip.MustParseAddr("2001:db8::1"):  netip.MustParseAddr("2001:db8::10"),
		netip.MustParseAddr("203.0.113.99"): netip.MustParseAddr("203.0.113.77"),
	}}
	tests := []struct {
		name, method string
		fam          Family
		want         Choice
		wantErr      string
	}{
		{name: "first-found v4 skips lo, docker, trc, down and orders by index", method: "first-found", fam: 4,
			want: Choice{Method: "first-found", Addr: netip.MustParsePrefix("192.0.2.10/24"), Interface: "eth0"}},
		{name: "empty is first-found", method: "", fam: 4,
			want: Choice{Method: "first-found", Addr: netip.MustParsePrefix("192.0.2.10/24"), Interface: "eth0"}},
		{name: "first-found v6 skips link-local", method: "first-found", fam: 6,
			want: Choice{Method: "first-found", Addr: netip.MustParsePrefix("2001:db8::10/64"), Interface: "eth0"}},
		{name: "interface regex", method: "interface=ens.*", fam: 4,
			want: Choice{Method: "interface=ens.*", Addr: netip.MustParsePrefix("198.51.100.20/24"), Interface: "ens5"}},
		{name: "interface regex down only", method: "interface=eth1", fam: 4, wantErr: "no up interface matching"},
		{name: "interface regex may pick excluded names on purpose", method: "interface=trcfoo", fam: 4,
			want: Choice{Method: "interface=trcfoo", Addr: netip.MustParsePrefix("203.0.113.5/24"), Interface: "trcfoo"}},
		{name: "can-reach", method: "can-reach=198.51.100.1", fam: 4,
			want: Choice{Method: "can-reach=198.51.100.1", Addr: netip.MustParsePrefix("198.51.100.20/24"), Interface: "ens5"}},
		{name: "can-reach v6", method: "can-reach=2001:db8::1", fam: 6,
			want: Choice{Method: "can-reach=2001:db8::1", Addr: netip.MustParsePrefix("2001:db8::10/64"), Interface: "eth0"}},
		{name: "can-reach source on no interface", method: "can-reach=203.0.113.99", fam: 4,
			want: Choice{Method: "can-reach=203.0.113.99", Addr: netip.MustParsePrefix("203.0.113.77/32")}},
		{name: "can-reach unreachable", method: "can-reach=192.0.2.200", fam: 4, wantErr: "unreachable"},
		{name: "can-reach family mismatch", method: "can-reach=192.0.2.1", fam: 6, wantErr: "is not IPv6"},
		{name: "none", method: "none", fam: 6, want: Choice{Method: "none"}},
		{name: "interface list, tried in order (Calico's comma-separated form)", method: "interface=bond.*, ens.*,eth0", fam: 4,
			want: Choice{Method: "interface=bond.*, ens.*,eth0", Addr: netip.MustParsePrefix("198.51.100.20/24"), Interface: "ens5"}},
		{name: "interface list, a later entry matches", method: "interface=bond.*,eth0", fam: 4,
			want: Choice{Method: "interface=bond.*,eth0", Addr: netip.MustParsePrefix("192.0.2.10/24"), Interface: "eth0"}},
		{name: "unsettled IPv6 addresses passed over, the lowest settled one taken", method: "interface=wlan0", fam: 6,
			want: Choice{Method: "interface=wlan0", Addr: netip.MustParsePrefix("2001:db8:2::30/64"), Interface: "wlan0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMethod(tt.method)
			if err != nil {
				t.Fatalf("ParseMethod: %v", err)
			}
			got, err := Detect(l, m, tt.fam)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Reason == "" {
				t.Error("no reason given")
			}
			got.Reason = ""
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDetectNothing(t *testing.T) {
	l := fakeLister{ifs: []Interface{{Name: "lo", Index: 1, Up: true, Loopback: true, Addrs: pfx("127.0.0.1/8")},
		{Name: "veth12", Index: 2, Up: true, Addrs: pfx("192.0.2.1/24")}}}
	_, err := Detect(l, Method{Kind: MethodFirstFound}, 4)
	if !errors.Is(err, ErrNoAddress) || !strings.Contains(err.Error(), "veth12") {
		t.Fatalf("err = %v, want ErrNoAddress naming the interfaces seen", err)
	}
	_, err = Detect(fakeLister{err: errors.New("boom")}, Method{Kind: MethodFirstFound}, 4)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseMethodErrors(t *testing.T) {
	for _, in := range []string{"interface=", "interface=(", "interface=eth0,,ens3", "interface=eth0,(", "can-reach=example.com", "can-reach=", "first-found=x", "skip-it"} {
		if _, err := ParseMethod(in); err == nil {
			t.Errorf("ParseMethod(%q) succeeded", in)
		}
	}
}

func TestManual(t *testing.T) {
	l := fakeLister{ifs: hostIfs}
	tests := []struct {
		in       string
		fam      Family
		want     string
		wantIf   string
		wantErr  bool
		wantNote string
	}{
		{in: "192.0.2.10", fam: 4, want: "192.0.2.10/24", wantIf: "eth0", wantNote: "held by eth0"},
		{in: "192.0.2.10/26", fam: 4, want: "192.0.2.10/26", wantIf: "eth0"},
		{in: "192.0.2.99", fam: 4, want: "192.0.2.99/32", wantNote: "no local interface"},
		{in: "2001:db8::10", fam: 6, want: "2001:db8::10/64", wantIf: "eth0"},
		{in: "2001:db8::10", fam: 4, wantErr: true},
		{in: "300.1.1.1", fam: 4, wantErr: true},
		{in: "192.0.2.1/33", fam: 4, wantErr: true},
		// Addresses no other host can peer with or route to.
		{in: "0.0.0.0", fam: 4, wantErr: true},
		{in: "127.0.0.1", fam: 4, wantErr: true},
		{in: "224.0.0.1", fam: 4, wantErr: true},
		{in: "255.255.255.255", fam: 4, wantErr: true},
		{in: "169.254.3.3", fam: 4, wantErr: true},
		{in: "192.0.2.10/0", fam: 4, wantErr: true},
		{in: "::", fam: 6, wantErr: true},
		{in: "::1", fam: 6, wantErr: true},
		{in: "ff02::1", fam: 6, wantErr: true},
		{in: "fe80::1", fam: 6, wantErr: true},
		{in: "fe80::1%eth0", fam: 6, wantErr: true},
		{in: "2001:db8::1/0", fam: 6, wantErr: true},
	}
	for _, tt := range tests {
		got, err := Manual(l, tt.in, tt.fam)
		if tt.wantErr {
			if err == nil {
				t.Errorf("Manual(%q) succeeded", tt.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("Manual(%q): %v", tt.in, err)
			continue
		}
		if got.Addr.String() != tt.want || got.Interface != tt.wantIf || got.Method != MethodFlag || !strings.Contains(got.Reason, tt.wantNote) {
			t.Errorf("Manual(%q) = %+v, want %s on %q noting %q", tt.in, got, tt.want, tt.wantIf, tt.wantNote)
		}
	}
}

func FuzzParseMethod(f *testing.F) {
	for _, s := range []string{"first-found", "interface=eth.*", "can-reach=192.0.2.1", "none", "can-reach=::1", "interface=("} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMethod(s)
		if err != nil {
			return
		}
		again, err := ParseMethod(m.String())
		if err != nil {
			t.Fatalf("ParseMethod(%q) ok but its String %q does not parse: %v", s, m.String(), err)
		}
		if again.String() != m.String() {
			t.Fatalf("round trip %q -> %q", m.String(), again.String())
		}
	})
}

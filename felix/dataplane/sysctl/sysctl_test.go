package sysctl

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var ctx = context.Background()

// fakeFS is a recording fake of /proc/sys: only paths present exist, like the kernel's.
type fakeFS struct {
	vals   map[string]string
	writes []string
}

func (f *fakeFS) Read(p string) (string, error) {
	v, ok := f.vals[p]
	if !ok {
		return "", fmt.Errorf("read sysctl %s: %w", p, fs.ErrNotExist)
	}
	return v, nil
}

func (f *fakeFS) Write(p, v string) error {
	if _, ok := f.vals[p]; !ok {
		return fmt.Errorf("write sysctl %s: %w", p, fs.ErrNotExist)
	}
	f.writes = append(f.writes, p+"="+v)
	f.vals[p] = v
	return nil
}

// addIface gives the fake kernel defaults for an interface, as a new veth would have.
func (f *fakeFS) addIface(name string) {
	for _, s := range WorkloadSettings(name, true, true) {
		f.vals[s.Path] = map[string]string{"accept_ra": "1", "accept_dad": "1", "proxy_delay": "80"}[s.Path[strings.LastIndex(s.Path, "/")+1:]]
		if f.vals[s.Path] == "" {
			f.vals[s.Path] = "0"
		}
	}
}

func TestApplyWritesOnlyDifferences(t *testing.T) {
	f := &fakeFS{vals: map[string]string{"net/ipv4/ip_forward": "0", "net/ipv6/conf/all/forwarding": "1"}}
	f.addIface("trcaaaaaaaaaaa")
	m := New(f, nil)
	m.SetHost(HostSettings(true, true))
	if err := m.SetInterface("trcaaaaaaaaaaa", true, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"net/ipv4/ip_forward=1",
		"net/ipv4/conf/trcaaaaaaaaaaa/forwarding=1",
		"net/ipv4/conf/trcaaaaaaaaaaa/route_localnet=1",
		"net/ipv4/conf/trcaaaaaaaaaaa/proxy_arp=1",
		"net/ipv4/neigh/trcaaaaaaaaaaa/proxy_delay=0",
		"net/ipv4/conf/trcaaaaaaaaaaa/rp_filter=1",
		"net/ipv6/conf/trcaaaaaaaaaaa/accept_ra=0",
		"net/ipv6/conf/trcaaaaaaaaaaa/accept_dad=0",
		"net/ipv6/conf/trcaaaaaaaaaaa/forwarding=1",
		"net/ipv6/conf/trcaaaaaaaaaaa/proxy_ndp=1",
		"net/ipv6/neigh/trcaaaaaaaaaaa/proxy_delay=0",
	}
	if diff := cmp.Diff(want, f.writes); diff != "" {
		t.Fatalf("writes (-want +got):\n%s", diff)
	}
	f.writes = nil
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.writes) != 0 {
		t.Fatalf("no-op apply/resync wrote %v", f.writes)
	}

	// Drift is repaired at Resync, not before.
	f.vals["net/ipv4/conf/trcaaaaaaaaaaa/proxy_arp"] = "0"
	if err := m.Apply(ctx); err != nil || len(f.writes) != 0 {
		t.Fatalf("apply without resync wrote %v (%v)", f.writes, err)
	}
	if err := m.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"net/ipv4/conf/trcaaaaaaaaaaa/proxy_arp=1"}, f.writes); diff != "" {
		t.Fatal(diff)
	}
}

func TestPendingAndOtherInterfacesUntouched(t *testing.T) {
	f := &fakeFS{vals: map[string]string{}}
	f.addIface("eth0")
	before := len(f.vals)
	m := New(f, nil)
	if err := m.SetInterface("trcbbbbbbbbbbb", true, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"trcbbbbbbbbbbb"}, m.Pending()); diff != "" {
		t.Fatal(diff)
	}
	if len(f.writes) != 0 || len(f.vals) != before {
		t.Fatalf("wrote %v for a missing interface", f.writes)
	}
	f.addIface("trcbbbbbbbbbbb")
	if err := m.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if len(m.Pending()) != 0 || len(f.writes) != 5 {
		t.Fatalf("pending %v writes %v", m.Pending(), f.writes)
	}
	for _, w := range f.writes {
		if strings.Contains(w, "eth0") || strings.Contains(w, "ipv6") {
			t.Fatalf("unexpected write %s", w)
		}
	}
}

func TestValidateInterfaceName(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", "../../kernel", "sixteen-chars-xx", "a b"} {
		if err := New(&fakeFS{}, nil).SetInterface(bad, true, true); err == nil {
			t.Errorf("SetInterface(%q) accepted", bad)
		}
	}
	if err := ValidateInterfaceName("trc0123456789a"); err != nil {
		t.Error(err)
	}
}

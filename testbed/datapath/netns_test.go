package datapath

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/internal/nstest"
)

// scratchNS creates a namespace of the test's own with loopback up, removed at the end.
func scratchNS(t *testing.T) string {
	t.Helper()
	nstest.RequireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "dptest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("add namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if _, err := ipn(context.Background(), ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestNamespaceHelpers(t *testing.T) {
	ns := scratchNS(t)
	ctx := context.Background()
	if err := VXLANAvailable(ctx, ns); err != nil {
		t.Fatalf("VXLANAvailable: %v", err)
	}
	if out, _ := ipn(ctx, ns, "-br", "link"); strings.Contains(out, "benchvxprobe") {
		t.Errorf("probe device left behind: %s", out)
	}
	dev, err := RouteGetDev(ctx, ns, "127.0.0.1", "", "")
	if err != nil || dev != "lo" {
		t.Errorf("RouteGetDev(127.0.0.1) = %q, %v; want lo", dev, err)
	}
	if _, err := RouteGetDev(ctx, ns, "198.18.0.1", "", ""); err == nil {
		t.Error("RouteGetDev to an unroutable address succeeded")
	}
	before, err := TxPackets(ctx, ns, "lo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inNS(ctx, ns, "ping", "-c", "2", "-i", "0.2", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	after, err := TxPackets(ctx, ns, "lo")
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 4 {
		t.Errorf("lo tx counter went from %d to %d after 2 pings, want +4 or more", before, after)
	}
	if _, err := TxPackets(ctx, ns, "nosuchdev"); err == nil {
		t.Error("TxPackets of a missing device succeeded")
	}
}

func TestIperfMeasure(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed (make deps)")
	}
	ns := scratchNS(t)
	ctx := context.Background()
	ep := Endpoint{Name: "scratch", NS: ns, Addr: "127.0.0.1"}
	p := Iperf{Duration: time.Second, Port: 5201}
	for _, udp := range []bool{false, true} {
		r, err := p.Measure(ctx, ep, ep, udp)
		if err != nil {
			t.Fatalf("Measure(udp=%v): %v", udp, err)
		}
		if r.BitsPerSec <= 0 || r.Seconds < 0.5 {
			t.Errorf("Measure(udp=%v) = %+v, want traffic over about a second", udp, r)
		}
		if udp && r.PacketsPerSec() <= 0 {
			t.Errorf("UDP measure without packets: %+v", r)
		}
	}
	// The server was killed by pid: nothing may listen any more.
	if out, _ := inNS(ctx, ns, "ss", "-Hltn"); strings.TrimSpace(out) != "" {
		t.Errorf("iperf3 server left listening: %s", out)
	}
	bad := Endpoint{Name: "nobody", NS: ns, Addr: "127.0.0.2"}
	if _, err := p.Measure(ctx, bad, Endpoint{Name: "x", NS: ns, Addr: "198.18.0.1"}, false); err == nil {
		t.Error("Measure against a server address the namespace does not have succeeded")
	}
}

func TestParseFastPathForwarded(t *testing.T) {
	for _, tt := range []struct {
		in      string
		n       uint64
		ok, err bool
	}{
		{"# HELP x\nterrace_felix_fastpath_packets_total{result=\"not_eligible\"} 3\nterrace_felix_fastpath_packets_total{result=\"forwarded\"} 1234\n", 1234, true, false},
		{"terrace_felix_updates_total 5\n", 0, false, false},
		{"terrace_felix_fastpath_packets_total{result=\"forwarded\"} x\n", 0, false, true},
		{"", 0, false, false},
	} {
		n, ok, err := parseFastPathForwarded(tt.in)
		if n != tt.n || ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("parseFastPathForwarded(%q) = %d, %v, %v; want %d, %v, error %v", tt.in, n, ok, err, tt.n, tt.ok, tt.err)
		}
	}
}

func FuzzParseFastPathForwarded(f *testing.F) {
	f.Add("terrace_felix_fastpath_packets_total{result=\"forwarded\"} 1234\n")
	f.Add("terrace_felix_fastpath_packets_total{result=\"forwarded\"} -1\n")
	f.Fuzz(func(t *testing.T, in string) {
		n, ok, err := parseFastPathForwarded(in)
		if err != nil && (ok || n != 0) {
			t.Fatalf("error with a value: %d %v %v", n, ok, err)
		}
		if !ok && n != 0 {
			t.Fatalf("no counter but a value %d", n)
		}
	})
}

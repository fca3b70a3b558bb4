package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// VXLANDev is the tunnel device the benchmark creates in each host for the VXLAN anchor. It does not
// start with "trc", so no Terrace component takes it for one of its own interfaces.
const VXLANDev = "benchvx0"

// vxlanMTU leaves room for the 50 bytes of outer headers on a 1500-byte underlay, as Calico's VXLAN
// mode does for its pods.
const vxlanMTU = 1450

// ipn runs `ip -n ns args...`.
func ipn(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"-n", ns}, args...)...)
}

// inNS runs a command inside a network namespace (ip netns exec remounts /sys for it).
func inNS(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("run %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// Endpoint is one end of a measurement: a namespace and the address iperf3 binds or dials there.
type Endpoint struct {
	Name string // for messages: host-1, host-1/bench-a
	NS   string
	Addr string
}

// Iperf runs iperf3 measurements between namespaces. Servers are started per measurement inside the
// server's namespace and killed by their pid afterwards.
type Iperf struct {
	Duration time.Duration
	Port     int
}

// Measure runs one iperf3 test from client to server: TCP, or UDP with 64-byte datagrams at
// unlimited rate when udp is set.
func (p Iperf) Measure(ctx context.Context, client, server Endpoint, udp bool) (Result, error) {
	port := strconv.Itoa(p.Port)
	srv := exec.Command("ip", "netns", "exec", server.NS, "iperf3", "-s", "-1", "-B", server.Addr, "-p", port)
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return Result{}, fmt.Errorf("start iperf3 server in %s: %w", server.Name, err)
	}
	// ip netns exec execs iperf3 in place, so this pid is the server's own.
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	if err := waitListening(ctx, server.NS, p.Port, 5*time.Second); err != nil {
		return Result{}, fmt.Errorf("start iperf3 server in %s: %w (output: %s)", server.Name, err, strings.TrimSpace(srvOut.String()))
	}
	secs := strconv.FormatFloat(p.Duration.Seconds(), 'f', -1, 64)
	args := []string{"netns", "exec", client.NS, "iperf3", "-c", server.Addr, "-B", client.Addr, "-p", port, "-t", secs, "-J"}
	if udp {
		args = append(args, "-u", "-l", "64", "-b", "0")
	}
	cctx, cancel := context.WithTimeout(ctx, p.Duration+20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(cctx, "ip", args...)
	cmd.Stdout = &out
	runErr := cmd.Run()
	// iperf3 -J reports its errors inside the JSON, which says more than the exit status.
	r, err := ParseIperf(out.Bytes(), udp)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s -> %s: %w", client.Name, server.Name, errors.Join(err, runErr))
	}
	return r, nil
}

// waitListening polls until something listens on the TCP port inside ns (iperf3 uses a TCP
// control connection for UDP tests too).
func waitListening(ctx context.Context, ns string, port int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		out, err := inNS(ctx, ns, "ss", "-Hltn", "sport", "=", ":"+strconv.Itoa(port))
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for port %d: nothing listening after %s", port, d)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for port %d: %w", port, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TxPackets reads a device's transmitted packet counter inside ns.
func TxPackets(ctx context.Context, ns, dev string) (uint64, error) {
	out, err := inNS(ctx, ns, "cat", "/sys/class/net/"+dev+"/statistics/tx_packets")
	if err != nil {
		return 0, fmt.Errorf("read tx counter of %s: %w", dev, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read tx counter of %s: %w", dev, err)
	}
	return n, nil
}

// RouteGetDev asks the kernel of ns which device a packet to dst would leave by (optionally as if it
// arrived on iif from src) and returns that device.
func RouteGetDev(ctx context.Context, ns, dst, src, iif string) (string, error) {
	args := []string{"-o", "route", "get", dst}
	if src != "" && iif != "" {
		args = append(args, "from", src, "iif", iif)
	}
	out, err := ipn(ctx, ns, args...)
	if err != nil {
		return "", fmt.Errorf("route get %s: %w", dst, err)
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("route get %s: no device in %q", dst, strings.TrimSpace(out))
}

// HostSide is one host of the VXLAN anchor: its namespace, underlay address and uplink device, and
// the pod on it.
type HostSide struct {
	NS       string
	Underlay string
	Uplink   string
	PodNS    string
	PodAddr  string
	mac      string
}

// VXLAN is a point-to-point VXLAN tunnel between two hosts over their uplinks, used to carry the
// same pods' traffic encapsulated. Create makes the devices; Enable and Disable steer the two pods'
// traffic into the tunnel and back with static routes (and a 1450 MTU route in each pod, as a VXLAN
// network would give its pods), leaving Terrace's own routes alone.
type VXLAN struct {
	A, B HostSide
}

// Create adds the tunnel devices with static neighbour entries for the remote pod.
func (v *VXLAN) Create(ctx context.Context) error {
	for _, s := range []*HostSide{&v.A, &v.B} {
		peer := &v.B
		if s == &v.B {
			peer = &v.A
		}
		if _, err := ipn(ctx, s.NS, "link", "add", VXLANDev, "type", "vxlan", "id", "4242", "local", s.Underlay,
			"remote", peer.Underlay, "dstport", "4789", "dev", s.Uplink); err != nil {
			return fmt.Errorf("create vxlan: %w", err)
		}
		if _, err := ipn(ctx, s.NS, "link", "set", VXLANDev, "mtu", strconv.Itoa(vxlanMTU), "up"); err != nil {
			return fmt.Errorf("create vxlan: %w", err)
		}
		out, err := ipn(ctx, s.NS, "-br", "link", "show", "dev", VXLANDev)
		if err != nil {
			return fmt.Errorf("create vxlan: %w", err)
		}
		f := strings.Fields(out)
		if len(f) < 3 {
			return fmt.Errorf("create vxlan: no MAC in %q", out)
		}
		s.mac = f[2]
	}
	for _, s := range []*HostSide{&v.A, &v.B} {
		peer := v.peer(s)
		if _, err := ipn(ctx, s.NS, "neigh", "replace", peer.PodAddr, "lladdr", peer.mac, "dev", VXLANDev, "nud", "permanent"); err != nil {
			return fmt.Errorf("create vxlan: %w", err)
		}
	}
	return nil
}

func (v *VXLAN) peer(s *HostSide) *HostSide {
	if s == &v.A {
		return &v.B
	}
	return &v.A
}

// Enable routes each pod's traffic to the other pod through the tunnel.
func (v *VXLAN) Enable(ctx context.Context) error {
	for _, s := range []*HostSide{&v.A, &v.B} {
		peer := v.peer(s)
		if _, err := ipn(ctx, s.NS, "route", "replace", peer.PodAddr+"/32", "dev", VXLANDev, "proto", "static"); err != nil {
			return fmt.Errorf("enable vxlan path: %w", err)
		}
		if _, err := ipn(ctx, s.PodNS, "route", "replace", peer.PodAddr+"/32", "via", "169.254.1.1", "dev", "eth0",
			"mtu", strconv.Itoa(vxlanMTU), "proto", "static"); err != nil {
			return fmt.Errorf("enable vxlan path: %w", err)
		}
	}
	return nil
}

// Disable removes what Enable added; each removal is attempted.
func (v *VXLAN) Disable(ctx context.Context) error {
	var errs []error
	for _, s := range []*HostSide{&v.A, &v.B} {
		peer := v.peer(s)
		if _, err := ipn(ctx, s.NS, "route", "del", peer.PodAddr+"/32", "dev", VXLANDev, "proto", "static"); err != nil {
			errs = append(errs, err)
		}
		if _, err := ipn(ctx, s.PodNS, "route", "del", peer.PodAddr+"/32", "proto", "static"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("disable vxlan path: %w", err)
	}
	return nil
}

// Delete removes the tunnel devices (the testbed's teardown would remove them with the namespaces).
func (v *VXLAN) Delete(ctx context.Context) error {
	var errs []error
	for _, s := range []*HostSide{&v.A, &v.B} {
		if _, err := ipn(ctx, s.NS, "link", "del", VXLANDev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete vxlan: %w", err)
	}
	return nil
}

// VXLANAvailable reports whether the kernel can create a VXLAN device, tried inside ns (a namespace
// the caller owns); the probe device is removed again.
func VXLANAvailable(ctx context.Context, ns string) error {
	if _, err := ipn(ctx, ns, "link", "add", "benchvxprobe", "type", "vxlan", "id", "4243", "dstport", "4789"); err != nil {
		return fmt.Errorf("probe vxlan: %w", err)
	}
	if _, err := ipn(ctx, ns, "link", "del", "benchvxprobe"); err != nil {
		return fmt.Errorf("probe vxlan: %w", err)
	}
	return nil
}

// TerraceRules counts the rules in Terrace's own iptables chains (trc-) inside ns, for both
// back ends, to show how much of felix's dataplane was in the path while a figure was taken.
func TerraceRules(ctx context.Context, ns string) map[string]int {
	out := map[string]int{}
	for _, tool := range []string{"iptables-legacy-save", "iptables-nft-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		dump, err := inNS(ctx, ns, tool)
		if err != nil {
			continue
		}
		n := 0
		for _, l := range strings.Split(dump, "\n") {
			if strings.HasPrefix(l, "-A trc-") {
				n++
			}
		}
		out[strings.TrimSuffix(strings.TrimPrefix(tool, "iptables-"), "-save")] = n
	}
	return out
}

// FastPathForwarded reads, from felix's metrics in a host namespace (127.0.0.1:9091, the
// default), how many packets its fast path has forwarded; ok is false when felix exports no
// fast path counters (the fast path is off or unavailable).
func FastPathForwarded(ctx context.Context, hostNS string) (n uint64, ok bool, err error) {
	out, err := inNS(ctx, hostNS, "curl", "-sf", "--max-time", "5", "http://127.0.0.1:9091/metrics")
	if err != nil {
		return 0, false, fmt.Errorf("read felix metrics in %s: %w", hostNS, err)
	}
	return parseFastPathForwarded(out)
}

const forwardedMetric = `terrace_felix_fastpath_packets_total{result="forwarded"}`

func parseFastPathForwarded(metrics string) (uint64, bool, error) {
	for _, l := range strings.Split(metrics, "\n") {
		v, found := strings.CutPrefix(l, forwardedMetric+" ")
		if !found {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("parse %s: %w", forwardedMetric, err)
		}
		return n, true, nil
	}
	return 0, false, nil
}

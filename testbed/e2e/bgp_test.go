package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/internal/syncbuf"
	"github.com/terracenet/terrace/testbed"
)

// TestMeshDualStack: with the node-to-node mesh and one ToR, every host learns every other host's
// blocks (protocol 81, both families), the ToR learns all of them, and pods on different hosts
// reach each other with their own addresses on the wire (no encapsulation).
func TestMeshDualStack(t *testing.T) {
	tb := testbed.StartForTest(t, testbed.Options{Hosts: 3, IPv6: true, LogLevel: "info"})
	ctx := context.Background()
	pods := map[string]testbed.PodState{}
	for _, h := range tb.Hosts() {
		pods[h] = addPod(t, tb, h, "p")
	}
	for _, h := range tb.Hosts() {
		eventually(t, waitTimeout, func() string {
			r4, r6 := kernelRoutes(t, tb, h, "4"), kernelRoutes(t, tb, h, "6")
			for o, p := range pods {
				b4, b6 := blockOf(t, p.IPv4), blockOf(t, p.IPv6)
				_, has4 := r4[b4]
				_, has6 := r6[b6]
				if o == h && (has4 || has6) {
					return fmt.Sprintf("%s installed a BGP route for its own block %s: %v %v", h, b4, r4, r6)
				}
				if o != h && (!has4 || !has6) {
					return fmt.Sprintf("%s lacks %s's blocks %s, %s; has %v %v", h, o, b4, b6, r4, r6)
				}
			}
			return ""
		})
	}
	eventually(t, waitTimeout, func() string {
		out, _ := tb.TorRoutes(ctx, "tor-1")
		for h, p := range pods {
			for _, b := range []string{blockOf(t, p.IPv4), blockOf(t, p.IPv6)} {
				if !strings.Contains(out, b) {
					return fmt.Sprintf("tor-1 lacks %s's block %s:\n%s", h, b, out)
				}
			}
		}
		return ""
	})

	t.Run("pod to pod", func(t *testing.T) {
		for _, pair := range [][2]string{{"host-1", "host-2"}, {"host-2", "host-3"}, {"host-3", "host-1"}} {
			from, to := pair[0]+"/p", pods[pair[1]]
			if err := ping(tb, from, to.IPv4, 2); err != nil {
				t.Errorf("%s cannot ping %s (%s): %v", from, pair[1], to.IPv4, err)
			}
			if err := ping(tb, from, to.IPv6, 2); err != nil {
				t.Errorf("%s cannot ping %s (%s): %v", from, pair[1], to.IPv6, err)
			}
		}
	})

	// TCP over both families between pods on two hosts: the flows go on once established, taken
	// by the fast path on both hosts (IPv4 and IPv6 alike).
	t.Run("tcp through the fast path", func(t *testing.T) {
		for i, fam := range []string{"ipv4", "ipv6"} {
			addr := pods["host-1"].IPv4
			if fam == "ipv6" {
				addr = pods["host-1"].IPv6
			}
			before1, why1 := fastPathForwarded(t, tb, "host-1")
			before2, why2 := fastPathForwarded(t, tb, "host-2")
			if why1 != "" || why2 != "" {
				t.Fatalf("%s %s", why1, why2)
			}
			flow := startStream(t, tb, "host-1/p", addr, 7080+i, "host-2/p")
			time.Sleep(500 * time.Millisecond)
			if err := flow.close(); err != nil {
				t.Errorf("%s flow: %v", fam, err)
			}
			if flow.received.Load() < 20<<10 {
				t.Errorf("%s flow carried %d bytes in 0.5 s, want about 100 KiB", fam, flow.received.Load())
			}
			after1, _ := fastPathForwarded(t, tb, "host-1")
			after2, _ := fastPathForwarded(t, tb, "host-2")
			// Some 100 segments each way; the first packets of the flow go through the kernel.
			if after1-before1 < 50 || after2-before2 < 50 {
				t.Errorf("%s flow: the fast path forwarded %d packets in host-1 and %d in host-2, want most of them",
					fam, after1-before1, after2-before2)
			}
		}
	})

	t.Run("no encapsulation", func(t *testing.T) {
		src, dst := pods["host-1"].IPv4, pods["host-2"].IPv4
		h1, _ := tb.Host("host-1")
		ns, err := tb.Namespace("host-1")
		if err != nil {
			t.Fatal(err)
		}
		// Capture on the uplink: ICMP echo requests with the pods' own addresses in the outer header.
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		filter := fmt.Sprintf("icmp and src host %s and dst host %s", src, dst)
		cap := exec.CommandContext(cctx, "ip", "netns", "exec", ns, "tcpdump", "-n", "-l", "-c", "3", "-i", h1.Uplinks[0].HostIf, filter)
		buf := &syncbuf.Buffer{}
		cap.Stdout, cap.Stderr = buf, buf
		if _, err := exec.LookPath("tcpdump"); err != nil {
			t.Skip("tcpdump not installed (make deps): cannot capture on the uplink")
		}
		if err := cap.Start(); err != nil {
			t.Fatalf("start tcpdump: %v", err)
		}
		// tcpdump says "listening on" once its filter is attached; pings sent before are not seen.
		eventually(t, 10*time.Second, func() string {
			if !strings.Contains(buf.String(), "listening on") {
				return "tcpdump not listening yet: " + buf.String()
			}
			return ""
		})
		if err := ping(tb, "host-1/p", dst, 5); err != nil {
			t.Errorf("ping during capture: %v", err)
		}
		_ = cap.Wait()
		if got := strings.Count(buf.String(), "ICMP echo request"); got < 3 {
			t.Errorf("captured %d plain echo requests %s > %s on %s, want 3:\n%s", got, src, dst, h1.Uplinks[0].HostIf, buf.String())
		}
	})

	t.Run("status", func(t *testing.T) {
		eventually(t, waitTimeout, func() string {
			st, ok := bgpStatus(t, tb, "host-1")
			if !ok {
				return "no bgp status on host-1"
			}
			est := map[string]int{}
			for _, p := range st.Peers {
				if p.State == "established" {
					est[string(p.Type)]++
				}
			}
			// Two mesh peers (IPv4 sessions) and the ToR over IPv4 and IPv6.
			if est["mesh"] < 2 || est["node"] < 2 {
				return fmt.Sprintf("host-1 established peers by type %v, want mesh>=2 node>=2: %+v", est, st.Peers)
			}
			if st.Routes.Installed < 4 {
				return fmt.Sprintf("host-1 reports %d installed routes, want >= 4", st.Routes.Installed)
			}
			return ""
		})
		// Every learned route is usable: an IPv6 block learned over an IPv4 mesh session with
		// an IPv4 next hop was refused by the route writer (and went unnoticed here while the
		// ToR's path happened to win).
		for _, h := range tb.Hosts() {
			eventually(t, waitTimeout, func() string {
				st, ok := bgpStatus(t, tb, h)
				if !ok {
					return "no bgp status on " + h
				}
				if st.Routes.Unresolved != 0 || st.Routes.LastError != "" || st.Routes.Installed != st.Routes.Learned {
					return fmt.Sprintf("%s routes: %+v", h, st.Routes)
				}
				return ""
			})
		}
		out := output(t, tb, "host-1", "terracectl", "node", "status")
		for _, w := range []string{"BGP peers:", "ADDRESS", "established", "mesh"} {
			if !strings.Contains(out, w) {
				t.Errorf("node status lacks %q:\n%s", w, out)
			}
		}
		routes := output(t, tb, "host-1", "terracectl", "node", "routes")
		if b := blockOf(t, pods["host-2"].IPv4); !strings.Contains(routes, b) {
			t.Errorf("node routes lacks %s:\n%s", b, routes)
		}
	})
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/testbed"
)

// felixPod adds a pod in a Kubernetes-style namespace with labels.
func felixPod(t *testing.T, tb *testbed.Testbed, host, name, namespace string, labels map[string]string) testbed.PodState {
	t.Helper()
	p, err := tb.AddPod(context.Background(), testbed.PodSpec{Host: host, Name: name, Namespace: namespace, Labels: labels})
	if err != nil {
		t.Fatalf("add pod %s/%s: %v", host, name, err)
	}
	if p.IPv4 == "" {
		t.Fatalf("pod %s/%s has no IPv4 address: %+v", host, name, p)
	}
	return p
}

// applyYAML writes resources to a file in host-1's directory and applies them with terracectl,
// the way an operator would.
func applyYAML(t *testing.T, tb *testbed.Testbed, name, doc string) {
	t.Helper()
	h1, err := tb.Host("host-1")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h1.Dir, name+".yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	output(t, tb, "host-1", "terracectl", "apply", "-f", path)
}

// checkMatrix runs the testbed's connectivity check until every cell matches the expectation (the
// policy takes a moment to reach the kernel) or the timeout passes, then reports the differences.
func checkMatrix(t *testing.T, tb *testbed.Testbed, stage, expect string, timeout time.Duration) {
	t.Helper()
	e, err := testbed.ParseExpectation(expect)
	if err != nil {
		t.Fatalf("%s: %v", stage, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		m, err := tb.Check(context.Background(), testbed.CheckOptions{Expect: e, Timeout: 700 * time.Millisecond})
		if err != nil {
			t.Fatalf("%s: check: %v", stage, err)
		}
		if m.Differences() == 0 {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, c := range m.Cells {
				if !c.OK() {
					fmt.Fprintf(&b, "\n  %s -> %s (%s) %s: want %s, got %s %s", c.From, c.To, c.Addr, c.Probe, c.Expected, c.Actual, c.Detail)
				}
			}
			t.Fatalf("%s: %d of %d probes differ from the expectation after %s:%s", stage, m.Differences(), len(m.Cells), timeout, b.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// listener starts a TCP server inside target that accepts, writes the peer's address to a file
// (one per line) and closes; it is killed when the test ends. The file's path is returned.
func listener(t *testing.T, tb *testbed.Testbed, target string, port int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "peers")
	script := fmt.Sprintf(`import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d))
s.listen(128)
while True:
    c, a = s.accept()
    with open(%q, "a") as f:
        f.write(a[0] + "\n")
    c.close()
`, port, out)
	cmd, err := tb.Command(context.Background(), target, "python3", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("start listener in %s: %v", target, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The listener is up once a connection from its own namespace succeeds.
	eventually(t, 10*time.Second, func() string {
		if tcpOpen(tb, target, "127.0.0.1", port, time.Second) {
			return ""
		}
		return fmt.Sprintf("listener in %s on %d not up", target, port)
	})
	return out
}

// tcpOpen reports whether a TCP connection from target to addr:port completes within timeout.
func tcpOpen(tb *testbed.Testbed, target, addr string, port int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Second)
	defer cancel()
	secs := fmt.Sprintf("%.1f", timeout.Seconds())
	_, err := tb.Output(ctx, target, "timeout", secs, "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/%d", addr, port))
	return err == nil
}

// lastPeer returns the newest peer address a listener recorded.
// peerCount is how many connections the listener has logged.
func peerCount(path string) int {
	b, _ := os.ReadFile(path)
	return len(strings.Fields(string(b)))
}

func lastPeer(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

// ipt runs one of the iptables tools of the back end felix uses on a host ("save" or the plain command).
type ipt struct{ save, cmd string }

// iptOf finds the iptables back end holding Terrace's chains on a host.
func iptOf(t *testing.T, tb *testbed.Testbed, host string) ipt {
	t.Helper()
	for _, c := range []ipt{{"iptables-save", "iptables"}, {"iptables-nft-save", "iptables-nft"}, {"iptables-legacy-save", "iptables-legacy"}} {
		if _, err := exec.LookPath(c.save); err != nil {
			continue
		}
		out, err := tb.Output(context.Background(), host, c.save, "-t", "filter")
		if err == nil && strings.Contains(out, ":trc-FORWARD") {
			return c
		}
	}
	t.Fatalf("no iptables back end on %s holds trc-FORWARD", host)
	return ipt{}
}

// snapshot is Terrace's part of a host's kernel state, normalised for comparison.
type snapshot struct{ rules, sets, routes string }

func (s snapshot) diff(o snapshot) string {
	var d []string
	if s.rules != o.rules {
		d = append(d, "iptables rules")
	}
	if s.sets != o.sets {
		d = append(d, "ipsets")
	}
	if s.routes != o.routes {
		d = append(d, "proto-80 routes")
	}
	return strings.Join(d, ", ")
}

func takeSnapshot(t *testing.T, tb *testbed.Testbed, host string, b ipt) snapshot {
	t.Helper()
	keep := func(out string, want func(string) bool) string {
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") || !want(l) {
				continue
			}
			// Chain declarations carry packet counters that change with traffic.
			if strings.HasPrefix(l, ":") {
				if i := strings.Index(l, " ["); i > 0 {
					l = l[:i]
				}
			}
			lines = append(lines, l)
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	var s snapshot
	for _, table := range []string{"filter", "nat"} {
		s.rules += keep(output(t, tb, host, b.save, "-t", table), func(l string) bool { return strings.Contains(l, "trc") }) + "\n"
	}
	s.sets = keep(output(t, tb, host, "ipset", "save"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 1 && strings.HasPrefix(f[1], "trc")
	})
	s.routes = keep(output(t, tb, host, "ip", "-4", "route", "show", "proto", "80"), func(string) bool { return true })
	return s
}

// udpEcho starts a UDP echo server on ports inside target; it is killed when the test ends.
func udpEcho(t *testing.T, tb *testbed.Testbed, target string, ports []int) {
	t.Helper()
	var ps []string
	for _, p := range ports {
		ps = append(ps, fmt.Sprint(p))
	}
	script := fmt.Sprintf(`import select, socket
socks = []
for p in [%s]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", p))
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)
`, strings.Join(ps, ","))
	cmd, err := tb.Command(context.Background(), target, "python3", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("start udp echo in %s: %v", target, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// udpAnswers reports whether a UDP datagram from target to addr:port is echoed within a second.
func udpAnswers(tb *testbed.Testbed, target, addr string, port int) bool {
	script := fmt.Sprintf(`import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b"terrace", (%q, %d))
try:
    s.recvfrom(64)
except OSError:
    sys.exit(1)
`, addr, port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := tb.Output(ctx, target, "python3", "-c", script)
	return err == nil
}

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/terracenet/terrace/bgp/agent"
	"github.com/terracenet/terrace/internal/nstest"
	"github.com/terracenet/terrace/node"
	"github.com/terracenet/terrace/testbed"
	"github.com/terracenet/terrace/testbed/datapath"
)

const waitTimeout = 40 * time.Second

// eventually retries f until it returns "" or the timeout passes, then fails with f's last words.
func eventually(t *testing.T, timeout time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func output(t *testing.T, tb *testbed.Testbed, target string, argv ...string) string {
	t.Helper()
	out, err := tb.Output(context.Background(), target, argv...)
	if err != nil {
		t.Fatalf("%s: %v: %v: %s", target, argv, err, out)
	}
	return out
}

// kernelRoutes returns a host's protocol-81 routes of one family: prefix => the whole line.
func kernelRoutes(t *testing.T, tb *testbed.Testbed, host string, family string) map[string]string {
	t.Helper()
	out, err := tb.Output(context.Background(), host, "ip", "-"+family, "-o", "route", "show", "proto", "81")
	if err != nil {
		t.Fatalf("list routes on %s: %v: %s", host, err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			m[f[0]] = l
		}
	}
	return m
}

// blockOf returns the /26 (IPv4) or /122 (IPv6) pool block holding a pod address.
func blockOf(t *testing.T, addr string) string {
	t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil {
		t.Fatalf("pod address %q: %v", addr, err)
	}
	bits := 26
	if a.Is6() {
		bits = 122
	}
	return netip.PrefixFrom(a, bits).Masked().String()
}

func addPod(t *testing.T, tb *testbed.Testbed, host, name string) testbed.PodState {
	t.Helper()
	p, err := tb.AddPod(context.Background(), testbed.PodSpec{Host: host, Name: name})
	if err != nil {
		t.Fatalf("add pod %s/%s: %v", host, name, err)
	}
	if p.IPv4 == "" {
		t.Fatalf("pod %s/%s has no IPv4 address: %+v", host, name, p)
	}
	return p
}

// bgpStatus reads a host's BGP status through terracectl, as an operator would.
func bgpStatus(t testing.TB, tb *testbed.Testbed, host string) (agent.Status, bool) {
	t.Helper()
	out, err := tb.Output(context.Background(), host, "terracectl", "node", "status", "-o", "json")
	if err != nil {
		return agent.Status{}, false
	}
	var st node.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decode node status of %s: %v: %s", host, err, out)
	}
	c, ok := st.Components["bgp"]
	if !ok {
		return agent.Status{}, false
	}
	s, err := agent.StatusFromDetails(c.State, c.Detail, c.Details)
	if err != nil {
		t.Fatalf("decode bgp status of %s: %v", host, err)
	}
	return s, true
}

func ping(tb *testbed.Testbed, from, to string, count int) error {
	args := []string{"ping", "-c", itoa(count), "-i", "0.2", "-W", "2", to}
	_, err := tb.Output(context.Background(), from, args...)
	return err
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// stream is a TCP connection between two pods that carries a steady trickle of data (1 KiB every
// 5 ms) until stopped: a long-lived flow for tests of what it survives.
type stream struct {
	received atomic.Int64
	mu       sync.Mutex
	err      error
	stop     chan struct{}
	done     sync.WaitGroup
	ln       net.Listener
	c        net.Conn
}

// startStream listens in the server pod (target "HOST/POD") on addr:port and connects from the
// client pod; the sockets are made inside the pods' namespaces.
func startStream(t *testing.T, tb *testbed.Testbed, server, addr string, port int, client string) *stream {
	t.Helper()
	sNS, err := tb.Namespace(server)
	if err != nil {
		t.Fatal(err)
	}
	cNS, err := tb.Namespace(client)
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{stop: make(chan struct{})}
	hostPort := net.JoinHostPort(addr, strconv.Itoa(port))
	if err := nstest.Enter(sNS, func() (err error) { s.ln, err = net.Listen("tcp", hostPort); return err }); err != nil {
		t.Fatalf("listen in %s: %v", server, err)
	}
	if err := nstest.Enter(cNS, func() (err error) { s.c, err = net.DialTimeout("tcp", hostPort, 5*time.Second); return err }); err != nil {
		s.ln.Close()
		t.Fatalf("connect from %s to %s: %v", client, hostPort, err)
	}
	conn, err := s.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		defer conn.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			s.received.Add(int64(n))
			if err != nil {
				if !errors.Is(err, io.EOF) {
					s.fail(fmt.Errorf("read: %w", err))
				}
				return
			}
		}
	}()
	go func() {
		defer s.done.Done()
		chunk := make([]byte, 1024)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				s.c.(*net.TCPConn).CloseWrite()
				return
			case <-tick.C:
				s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := s.c.Write(chunk); err != nil {
					s.fail(fmt.Errorf("write: %w", err))
					return
				}
			}
		}
	}()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// close ends the stream (a clean close: the reader sees EOF) and returns its first error.
func (s *stream) close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
	s.c.Close()
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// fastPathForwarded reads how many packets a host's felix fast path has forwarded (its metrics);
// why says what is wrong when that cannot be read.
func fastPathForwarded(t *testing.T, tb *testbed.Testbed, host string) (n uint64, why string) {
	t.Helper()
	h, err := tb.Host(host)
	if err != nil {
		t.Fatal(err)
	}
	n, ok, err := datapath.FastPathForwarded(context.Background(), h.NS)
	switch {
	case err != nil:
		return 0, err.Error()
	case !ok:
		return 0, host + "'s felix exports no fast path counters: is the fast path off?"
	}
	return n, ""
}

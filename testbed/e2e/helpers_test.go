package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/bgp/agent"
	"github.com/terracenet/terrace/node"
	"github.com/terracenet/terrace/testbed"
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

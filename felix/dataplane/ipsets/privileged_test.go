package ipsets

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/internal/nstest"
)

type countingCmd struct {
	cmdrun.Runner
	restores int
}

func (c *countingCmd) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if len(args) > 0 && args[0] == "restore" {
		c.restores++
	}
	return c.Runner.Run(ctx, stdin, name, args...)
}

// TestRealIpset programs a fresh namespace with the real ipset tool, tampers with the sets and
// checks Resync repairs them while a foreign set survives.
func TestRealIpset(t *testing.T) {
	ns := nstest.New(t, "ipset")
	other := nstest.New(t, "ipset")
	nstest.Run(t, ns, "ipset", "create", "foreign", "hash:ip")
	nstest.Run(t, ns, "ipset", "add", "foreign", "192.0.2.1")
	nstest.Run(t, ns, "ipset", "create", "trcStale", "hash:ip")

	cmd := cmdrun.InNetns(ns)
	r := New(cmd, Options{SwapThreshold: 2})
	members := map[Meta][]string{
		{Name: "trcA", Type: TypeHashIP, Family: FamilyInet}:      {"198.18.0.1", "198.18.0.2"},
		{Name: "trcB", Type: TypeHashNet, Family: FamilyInet6}:    {"2001:db8:1000::/64", "2001:db8:1001::1/128"},
		{Name: "trcC", Type: TypeHashIPPort, Family: FamilyInet}:  {"198.18.0.1,tcp:80", "198.18.0.1,udp:53"},
		{Name: "trcD", Type: TypeHashIPPort, Family: FamilyInet6}: {"2001:db8:1000::1,sctp:9"},
	}
	for m, ms := range members {
		mustT(t, r.AddOrReplace(m, ms))
	}
	mustT(t, r.Apply(ctx))
	if !strings.Contains(nstest.Run(t, ns, "ipset", "list", "-n"), "trcStale") {
		t.Fatal("stale set destroyed before in-sync")
	}
	r.SetInSync()
	mustT(t, r.Apply(ctx))
	clean := nstest.Run(t, ns, "ipset", "save")
	if strings.Contains(clean, "trcStale") || !strings.Contains(clean, "add foreign 192.0.2.1") {
		t.Fatalf("after in-sync apply:\n%s", clean)
	}
	// ipsets are per network namespace: the other namespace sees none of ours.
	if got := nstest.Run(t, other, "ipset", "list", "-n"); strings.Contains(got, "trc") {
		t.Fatalf("sets leaked into another namespace: %q", got)
	}

	// A second writer reading the real kernel agrees member for member (canonical forms match).
	cc := &countingCmd{Runner: cmd}
	fresh := New(cc, Options{})
	for m, ms := range members {
		mustT(t, fresh.AddOrReplace(m, ms))
	}
	mustT(t, fresh.Apply(ctx))
	if cc.restores != 0 {
		t.Fatalf("fresh writer found differences in a clean kernel")
	}

	// Large change goes through the temp set and swap.
	mustT(t, r.AddOrReplace(Meta{Name: "trcA", Type: TypeHashIP, Family: FamilyInet}, []string{"198.18.7.1", "198.18.7.2", "198.18.7.3"}))
	mustT(t, r.Apply(ctx))
	got := nstest.Run(t, ns, "ipset", "list", "trcA")
	for _, m := range []string{"198.18.7.1", "198.18.7.2", "198.18.7.3"} {
		if !strings.Contains(got, m) {
			t.Fatalf("trcA lacks %s after swap:\n%s", m, got)
		}
	}
	if strings.Contains(got, "198.18.0.1") {
		t.Fatalf("trcA kept an old member after swap:\n%s", got)
	}
	clean = nstest.Run(t, ns, "ipset", "save")

	// Tamper and repair.
	nstest.Run(t, ns, "ipset", "destroy", "trcB")
	nstest.Run(t, ns, "ipset", "del", "trcC", "198.18.0.1,tcp:80")
	nstest.Run(t, ns, "ipset", "add", "trcA", "198.18.66.66")
	mustT(t, r.Resync(ctx))
	if got := nstest.Run(t, ns, "ipset", "save"); normalize(got) != normalize(clean) {
		t.Fatalf("after resync:\n%s\nwant:\n%s", got, clean)
	}
}

// normalize drops the random initval and sorts lines, which carry no meaning in their order.
func normalize(save string) string {
	sets, err := ParseSave([]byte(save))
	if err != nil {
		return "unparseable: " + err.Error()
	}
	var lines []string
	for _, s := range sets {
		lines = append(lines, "create "+s.Name+" "+s.Type+" "+s.Family)
		for _, m := range s.Members {
			lines = append(lines, "add "+s.Name+" "+m)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

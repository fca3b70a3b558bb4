package dataplane_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/internal/nstest"
)

// TestSetLifecycleOrdering pins the order the felix loop must use: ipset updates, then iptables,
// then ipset deletions. A set a rule still references cannot be destroyed; after the rule is gone
// it can.
func TestSetLifecycleOrdering(t *testing.T) {
	ctx := context.Background()
	for _, be := range []iptables.Backend{iptables.BackendLegacy, iptables.BackendNFT} {
		t.Run(string(be), func(t *testing.T) {
			ns := nstest.New(t, "ipset", "iptables-"+string(be)+"-restore")
			cmd := cmdrun.InNetns(ns)
			sets := ipsets.New(cmd, ipsets.Options{MaxAttempts: 1})
			tb := iptables.NewTable("filter", iptables.NewExecRunner(cmd, be, 4), iptables.Options{MaxAttempts: 1})
			name := ipsets.NameFor(ipsets.FamilyInet, "selector:role == 'db'")
			must(t, sets.AddOrReplace(ipsets.Meta{Name: name, Type: ipsets.TypeHashIP, Family: ipsets.FamilyInet}, []string{"198.18.0.1"}))
			must(t, tb.UpdateChain(iptables.Chain{Name: "trc-in", Rules: []iptables.Rule{
				{Match: "-m set --match-set " + name + " src", Action: "-j DROP"},
			}}))
			must(t, tb.SetInsertions("INPUT", []iptables.Rule{{Action: "-j trc-in"}}))
			sets.SetInSync()
			tb.SetInSync()
			apply := func() error {
				if err := sets.ApplyUpdates(ctx); err != nil {
					return err
				}
				if err := tb.Apply(ctx); err != nil {
					return err
				}
				return sets.ApplyDeletions(ctx)
			}
			must(t, apply())
			if got := nstest.Run(t, ns, "iptables-"+string(be)+"-save", "-t", "filter"); !strings.Contains(got, "--match-set "+name+" src") {
				t.Fatalf("rule using the set missing:\n%s", got)
			}

			// Wrong order: destroying the set while the rule exists fails and is reported.
			sets.Remove(name)
			if err := sets.ApplyDeletions(ctx); err == nil || !strings.Contains(err.Error(), "in use") {
				t.Fatalf("destroying an in-use set: err = %v", err)
			}
			// Right order: the rule goes first, then the set.
			must(t, tb.UpdateChain(iptables.Chain{Name: "trc-in", Rules: []iptables.Rule{{Action: "-j RETURN"}}}))
			must(t, apply())
			if got := nstest.Run(t, ns, "ipset", "list", "-n"); strings.Contains(got, name) {
				t.Fatalf("set %s survived: %q", name, got)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPolicyBlocksRealTraffic: a rule matching an ipset drops TCP from a second namespace; taking
// the client out of the set (a label change) lets it through, and the change is a one-line delta.
func TestPolicyBlocksRealTraffic(t *testing.T) {
	ctx := context.Background()
	host := nstest.New(t, "ipset", "iptables-nft-restore")
	client := nstest.New(t)
	nstest.Run(t, host, "ip", "link", "add", "trc0123456789a", "type", "veth", "peer", "name", "eth0", "netns", client)
	nstest.Run(t, host, "ip", "addr", "add", "192.0.2.1/24", "dev", "trc0123456789a")
	nstest.Run(t, host, "ip", "link", "set", "trc0123456789a", "up")
	nstest.Run(t, client, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
	nstest.Run(t, client, "ip", "link", "set", "eth0", "up")

	var ln net.Listener
	must(t, nstest.Do(t, host, func() (err error) {
		ln, err = net.Listen("tcp", "192.0.2.1:8080")
		return err
	}))
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	connects := func() bool {
		err := nstest.Do(t, client, func() error {
			c, err := net.DialTimeout("tcp", "192.0.2.1:8080", 300*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		return err == nil
	}
	if !connects() {
		t.Fatal("no connectivity before any policy")
	}

	cmd := cmdrun.InNetns(host)
	sets := ipsets.New(cmd, ipsets.Options{})
	tb := iptables.NewTable("filter", iptables.NewExecRunner(cmd, iptables.BackendNFT, 4), iptables.Options{})
	name := ipsets.NameFor(ipsets.FamilyInet, "selector:role == 'blocked'")
	must(t, sets.AddOrReplace(ipsets.Meta{Name: name, Type: ipsets.TypeHashIP, Family: ipsets.FamilyInet}, []string{"192.0.2.2"}))
	must(t, tb.UpdateChain(iptables.Chain{Name: "trc-in", Rules: []iptables.Rule{
		{Match: "-p tcp --dport 8080 -m set --match-set " + name + " src", Action: "-j DROP"},
	}}))
	must(t, tb.SetInsertions("INPUT", []iptables.Rule{{Action: "-j trc-in"}}))
	must(t, sets.ApplyUpdates(ctx))
	must(t, tb.Apply(ctx))
	if connects() {
		t.Fatal("connected although the client is in the blocked set")
	}
	must(t, sets.RemoveMembers(name, []string{"192.0.2.2"}))
	must(t, sets.ApplyUpdates(ctx))
	if !connects() {
		t.Fatal("still blocked after leaving the set")
	}
}

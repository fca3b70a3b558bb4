package calc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

// spreadIface is a Terrace-style interface name spread like real ones (a hash of the identity).
func spreadIface(i int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("ep-%d", i)))
	return "trc" + hex.EncodeToString(sum[:])[:11]
}

// walkDispatch follows a packet on iface through the dispatch chains from root, as iptables
// would (interface matches with a trailing "+" are prefixes; -g jumps), and returns where it ends
// (a chain outside dispatch, or "DROP") and how many rules it evaluated.
func walkDispatch(t *testing.T, chains map[string][]iptables.Rule, root, flag, iface string) (string, int) {
	t.Helper()
	chain, evaluated := root, 0
	for hops := 0; hops < 20; hops++ {
		rules, ok := chains[chain]
		if !ok {
			t.Fatalf("dispatch for %s reaches missing chain %s", iface, chain)
		}
		next := ""
		for _, r := range rules {
			evaluated++
			if r.Match != "" {
				name, ok := strings.CutPrefix(r.Match, flag+" ")
				if !ok {
					t.Fatalf("unexpected match %q in %s", r.Match, chain)
				}
				if p, wild := strings.CutSuffix(name, "+"); !(name == iface || wild && strings.HasPrefix(iface, p)) {
					continue
				}
			}
			if r.Action == "-j DROP" {
				return "DROP", evaluated
			}
			next, _ = strings.CutPrefix(r.Action, "-g ")
			break
		}
		if next == "" {
			t.Fatalf("dispatch for %s falls off the end of %s", iface, chain)
		}
		if !strings.HasPrefix(next, root) {
			return next, evaluated
		}
		chain = next
	}
	t.Fatalf("dispatch for %s loops", iface)
	return "", 0
}

// TestDispatchTree: with many endpoints the dispatch chains branch on the interface name, every
// endpoint's traffic still reaches its own chains in a few dozen rules, unknown interfaces are
// dropped, non-Terrace names are matched too, and the branches go when the endpoints do.
func TestDispatchTree(t *testing.T) {
	const n = 1000
	var us []update
	ifaces := map[string]string{} // iface -> endpoint name
	for i := range n {
		ifc := spreadIface(i)
		ifaces[ifc] = fmt.Sprintf("w%d", i)
		us = append(us, wep("ns1", ifaces[ifc], testNode, ifc, nil, fmt.Sprintf("198.18.%d.%d/32", i/250, i%250)))
	}
	us = append(us, wep("ns1", "odd", testNode, "trcodd", nil, "198.19.0.1/32"))
	ifaces["trcodd"] = "odd"
	c := newCalc(us...)
	d := c.Desired()
	for _, tb := range []TableID{v4f, v6f} {
		chains := d.Tables[tb].Chains
		subs := 0
		for name := range chains {
			if isDispatchSubChain(name) {
				subs++
				if len(name) > iptables.MaxChainNameLen {
					t.Errorf("dispatch chain %s longer than %d", name, iptables.MaxChainNameLen)
				}
			}
		}
		if subs == 0 {
			t.Fatalf("%v: %d endpoints but no dispatch branches", tb, n)
		}
		most := 0
		for ifc, name := range ifaces {
			ep := &localEP{iface: ifc}
			names := ep.chainNames()
			for _, w := range []struct {
				root, flag, want string
			}{{ChainFromWlDispatch, "-i", names[dirEgress]}, {ChainToWlDispatch, "-o", names[dirIngress]}} {
				got, evaluated := walkDispatch(t, chains, w.root, w.flag, ifc)
				if got != w.want {
					t.Fatalf("%v: %s of %s (%s) reaches %s, want %s", tb, w.root, name, ifc, got, w.want)
				}
				most = max(most, evaluated)
			}
		}
		if most > 60 {
			t.Errorf("%v: up to %d rules evaluated to dispatch one packet; want a tree, not a list", tb, most)
		}
		for _, unknown := range []string{"trcfffffffffff", "trc00000000000", "trcx"} {
			if got, _ := walkDispatch(t, chains, ChainToWlDispatch, "-o", unknown); got != "DROP" {
				t.Errorf("%v: unknown interface %s reaches %s, want DROP", tb, unknown, got)
			}
		}
	}

	// Down to three endpoints: one flat chain again, the branches removed in the same Flush.
	var dels []update
	for i := 3; i < n; i++ {
		dels = append(dels, del(wep("ns1", fmt.Sprintf("w%d", i), testNode, spreadIface(i), nil)))
	}
	dels = append(dels, del(wep("ns1", "odd", testNode, "trcodd", nil)))
	feed(c, dels...)
	delta := c.Flush()
	removed := 0
	for _, ref := range delta.ChainsRemoved {
		if isDispatchSubChain(ref.Name) {
			removed++
		}
	}
	d = c.Desired()
	for name := range d.Tables[v4f].Chains {
		if isDispatchSubChain(name) {
			t.Errorf("dispatch branch %s left behind", name)
		}
	}
	if removed == 0 {
		t.Error("the delta removed no dispatch branch")
	}
	if got := len(chainOf(t, d, v4f, ChainToWlDispatch)); got != 4 {
		t.Errorf("flat dispatch has %d rules, want 3 endpoints and the drop", got)
	}
}

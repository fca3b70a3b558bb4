package calc

import (
	"fmt"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
	"github.com/terracenet/terrace/felix/dataplane/routes"
)

// TestRecordIntoRealWriters records a realistic history into the real writers' desired state (no
// kernel access happens before Apply) and checks they accept every set, chain and route, and end
// up with what Desired says.
func TestRecordIntoRealWriters(t *testing.T) {
	sets := ipsets.New(nil, ipsets.Options{})
	tables := map[TableID]TableWriter{}
	real := map[TableID]*iptables.Table{}
	for _, id := range []TableID{{4, "filter"}, {4, "nat"}, {6, "filter"}, {6, "nat"}, {6, "raw"}} {
		tb := iptables.NewTable(id.Table, nil, iptables.Options{})
		tables[id], real[id] = tb, tb
	}
	rw, err := routes.New(nil, routes.Config{Protocol: routes.ProtocolTerrace})
	if err != nil {
		t.Fatal(err)
	}
	w := Writers{IPSets: sets, Tables: tables, Routes: rw}
	for seed := range uint64(4) {
		final, blocks := finalState(seed)
		c, _ := replay(t, seed, final, blocks)
		// Replay again through a fresh calculator, recording every delta.
		c2 := New(Config{NodeName: testNode, IPv6: true})
		for i, u := range final {
			feed(c2, u)
			if i%7 == 0 {
				if err := c2.Flush().RecordInto(w); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
		}
		c2.SetBlocks(blocks)
		if err := c2.Flush().RecordInto(w); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		want := c.Desired()
		for name, s := range want.IPSets {
			diff(t, fmt.Sprint("seed ", seed, " set ", name), s.Members, nonNil(sets.Members(name)))
		}
		for id, ts := range want.Tables {
			diff(t, fmt.Sprint("seed ", seed, " chains ", id), sortedKeys(ts.Chains), real[id].ChainNames())
		}
		// Reset the writers' desired state for the next seed by recording removals.
		for name := range want.IPSets {
			sets.Remove(name)
		}
		for id, ts := range want.Tables {
			for n := range ts.Chains {
				real[id].RemoveChain(n)
			}
		}
		for p := range want.Routes {
			rw.Delete(p)
		}
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// TestRecordIntoMembers checks member deltas and removals reach a set writer.
func TestRecordIntoMembers(t *testing.T) {
	sets := ipsets.New(nil, ipsets.Options{})
	w := Writers{IPSets: sets}
	c := New(Config{NodeName: testNode})
	base := []update{
		wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32"),
		wep("ns1", "b", "host-2", "trc0123456789b", map[string]string{"app": "db"}, "198.18.0.2/32"),
		gnp("p", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "app == 'db'"}}}, nil),
	}
	feed(c, base...)
	if err := c.Flush().RecordInto(w); err != nil {
		t.Fatal(err)
	}
	name := selSet(ipsets.FamilyInet, "app == 'db'", "", "")
	diff(t, "initial", []string{"198.18.0.2"}, sets.Members(name))
	feed(c, wep("ns1", "b", "host-2", "trc0123456789b", map[string]string{"app": "db"}, "198.18.0.3/32"))
	if err := c.Flush().RecordInto(w); err != nil {
		t.Fatal(err)
	}
	diff(t, "moved", []string{"198.18.0.3"}, sets.Members(name))
	feed(c, del(base[2]))
	if err := c.Flush().RecordInto(w); err != nil {
		t.Fatal(err)
	}
	diff(t, "removed", []string(nil), sets.Members(name))
}

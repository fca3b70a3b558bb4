package calc

import (
	"fmt"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
)

func incrementalBase() []update {
	var us []update
	for i := range 10 {
		us = append(us, wep("ns1", fmt.Sprint("l", i), testNode, fmt.Sprintf("trc%011x", i), map[string]string{"app": "web"}, fmt.Sprintf("198.18.0.%d/32", i+1)))
		us = append(us, wep("ns1", fmt.Sprint("r", i), "host-2", fmt.Sprintf("trc%011x", 100+i), map[string]string{"app": "client"}, fmt.Sprintf("198.18.1.%d/32", i+1)))
	}
	us = append(us,
		gnp("web", nil, "app == 'web'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "role == 'frontend'"}}}, nil),
		gnp("db", nil, "app == 'db'", []api.Rule{{Action: "Allow", Source: api.EntityRule{Selector: "app == 'web'"}}}, nil),
	)
	return us
}

// TestIncrementalLabelChangeRemote: a remote endpoint's label change only touches the ipsets it
// enters; no endpoint or policy is re-rendered.
func TestIncrementalLabelChangeRemote(t *testing.T) {
	c := newCalc(incrementalBase()...)
	before := c.Stats()
	feed(c, wep("ns1", "r3", "host-2", fmt.Sprintf("trc%011x", 103), map[string]string{"app": "client", "role": "frontend"}, "198.18.1.4/32"))
	d := c.Flush()
	after := c.Stats()
	set := selSet(ipsets.FamilyInet, "role == 'frontend'", "", "")
	diff(t, "member delta", []IPSetMembers{{Name: set, Added: []string{"198.18.1.4"}, Removed: []string{}}}, d.IPSetMembers)
	diff(t, "no chain change", 0, len(d.ChainsUpdated)+len(d.ChainsRemoved))
	diff(t, "no endpoint status change", 0, len(d.Endpoints))
	diff(t, "endpoint renders", before.EndpointRenders, after.EndpointRenders)
	diff(t, "policy renders", before.PolicyRenders, after.PolicyRenders)
	diff(t, "policy match evaluations (remote endpoint)", before.PolicyMatchEvals, after.PolicyMatchEvals)

	// An address change with the same labels evaluates no selector.
	before = c.Stats()
	feed(c, wep("ns1", "r3", "host-2", fmt.Sprintf("trc%011x", 103), map[string]string{"app": "client", "role": "frontend"}, "198.18.1.99/32"))
	d = c.Flush()
	diff(t, "selector evaluations", before.SelectorEvals, c.Stats().SelectorEvals)
	diff(t, "address move", []IPSetMembers{{Name: set, Added: []string{"198.18.1.99"}, Removed: []string{"198.18.1.4"}}}, d.IPSetMembers)
}

// TestIncrementalLabelChangeLocal: a local endpoint moving into a policy re-renders that endpoint
// only (and the policy, which becomes active on this node).
func TestIncrementalLabelChangeLocal(t *testing.T) {
	c := newCalc(incrementalBase()...)
	before := c.Stats()
	feed(c, wep("ns1", "l4", testNode, fmt.Sprintf("trc%011x", 4), map[string]string{"app": "db"}, "198.18.0.5/32"))
	d := c.Flush()
	after := c.Stats()
	diff(t, "endpoint renders", before.EndpointRenders+1, after.EndpointRenders)
	diff(t, "policy renders (db becomes active)", before.PolicyRenders+1, after.PolicyRenders)
	var changed []string
	for _, cu := range d.ChainsUpdated {
		changed = append(changed, fmt.Sprint(cu.Table.IPVersion, " ", cu.Chain.Name))
	}
	dbChain := policyChain(api.KindGlobalNetworkPolicy, "", "db", dirIngress)
	// l4 is the first endpoint only db selects: its policy list is new too.
	dbList := listChain(dbChain)
	diff(t, "changed chains", []string{"4 " + dbChain, "4 " + dbList, "4 trc-tw-00000000004", "6 " + dbChain, "6 " + dbList, "6 trc-tw-00000000004"}, changed)
	diff(t, "status", 1, len(d.Endpoints))
	// The db policy's source set is new: created in full, without l4 which left app == 'web'.
	webSet := selSet(ipsets.FamilyInet, "app == 'web'", "", "")
	var want []string
	for i := range 10 {
		if i != 4 {
			want = append(want, fmt.Sprintf("198.18.0.%d", i+1))
		}
	}
	var got []string
	for _, s := range d.IPSetsReplaced {
		if s.Meta.Name == webSet {
			got = s.Members
		}
	}
	diff(t, "new set", sortedStrings(want), got)
	diff(t, "member deltas", []IPSetMembers(nil), d.IPSetMembers)
}

// TestIncrementalPolicyChange: changing one policy's rules re-renders that policy and the local
// endpoints it selects, nothing else.
func TestIncrementalPolicyChange(t *testing.T) {
	c := newCalc(incrementalBase()...)
	before := c.Stats()
	feed(c, gnp("web", nil, "app == 'web'", []api.Rule{{Action: "Deny", Protocol: tcp(), Destination: api.EntityRule{Ports: ports("22")}}}, nil))
	d := c.Flush()
	after := c.Stats()
	diff(t, "policy renders", before.PolicyRenders+1, after.PolicyRenders)
	diff(t, "endpoint renders", before.EndpointRenders+10, after.EndpointRenders)
	diff(t, "statuses", 10, len(d.Endpoints))
	// The endpoint chains still just jump to the policy: only the policy chains change.
	diff(t, "chains updated", 2, len(d.ChainsUpdated))
	// The frontend set is no longer used.
	diff(t, "sets removed", []string{selSet(ipsets.FamilyInet, "role == 'frontend'", "", ""), selSet(ipsets.FamilyInet6, "role == 'frontend'", "", "")}, sortedStrings(d.IPSetsRemoved))
	if e := c.Flush(); !e.Empty() {
		t.Errorf("second flush not empty: %+v", e)
	}
}

func sortedStrings(s []string) []string {
	m := map[string]bool{}
	for _, x := range s {
		m[x] = true
	}
	return sortedKeys(m)
}

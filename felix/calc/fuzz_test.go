package calc

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/ipsets"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

// FuzzRuleRender decodes a rule from JSON (as it arrives from the datastore, without validation)
// and checks that rendering never panics and only produces output the writers accept: valid
// chain names, rules without line breaks, valid set metadata with canonical members.
func FuzzRuleRender(f *testing.F) {
	for _, s := range []string{
		`{"action":"Allow"}`,
		`{"action":"Deny","protocol":"TCP","destination":{"ports":[80,"1000:2000","http"],"notPorts":[22]}}`,
		`{"action":"Allow","protocol":"ICMP","icmp":{"type":8,"code":0}}`,
		`{"action":"Pass","ipVersion":6,"source":{"nets":["2001:db8::/32","10.0.0.0/8","0.0.0.0/0"],"notNets":["::/0"]}}`,
		`{"action":"Log","source":{"selector":"app == 'x'","namespaceSelector":"global()","notSelector":"has(a)"}}`,
		`{"action":"Allow","protocol":58,"notProtocol":"UDP","destination":{"selector":"bad ((("}}`,
	} {
		f.Add(s, "app == 'web'")
	}
	f.Fuzz(func(t *testing.T, ruleJSON, labelSel string) {
		var r api.Rule
		if err := json.Unmarshal([]byte(ruleJSON), &r); err != nil {
			return
		}
		c := New(Config{NodeName: testNode, IPv6: true})
		feed(c,
			wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web", "x": labelSel}, "198.18.0.1/32", "2001:db8:1000::1/128"),
			netset("", "n", map[string]string{"app": "x"}, "0.0.0.0/0", "192.0.2.0/24"),
			np("ns1", "p", nil, "app == 'web'", []api.Rule{r}, []api.Rule{r}),
			gnp("g", nil, labelSel, []api.Rule{r}, nil),
		)
		c.Flush()
		d := c.Desired()
		for id, ts := range d.Tables {
			for name, rules := range ts.Chains {
				if err := iptables.ValidateChainName(name); err != nil {
					t.Fatalf("%v: %v", id, err)
				}
				for _, ru := range rules {
					if strings.ContainsAny(ru.Match+ru.Action+ru.Comment, "\n\r\x00") {
						t.Fatalf("rule with a line break: %+v", ru)
					}
				}
			}
		}
		for name, s := range d.IPSets {
			if err := s.Meta.Validate(); err != nil || name != s.Meta.Name {
				t.Fatalf("set %s: %v", name, err)
			}
			for _, m := range s.Members {
				if cm, err := ipsets.CanonicalMember(s.Meta.Type, s.Meta.Family, m); err != nil || cm != m {
					t.Fatalf("set %s member %q not canonical (%q, %v)", name, m, cm, err)
				}
			}
		}
	})
}

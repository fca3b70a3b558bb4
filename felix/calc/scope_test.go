package calc

import (
	"testing"

	"github.com/terracenet/terrace/datastore/selector"
)

// TestScopeSelectorsAll: all() in a namespaceSelector means every namespace and in a service
// account selector every service account, as in Calico: host endpoints and global network sets
// (no namespace) and endpoints without an account do not match; other selectors are unchanged.
func TestScopeSelectorsAll(t *testing.T) {
	wepSA := &labelled{namespace: "prod", labels: map[string]string{selector.NamespaceLabel: "prod", ServiceAccountLabel: "api"}}
	wepNoSA := &labelled{namespace: "prod", labels: map[string]string{selector.NamespaceLabel: "prod"}}
	global := &labelled{labels: map[string]string{"host": "yes"}} // a host endpoint or global network set
	for _, c := range []struct {
		what string
		sel  string
		sa   bool // a service account selector (else a namespace selector)
		l    *labelled
		want bool
	}{
		{"namespace all() on a workload", "all()", false, wepSA, true},
		{"namespace all() on a global entity", " all() ", false, global, false},
		{"namespace (all()) on a global entity: all() however written", "(all())", false, global, false},
		{"namespace all( ) on a workload", "all( )", false, wepSA, true},
		{"namespace global() on a global entity", "global()", false, global, true},
		{"a negative namespace selector still matches a global entity, as in Calico", "!has(team)", false, global, true},
		{"account all() on a workload with one", "all()", true, wepSA, true},
		{"account all() on a workload without one", "all()", true, wepNoSA, false},
		{"account all() on a global entity", "all()", true, global, false},
		{"account (all()) on a workload without one", "(all())", true, wepNoSA, false},
	} {
		parse := parseNamespaceSelector
		if c.sa {
			parse = parseServiceAccountSelector
		}
		s, err := parse(c.sel)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		var got bool
		if c.sa {
			got = s.EvaluateLabels(saView{c.l})
		} else {
			got = s.EvaluateLabels(nsView{c.l})
		}
		if got != c.want {
			t.Errorf("%s: %v, want %v", c.what, got, c.want)
		}
	}
}

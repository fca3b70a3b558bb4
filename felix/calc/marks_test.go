package calc

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/dataplane/iptables"
)

func TestMarksFromMask(t *testing.T) {
	for _, tc := range []struct {
		mask uint32
		want marks
	}{
		{0xffff0000, marks{0x10000, 0x20000}},
		{0xff000000, marks{0x1000000, 0x2000000}},
		{0x00000003, marks{0x1, 0x2}},
		{0x80000001, marks{0x1, 0x80000000}},
		{0x00500000, marks{0x100000, 0x400000}},
		{0x00100000, defaultMarks}, // one bit: refused by validation, never used
		{0, defaultMarks},
	} {
		if got := marksFromMask(tc.mask); got != tc.want {
			t.Errorf("marksFromMask(%#x) = %#x/%#x, want %#x/%#x", tc.mask, got.accept, got.pass, tc.want.accept, tc.want.pass)
		}
	}
}

// TestMarkMask: FelixConfiguration iptablesMarkMask moves every verdict mark Terrace uses (the
// verdict chains, host endpoint checks, endpoint chains and the shared policy lists, which get
// new names so no list is rewritten under its users), and removing it moves them back.
func TestMarkMask(t *testing.T) {
	web := wep("ns1", "a", testNode, "trc0123456789a", map[string]string{"app": "web"}, "198.18.0.1/32")
	pol := gnp("in", nil, "app == 'web'", []api.Rule{{Action: "Allow"}}, nil)
	c := newCalc(web, pol)
	listOf := func(d *Desired) string {
		t.Helper()
		rules := chainOf(t, d, v4f, "trc-tw-0123456789a")
		last := rules[len(rules)-1].Action
		if !strings.HasPrefix(last, "-g trc-pl-") {
			t.Fatalf("to-workload chain does not end in a goto to its policy list: %v", rules)
		}
		return strings.TrimPrefix(last, "-g ")
	}
	// Every mark match or change in the filter tables, as text.
	markUses := func(d *Desired) string {
		var lines []string
		for _, tb := range []TableID{v4f, v6f} {
			for name, rules := range d.Tables[tb].Chains {
				for _, r := range rules {
					if strings.Contains(r.Match+r.Action, "mark") {
						lines = append(lines, name+": "+r.Match+" "+r.Action)
					}
				}
			}
		}
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	before := c.Desired()
	list0 := listOf(before)
	if uses := markUses(before); !strings.Contains(uses, "0x10000") || strings.Contains(uses, "0x1000000") {
		t.Fatalf("default marks not in use:\n%s", uses)
	}

	cfg := felixCfg(api.DefaultConfigName, api.FelixConfigurationSpec{IptablesMarkMask: ptrTo(uint32(0xff000000))})
	feed(c, cfg)
	c.Flush()
	d := c.Desired()
	list1 := listOf(d)
	if list1 == list0 {
		t.Errorf("policy list kept its name %s after the marks changed", list0)
	}
	if _, ok := d.Tables[v4f].Chains[list0]; ok {
		t.Errorf("old policy list %s still desired", list0)
	}
	diff(t, "allow", []iptables.Rule{rule("", "-j MARK --set-xmark 0x1000000/0x1000000")}, chainOf(t, d, v4f, ChainAllow))
	diff(t, "pass", []iptables.Rule{rule("", "-j MARK --set-xmark 0x2000000/0x2000000")}, chainOf(t, d, v4f, ChainPass))
	diff(t, "list", []iptables.Rule{
		rule("-m mark --mark 0x0/0x2000000", "-j "+policyChain(api.KindGlobalNetworkPolicy, "", "in", dirIngress)),
		rule("-m mark --mark 0x1000000/0x1000000", "-j RETURN"),
		{Match: "-m mark --mark 0x0/0x2000000", Action: "-j " + ChainDeny, Comment: "no policy allowed the packet"},
	}, chainOf(t, d, v4f, list1))
	uses := markUses(d)
	if old := regexp.MustCompile(`0x[123]0000\b`).FindString(uses); old != "" {
		t.Errorf("a default mark (%s) is still used:\n%s", old, uses)
	}
	if !strings.Contains(uses, "trc-INPUT: -m mark --mark 0x1000000/0x1000000") || !strings.Contains(uses, "-j MARK --set-xmark 0x0/0x3000000") {
		t.Errorf("host endpoint checks or mark clearing not moved:\n%s", uses)
	}

	feed(c, del(cfg))
	c.Flush()
	after := c.Desired()
	if got := listOf(after); got != list0 {
		t.Errorf("policy list %s after the mask was removed, want %s again", got, list0)
	}
	if got, want := markUses(after), markUses(before); got != want {
		t.Errorf("marks after the mask was removed:\n%s\nwant:\n%s", got, want)
	}
}

package iptables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var ctx = context.Background()

func newTestTable(k *fakeKernel) *Table {
	return NewTable(k.table.Name, k, Options{Sleep: func(context.Context, time.Duration) error { return nil }})
}

func spec(chain string, rules []Rule, i int) string {
	return renderSpec(rules[i], RuleHashes(chain, rules)[i])
}

func ispec(kc string, rules []Rule, i int) string {
	return renderSpec(rules[i], insertHashes(kc, rules)[i])
}

var (
	fwRules = []Rule{
		{Match: "-m conntrack --ctstate INVALID", Action: "-j DROP"},
		{Match: "-m conntrack --ctstate RELATED,ESTABLISHED", Action: "-j ACCEPT"},
		{Match: "-i trc+", Action: "-j trc-from-wl"},
	}
	wlRules = []Rule{
		{Match: "-p tcp --dport 80", Action: "-j ACCEPT"},
		{Action: "-j DROP", Comment: "default deny"},
	}
	fwdJump = []Rule{{Action: "-j trc-FORWARD"}}
)

func setup(t *testing.T, tb *Table) {
	t.Helper()
	for _, c := range []Chain{{Name: "trc-FORWARD", Rules: fwRules}, {Name: "trc-from-wl", Rules: wlRules}} {
		if err := tb.UpdateChain(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.SetInsertions("FORWARD", fwdJump); err != nil {
		t.Fatal(err)
	}
}

func TestFirstApplyPayload(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	tb := newTestTable(k)
	setup(t, tb)
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	fj := []Rule{{Action: "-j trc-FORWARD", Comment: DefaultInsertComment}}
	want := strings.Join([]string{
		"*filter",
		":trc-FORWARD - [0:0]",
		":trc-from-wl - [0:0]",
		"-A trc-FORWARD " + spec("trc-FORWARD", fwRules, 0),
		"-A trc-FORWARD " + spec("trc-FORWARD", fwRules, 1),
		"-A trc-FORWARD " + spec("trc-FORWARD", fwRules, 2),
		"-A trc-from-wl " + spec("trc-from-wl", wlRules, 0),
		"-A trc-from-wl " + spec("trc-from-wl", wlRules, 1),
		"-I FORWARD 1 " + ispec("FORWARD", fj, 0),
		"COMMIT", "",
	}, "\n")
	if diff := cmp.Diff([]string{want}, k.restores); diff != "" {
		t.Fatalf("restore payloads (-want +got):\n%s", diff)
	}
	if !strings.Contains(want, `-m comment --comment "trc:`) || !strings.Contains(want, `--comment "terrace" -j trc-FORWARD`) {
		t.Fatalf("payload lacks the hash or Terrace comment:\n%s", want)
	}

	// A second apply with nothing changed writes nothing and does not even re-read the kernel.
	saves := k.saves
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if len(k.restores) != 1 || k.saves != saves {
		t.Fatalf("no-op apply wrote %d payloads / read %d times", len(k.restores)-1, k.saves-saves)
	}
	// Nor does a resync of an untouched kernel write anything.
	if err := tb.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(k.restores) != 1 {
		t.Fatalf("resync of a clean kernel wrote:\n%s", k.restores[len(k.restores)-1])
	}
}

func TestOneRuleChangedRewritesOnlyChangedPart(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		ops   func(r []Rule) []string
	}{
		{
			name:  "last rule changed",
			rules: []Rule{fwRules[0], fwRules[1], {Match: "-i trc+", Action: "-j trc-from-wl", Comment: "x"}},
			ops: func(r []Rule) []string {
				return []string{"-R trc-FORWARD 3 " + spec("trc-FORWARD", r, 2)}
			},
		},
		{
			name:  "middle rule changed rewrites it and those after it",
			rules: []Rule{fwRules[0], {Match: "-m conntrack --ctstate ESTABLISHED", Action: "-j ACCEPT"}, fwRules[2]},
			ops: func(r []Rule) []string {
				return []string{"-R trc-FORWARD 2 " + spec("trc-FORWARD", r, 1), "-R trc-FORWARD 3 " + spec("trc-FORWARD", r, 2)}
			},
		},
		{
			name:  "rule appended",
			rules: append(append([]Rule{}, fwRules...), Rule{Action: "-j DROP"}),
			ops: func(r []Rule) []string {
				return []string{"-A trc-FORWARD " + spec("trc-FORWARD", r, 3)}
			},
		},
		{
			name:  "rules removed from the end",
			rules: fwRules[:1],
			ops: func(r []Rule) []string {
				return []string{"-D trc-FORWARD 3", "-D trc-FORWARD 2"}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
			tb := newTestTable(k)
			setup(t, tb)
			if err := tb.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tb.UpdateChain(Chain{Name: "trc-FORWARD", Rules: tc.rules}); err != nil {
				t.Fatal(err)
			}
			if err := tb.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			want := "*filter\n" + strings.Join(tc.ops(tc.rules), "\n") + "\nCOMMIT\n"
			if diff := cmp.Diff(want, k.restores[len(k.restores)-1]); diff != "" {
				t.Fatalf("payload (-want +got):\n%s", diff)
			}
			// The writer's cache must agree with the kernel after the patch.
			fresh := newTestTable(k)
			setup(t, fresh)
			_ = fresh.UpdateChain(Chain{Name: "trc-FORWARD", Rules: tc.rules})
			n := len(k.restores)
			if err := fresh.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			if len(k.restores) != n {
				t.Fatalf("kernel differs from desired after patch; fresh writer wrote:\n%s", k.restores[n])
			}
		})
	}
}

func TestResyncRepairsDriftAndLeavesForeignAlone(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(k *fakeKernel)
	}{
		{"our chain deleted", func(k *fakeKernel) {
			delete(k.table.Chains, "trc-from-wl")
			k.table.Order = slices.DeleteFunc(k.table.Order, func(s string) bool { return s == "trc-from-wl" })
		}},
		{"rule deleted from our chain", func(k *fakeKernel) {
			c := k.table.Chains["trc-FORWARD"]
			c.Rules = c.Rules[1:]
		}},
		{"foreign rule appended to our chain", func(k *fakeKernel) { k.rule("trc-from-wl", "-j ACCEPT") }},
		{"our jump deleted", func(k *fakeKernel) {
			c := k.table.Chains["FORWARD"]
			c.Rules = slices.DeleteFunc(c.Rules, func(r SavedRule) bool { return r.Hash != "" })
		}},
		{"foreign rule inserted above our jump", func(k *fakeKernel) {
			c := k.table.Chains["FORWARD"]
			c.Rules = append([]SavedRule{{Spec: "-s 192.0.2.9/32 -j DROP"}}, c.Rules...)
		}},
		{"our jump duplicated further down", func(k *fakeKernel) {
			c := k.table.Chains["FORWARD"]
			c.Rules = append(c.Rules, c.Rules[0])
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
			// Another tool's state, present before we start.
			k.rule("INPUT", "-s 192.0.2.1/32 -j ACCEPT")
			k.chain("KUBE-SERVICES")
			k.rule("KUBE-SERVICES", "-d 198.51.100.1/32 -j RETURN")
			k.rule("FORWARD", "-j KUBE-SERVICES")
			tb := newTestTable(k)
			setup(t, tb)
			tb.SetInSync()
			if err := tb.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			want := k.table.Render()
			tc.tamper(k)
			if k.table.Render() == want {
				t.Fatal("tamper changed nothing")
			}
			// A plain Apply trusts its cache; only Resync looks at the kernel again.
			if err := tb.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			got := k.table.Render()
			if tc.name == "foreign rule inserted above our jump" {
				// Our jump goes back to the top; the foreign rule stays, just below it.
				if !strings.Contains(got, "-A FORWARD -s 192.0.2.9/32 -j DROP") {
					t.Fatalf("foreign rule lost:\n%s", got)
				}
				got = strings.Replace(got, "-A FORWARD -s 192.0.2.9/32 -j DROP\n", "", 1)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("kernel after resync (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeletesHeldUntilInSync(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	// State left by a previous run: a chain and a jump we no longer want, plus foreign state.
	k.chain("trc-old")
	k.rule("trc-old", `-m comment --comment "trc:oldoldoldoldold1" -j DROP`)
	k.rule("INPUT", `-m comment --comment "trc:oldoldoldoldold2" -m comment --comment "terrace" -j trc-old`)
	k.rule("INPUT", "-s 192.0.2.1/32 -j ACCEPT")
	k.chain("foreign")
	k.rule("foreign", "-j RETURN")

	tb := newTestTable(k)
	setup(t, tb)
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.table.Chains["trc-old"]; !ok {
		t.Fatal("stale chain deleted before in-sync")
	}
	if n := len(k.table.Chains["INPUT"].Rules); n != 2 {
		t.Fatalf("INPUT has %d rules before in-sync, want the stale jump kept (2)", n)
	}

	tb.SetInSync()
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	last := k.restores[len(k.restores)-1]
	wantPayload := "*filter\n:trc-old - [0:0]\n" +
		`-D INPUT -m comment --comment "trc:oldoldoldoldold2" -m comment --comment "terrace" -j trc-old` +
		"\n-X trc-old\nCOMMIT\n"
	if diff := cmp.Diff(wantPayload, last); diff != "" {
		t.Fatalf("in-sync payload (-want +got):\n%s", diff)
	}
	if _, ok := k.table.Chains["trc-old"]; ok {
		t.Fatal("stale chain survived in-sync apply")
	}
	if diff := cmp.Diff([]SavedRule{{Spec: "-s 192.0.2.1/32 -j ACCEPT"}}, k.table.Chains["INPUT"].Rules); diff != "" {
		t.Fatalf("INPUT (-want +got):\n%s", diff)
	}
	if _, ok := k.table.Chains["foreign"]; !ok {
		t.Fatal("foreign chain deleted")
	}
}

func TestRemoveChainAndInsertions(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	tb := newTestTable(k)
	setup(t, tb)
	tb.SetInSync()
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	tb.RemoveChain("trc-from-wl")
	if err := tb.UpdateChain(Chain{Name: "trc-FORWARD", Rules: fwRules[:2]}); err != nil {
		t.Fatal(err)
	}
	if err := tb.SetInsertions("FORWARD", nil); err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"INPUT", "FORWARD", "OUTPUT", "trc-FORWARD"}, k.table.Order); diff != "" {
		t.Fatalf("chains (-want +got):\n%s", diff)
	}
	if n := len(k.table.Chains["FORWARD"].Rules); n != 0 {
		t.Fatalf("FORWARD still has %d rules", n)
	}
}

func TestApplyRetriesAfterFailure(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	k.failNext = errors.New("iptables-restore: line 3 failed")
	var slept []time.Duration
	tb := NewTable("filter", k, Options{Backoff: 10 * time.Millisecond, Sleep: func(_ context.Context, d time.Duration) error {
		slept = append(slept, d)
		return nil
	}})
	setup(t, tb)
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if len(k.restores) != 2 || k.saves != 2 {
		t.Fatalf("restores=%d saves=%d, want a re-read and one retry", len(k.restores), k.saves)
	}
	if diff := cmp.Diff([]time.Duration{10 * time.Millisecond}, slept); diff != "" {
		t.Fatal(diff)
	}

	// Persistent failure: every attempt fails and the error says so.
	k2 := &failingRunner{fakeKernel: newFakeKernel("filter", "INPUT")}
	tb2 := NewTable("filter", k2, Options{MaxAttempts: 3, Sleep: func(context.Context, time.Duration) error { return nil }})
	setup(t, tb2)
	err := tb2.Apply(ctx)
	if err == nil || !strings.Contains(err.Error(), "boom 3") || !strings.Contains(err.Error(), "apply iptables table filter") {
		t.Fatalf("err = %v", err)
	}
}

type failingRunner struct {
	*fakeKernel
	n int
}

func (f *failingRunner) Restore(context.Context, []byte) error {
	f.n++
	return fmt.Errorf("boom %d", f.n)
}

func TestValidation(t *testing.T) {
	tb := newTestTable(newFakeKernel("filter"))
	bad := []Chain{
		{Name: "INPUT"},
		{Name: "trc-" + strings.Repeat("x", 25)},
		{Name: "trc-ok", Rules: []Rule{{Match: "-p tcp\n-A INPUT", Action: "-j DROP"}}},
		{Name: "trc-ok", Rules: []Rule{{Action: "-j DROP", Comment: `a"b`}}},
		{Name: "trc-ok", Rules: []Rule{{}}},
		{Name: "trc-ok", Rules: []Rule{{Match: `-i eth"1`, Action: "-j ACCEPT"}}},
		{Name: "trc-ok", Rules: []Rule{{Action: `-j LOG --log-prefix "x`}}},
	}
	for _, c := range bad {
		if err := tb.UpdateChain(c); err == nil {
			t.Errorf("UpdateChain(%+v) accepted", c)
		}
	}
	if err := tb.SetInsertions("trc-x", fwdJump); err == nil {
		t.Error("insertions into a trc- chain accepted")
	}
	if err := tb.UpdateChain(Chain{Name: "trc-" + strings.Repeat("x", 24)}); err != nil {
		t.Errorf("28-char name rejected: %v", err)
	}
}

func TestRuleHashes(t *testing.T) {
	a := RuleHashes("trc-a", fwRules)
	if diff := cmp.Diff(a, RuleHashes("trc-a", fwRules)); diff != "" {
		t.Fatal("hashes not deterministic")
	}
	b := RuleHashes("trc-b", fwRules)
	changed := append([]Rule{{Action: "-j RETURN"}}, fwRules[1:]...)
	c := RuleHashes("trc-a", changed)
	for i := range a {
		if len(a[i]) != hashLen {
			t.Errorf("hash %q has length %d", a[i], len(a[i]))
		}
		if a[i] == b[i] {
			t.Errorf("rule %d: same hash in different chains", i)
		}
		// Changing rule 0 changes every later hash (they chain), so positions stay meaningful.
		if a[i] == c[i] {
			t.Errorf("rule %d: hash unchanged after earlier rule changed", i)
		}
	}
}

func TestUndeletableStaleChainDoesNotBlockUpdates(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	k.chain("trc-old")
	k.chain("KUBE-X")
	k.rule("KUBE-X", "-j trc-old") // a foreign reference makes -X fail
	tb := newTestTable(k)
	setup(t, tb)
	tb.SetInSync()
	err := tb.Apply(ctx)
	if err == nil || !strings.Contains(err.Error(), "stale chains not deleted") {
		t.Fatalf("err = %v, want a stale-chain report", err)
	}
	if _, ok := k.table.Chains["trc-FORWARD"]; !ok {
		t.Fatal("updates were held back by the undeletable chain")
	}
	if _, ok := k.table.Chains["trc-old"]; !ok {
		t.Fatal("referenced chain vanished")
	}
	// Once the reference is gone the next Apply deletes it.
	k.table.Chains["KUBE-X"].Rules = nil
	must(t, tb.Apply(ctx))
	if _, ok := k.table.Chains["trc-old"]; ok {
		t.Fatal("stale chain kept after its reference went")
	}
}

func TestResyncCatchesMiddleRuleReplaced(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	tb := newTestTable(k)
	setup(t, tb)
	must(t, tb.Apply(ctx))
	want := k.table.Render()
	k.table.Chains["trc-FORWARD"].Rules[1] = SavedRule{Spec: "-j ACCEPT"} // same length, same last hash
	must(t, tb.Resync(ctx))
	if diff := cmp.Diff(want, k.table.Render()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff("*filter\n-R trc-FORWARD 2 "+spec("trc-FORWARD", fwRules, 1)+"\nCOMMIT\n", k.restores[len(k.restores)-1]); diff != "" {
		t.Fatalf("payload (-want +got):\n%s", diff)
	}
}

func TestChainName(t *testing.T) {
	a, b := ChainName("pi", "wep/ns/pod-a"), ChainName("pi", "wep/ns/pod-b")
	for _, n := range []string{a, b, ChainName("a-very-long-kind-name", "x")} {
		if err := ValidateChainName(n); err != nil {
			t.Error(err)
		}
	}
	if a == b || a != ChainName("pi", "wep/ns/pod-a") || !strings.HasPrefix(a, "trc-pi-") {
		t.Errorf("chain names not distinct/stable: %s %s", a, b)
	}
}

// TestPrime: a read made ahead is what the first Apply plans from (no second iptables-save), it
// is used once, and a stale one or a Resync reads the kernel again.
func TestPrime(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	k.rule("FORWARD", "-j FOREIGN-RULE")
	tb := newTestTable(k)
	if err := tb.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	if k.saves != 1 || len(k.restores) != 0 {
		t.Fatalf("prime: %d saves, %d restores; want one read and no write", k.saves, len(k.restores))
	}
	setup(t, tb) // desired state arrives after the read, as while a datastore is still listed
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if k.saves != 1 {
		t.Errorf("first apply read the kernel again (%d saves)", k.saves)
	}
	if got := k.table.Chains["FORWARD"].Rules; len(got) != 2 || got[1].Spec != "-j FOREIGN-RULE" {
		t.Errorf("FORWARD after apply: %+v; want our jump above the foreign rule", got)
	}

	// A read older than PrimeMaxAge is not trusted.
	k2 := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	tb2 := newTestTable(k2)
	if err := tb2.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	tb2.primedAt = time.Now().Add(-PrimeMaxAge - time.Second)
	setup(t, tb2)
	if err := tb2.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if k2.saves != 2 {
		t.Errorf("stale prime: %d saves, want the prime's and a fresh one", k2.saves)
	}

	// Resync never plans from a primed read.
	if err := tb2.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	k2.table.Chains["trc-from-wl"].Rules = nil // tampering after the read
	if err := tb2.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(k2.table.Chains["trc-from-wl"].Rules); got != len(wlRules) {
		t.Errorf("resync planned from the primed read: trc-from-wl has %d rules, want %d", got, len(wlRules))
	}
}

// TestReadAhead: a resync read made on another goroutine repairs drift without a second read
// when nothing was written in between, and is not trusted when something was: then finish reads
// again, so a change applied meanwhile is neither lost nor applied twice.
func TestReadAhead(t *testing.T) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	tb := newTestTable(k)
	setup(t, tb)
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	want := k.table.Render()

	k.table.Chains["trc-from-wl"].Rules = nil // tampering
	read, finish := tb.ReadAhead()
	done := make(chan struct{})
	go func() { read(ctx); close(done) }()
	<-done
	saves := k.saves
	if err := finish(ctx); err != nil {
		t.Fatal(err)
	}
	if k.saves != saves {
		t.Errorf("finish read again (%d saves) though nothing was written since the read", k.saves-saves)
	}
	if got := k.table.Render(); got != want {
		t.Errorf("not repaired from the read-ahead:\n%s\nwant:\n%s", got, want)
	}

	// A write between the read and finish makes the read stale.
	read, finish = tb.ReadAhead()
	read(ctx)
	more := append(slices.Clone(wlRules), Rule{Match: "-p udp --dport 53", Action: "-j ACCEPT"})
	if err := tb.UpdateChain(Chain{Name: "trc-from-wl", Rules: more}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	saves = k.saves
	if err := finish(ctx); err != nil {
		t.Fatal(err)
	}
	if k.saves != saves+1 {
		t.Errorf("finish after a write: %d saves, want a fresh read", k.saves-saves)
	}
	if got := len(k.table.Chains["trc-from-wl"].Rules); got != len(more) {
		t.Errorf("trc-from-wl has %d rules after finish, want %d", got, len(more))
	}
}

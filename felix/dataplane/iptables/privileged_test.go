package iptables

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/internal/nstest"
)

// TestRealBackends programs a fresh namespace with the real iptables-restore of both back ends,
// tampers with the result using the real iptables tool and checks Resync repairs it while a
// foreign rule and chain survive.
func TestRealBackends(t *testing.T) {
	for _, b := range []Backend{BackendLegacy, BackendNFT} {
		for _, v := range []int{4, 6} {
			t.Run(string(b)+map[int]string{4: "-v4", 6: "-v6"}[v], func(t *testing.T) {
				base := map[int]string{4: "iptables", 6: "ip6tables"}[v] + "-" + string(b)
				ns := nstest.New(t, base+"-restore", base+"-save", base)
				cmd := cmdrun.InNetns(ns)
				src := map[int]string{4: "192.0.2.1/32", 6: "2001:db8::1/128"}[v]
				// Foreign state, installed before Terrace starts.
				nstest.Run(t, ns, base, "-A", "INPUT", "-s", src, "-j", "ACCEPT")
				nstest.Run(t, ns, base, "-N", "OTHER")
				nstest.Run(t, ns, base, "-A", "OTHER", "-j", "RETURN")

				tb := NewTable("filter", NewExecRunner(cmd, b, v), Options{})
				rules := []Rule{
					{Match: "-m conntrack --ctstate RELATED,ESTABLISHED", Action: "-j ACCEPT"},
					{Match: "-p tcp --dport 80", Action: "-j ACCEPT"},
					{Action: "-j DROP", Comment: "default deny"},
				}
				must(t, tb.UpdateChain(Chain{Name: "trc-wl", Rules: rules}))
				must(t, tb.UpdateChain(Chain{Name: "trc-FORWARD", Rules: []Rule{{Match: "-o trc+", Action: "-g trc-wl"}}}))
				must(t, tb.SetInsertions("FORWARD", []Rule{{Action: "-j trc-FORWARD"}}))
				must(t, tb.SetInsertions("INPUT", []Rule{{Action: "-j trc-FORWARD"}}))
				tb.SetInSync()
				must(t, tb.Apply(ctx))
				clean := save(t, ns, base)
				if !strings.Contains(clean, "-A INPUT -m comment --comment \"trc:") || !strings.Contains(clean, "-A trc-wl") {
					t.Fatalf("rules missing after apply:\n%s", clean)
				}
				// Ours must come first in INPUT, ahead of the foreign rule.
				if strings.Index(clean, "-A INPUT -m comment") > strings.Index(clean, "-A INPUT -s") {
					t.Fatalf("our jump is not at the top of INPUT:\n%s", clean)
				}
				// A second writer reading this kernel finds nothing to do.
				fresh := NewTable("filter", &countingRunner{Runner: NewExecRunner(cmd, b, v)}, Options{})
				must(t, fresh.UpdateChain(Chain{Name: "trc-wl", Rules: rules}))
				must(t, fresh.UpdateChain(Chain{Name: "trc-FORWARD", Rules: []Rule{{Match: "-o trc+", Action: "-g trc-wl"}}}))
				must(t, fresh.SetInsertions("FORWARD", []Rule{{Action: "-j trc-FORWARD"}}))
				must(t, fresh.SetInsertions("INPUT", []Rule{{Action: "-j trc-FORWARD"}}))
				must(t, fresh.Apply(ctx))
				if n := fresh.run.(*countingRunner).restores; n != 0 {
					t.Fatalf("writer reading a clean kernel restored %d times (hash mismatch against real iptables-save?)", n)
				}

				// Tamper: delete our jump from FORWARD, a rule from our chain, and the trc-FORWARD
				// rule; insert a foreign rule above our INPUT jump.
				nstest.Run(t, ns, base, "-D", "FORWARD", "1")
				nstest.Run(t, ns, base, "-D", "trc-wl", "2")
				nstest.Run(t, ns, base, "-F", "trc-FORWARD")
				nstest.Run(t, ns, base, "-I", "INPUT", "1", "-s", src, "-j", "DROP")
				must(t, tb.Resync(ctx))
				got := save(t, ns, base)
				want := strings.Replace(clean, "-A INPUT -s "+src+" -j ACCEPT", "-A INPUT -s "+src+" -j DROP\n-A INPUT -s "+src+" -j ACCEPT", 1)
				if got != want {
					t.Fatalf("after resync:\n%s\nwant:\n%s", got, want)
				}

				// Dropping everything removes only ours.
				tb.RemoveChain("trc-wl")
				tb.RemoveChain("trc-FORWARD")
				must(t, tb.SetInsertions("FORWARD", nil))
				must(t, tb.SetInsertions("INPUT", nil))
				must(t, tb.Apply(ctx))
				got = save(t, ns, base)
				if strings.Contains(got, "trc") || !strings.Contains(got, ":OTHER") || !strings.Contains(got, "-A OTHER -j RETURN") {
					t.Fatalf("after removing everything:\n%s", got)
				}
			})
		}
	}
}

type countingRunner struct {
	Runner
	restores int
}

func (c *countingRunner) Restore(ctx2 context.Context, in []byte) error {
	c.restores++
	return c.Runner.Restore(ctx2, in)
}

func save(t *testing.T, ns, base string) string {
	t.Helper()
	out := nstest.Run(t, ns, base+"-save", "-t", "filter")
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRealDetectAndNat checks back-end detection against real rules and a nat-table writer.
func TestRealDetectAndNat(t *testing.T) {
	for _, b := range []Backend{BackendLegacy, BackendNFT} {
		t.Run(string(b), func(t *testing.T) {
			ns := nstest.New(t, "iptables-legacy", "iptables-nft", "iptables-legacy-save", "iptables-nft-save")
			cmd := cmdrun.InNetns(ns)
			// Another tool already uses back end b: Terrace must join it.
			nstest.Run(t, ns, "iptables-"+string(b), "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN")
			if got := DetectBackend(ctx, cmd); got != b {
				t.Fatalf("DetectBackend = %s, want %s", got, b)
			}
			tb := NewTable("nat", NewExecRunner(cmd, b, 4), Options{})
			must(t, tb.UpdateChain(Chain{Name: "trc-nat-outgoing", Rules: []Rule{
				{Match: "-s 198.18.0.0/15 ! -d 198.18.0.0/15", Action: "-j MASQUERADE"},
			}}))
			must(t, tb.SetInsertions("POSTROUTING", []Rule{{Action: "-j trc-nat-outgoing"}}))
			must(t, tb.Apply(ctx))
			got := nstest.Run(t, ns, "iptables-"+string(b)+"-save", "-t", "nat")
			for _, want := range []string{
				`-A POSTROUTING -m comment --comment "trc:`,
				"-A POSTROUTING -s 192.0.2.0/24 -j RETURN",
				"-j MASQUERADE",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("nat table lacks %q:\n%s", want, got)
				}
			}
		})
	}
}

// TestRealAppendMode: with SetAppend the jumps stand at the end of the kernel chain, after a
// foreign rule; a rule another tool appends later is stepped over again at the next resync; and
// switching back to the top moves them without touching the foreign rules.
func TestRealAppendMode(t *testing.T) {
	for _, b := range []Backend{BackendLegacy, BackendNFT} {
		t.Run(string(b), func(t *testing.T) {
			base := "iptables-" + string(b)
			ns := nstest.New(t, base+"-restore", base+"-save", base)
			nstest.Run(t, ns, base, "-A", "INPUT", "-s", "192.0.2.1/32", "-j", "ACCEPT")
			tb := NewTable("filter", NewExecRunner(cmdrun.InNetns(ns), b, 4), Options{})
			must(t, tb.UpdateChain(Chain{Name: "trc-INPUT", Rules: []Rule{{Match: "-p tcp --dport 80", Action: "-j ACCEPT"}}}))
			must(t, tb.SetInsertions("INPUT", []Rule{{Action: "-j trc-INPUT"}, {Action: "-j RETURN", Comment: "second"}}))
			tb.SetAppend(true)
			tb.SetInSync()
			must(t, tb.Apply(ctx))
			input := func() []string {
				var out []string
				for _, l := range strings.Split(save(t, ns, base), "\n") {
					if strings.HasPrefix(l, "-A INPUT ") {
						switch {
						case strings.Contains(l, "-j trc-INPUT"):
							out = append(out, "ours1")
						case strings.Contains(l, "--comment second"):
							out = append(out, "ours2")
						default:
							out = append(out, strings.TrimPrefix(l, "-A INPUT "))
						}
					}
				}
				return out
			}
			check := func(step string, want ...string) {
				t.Helper()
				if got := input(); !slices.Equal(got, want) {
					t.Fatalf("%s: INPUT is %q, want %q", step, got, want)
				}
			}
			foreign1, foreign2 := "-s 192.0.2.1/32 -j ACCEPT", "-s 192.0.2.2/32 -j DROP"
			check("append", foreign1, "ours1", "ours2")
			nstest.Run(t, ns, base, "-A", "INPUT", "-s", "192.0.2.2/32", "-j", "DROP")
			must(t, tb.Resync(ctx))
			check("resync after a foreign append", foreign1, foreign2, "ours1", "ours2")
			tb.SetAppend(false)
			must(t, tb.Apply(ctx))
			check("back to insert", "ours1", "ours2", foreign1, foreign2)
			tb.SetAppend(true)
			must(t, tb.Apply(ctx))
			check("append again", foreign1, foreign2, "ours1", "ours2")

			// The writer last saw INPUT holding only its own rules, at the top; a rule appended
			// since must not make "ours are at the end" look true when switching to append.
			nstest.Run(t, ns, base, "-F", "INPUT")
			tb.SetAppend(false)
			must(t, tb.Resync(ctx))
			check("only ours", "ours1", "ours2")
			nstest.Run(t, ns, base, "-A", "INPUT", "-s", "192.0.2.3/32", "-j", "DROP")
			tb.SetAppend(true)
			must(t, tb.Apply(ctx))
			check("append after an unseen foreign rule", "-s 192.0.2.3/32 -j DROP", "ours1", "ours2")
		})
	}
}

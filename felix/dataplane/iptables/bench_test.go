package iptables

import (
	"fmt"
	"testing"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/internal/nstest"
)

// benchChains returns 100 chains of 100 rules (10k rules), shaped like per-endpoint policy chains.
func benchChains(variant int) []Chain {
	var out []Chain
	for c := 0; c < 100; c++ {
		ch := Chain{Name: fmt.Sprintf("trc-pi-%04d", c)}
		for r := 0; r < 100; r++ {
			ch.Rules = append(ch.Rules, Rule{
				Match:  fmt.Sprintf("-p tcp -s 198.18.%d.%d/32 --dport %d", c, r, 1000+r+variant),
				Action: "-j ACCEPT",
			})
		}
		out = append(out, ch)
	}
	return out
}

func loadTable(b *testing.B, tb *Table, chains []Chain) {
	for _, c := range chains {
		if err := tb.UpdateChain(c); err != nil {
			b.Fatal(err)
		}
	}
	if err := tb.SetInsertions("FORWARD", []Rule{{Action: "-j trc-pi-0000"}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkInitial10kRules: first programming of 10k rules into an empty namespace.
func BenchmarkInitial10kRules(b *testing.B) {
	for _, be := range []Backend{BackendLegacy, BackendNFT} {
		b.Run(string(be), func(b *testing.B) {
			chains := benchChains(0)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := nstest.New(b, "iptables-"+string(be)+"-restore")
				tb := NewTable("filter", NewExecRunner(cmdrun.InNetns(ns), be, 4), Options{})
				loadTable(b, tb, chains)
				b.StartTimer()
				if err := tb.Apply(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOneChainChange10k: one rule of one chain changes while 10k rules are programmed.
func BenchmarkOneChainChange10k(b *testing.B) {
	for _, be := range []Backend{BackendLegacy, BackendNFT} {
		b.Run(string(be), func(b *testing.B) {
			ns := nstest.New(b, "iptables-"+string(be)+"-restore")
			tb := NewTable("filter", NewExecRunner(cmdrun.InNetns(ns), be, 4), Options{})
			chains := benchChains(0)
			loadTable(b, tb, chains)
			if err := tb.Apply(ctx); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := chains[50]
				c.Rules = append([]Rule{}, c.Rules...)
				c.Rules[99] = Rule{Match: fmt.Sprintf("-p udp --dport %d", 2000+i%2), Action: "-j ACCEPT"}
				if err := tb.UpdateChain(c); err != nil {
					b.Fatal(err)
				}
				if err := tb.Apply(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPlanOneChainChange10k measures the writer's own CPU cost (hashing, diffing, rendering)
// for a one-rule change with 10k rules programmed, without any tool.
func BenchmarkPlanOneChainChange10k(b *testing.B) {
	k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
	tb := NewTable("filter", k, Options{})
	chains := benchChains(0)
	loadTable(b, tb, chains)
	if err := tb.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := chains[50]
		c.Rules = append([]Rule{}, c.Rules...)
		c.Rules[99] = Rule{Match: fmt.Sprintf("-p udp --dport %d", 2000+i%2), Action: "-j ACCEPT"}
		if err := tb.UpdateChain(c); err != nil {
			b.Fatal(err)
		}
		p := tb.plan(false)
		if len(p.ops) != 1 {
			b.Fatalf("plan has %d ops, want 1", len(p.ops))
		}
		_ = p.render("filter")
	}
}

// BenchmarkRawRestore10k is the anchor for BenchmarkInitial10kRules: the same payload piped to
// iptables-restore directly, without reading the kernel or planning.
func BenchmarkRawRestore10k(b *testing.B) {
	for _, be := range []Backend{BackendLegacy, BackendNFT} {
		b.Run(string(be), func(b *testing.B) {
			k := newFakeKernel("filter", "INPUT", "FORWARD", "OUTPUT")
			tb := NewTable("filter", k, Options{})
			loadTable(b, tb, benchChains(0))
			if err := tb.Apply(ctx); err != nil {
				b.Fatal(err)
			}
			payload := []byte(k.restores[0])
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := nstest.New(b, "iptables-"+string(be)+"-restore")
				run := NewExecRunner(cmdrun.InNetns(ns), be, 4)
				b.StartTimer()
				if err := run.Restore(ctx, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package ipsets

import (
	"fmt"
	"strings"
	"testing"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/internal/nstest"
)

func members(n, offset int) []string {
	out := make([]string, n)
	for i := range out {
		v := i + offset
		out[i] = fmt.Sprintf("198.%d.%d.%d", 18+(v>>16)&1, (v>>8)&255, v&255)
	}
	return out
}

var benchMeta = Meta{Name: "trcBench", Type: TypeHashIP, Family: FamilyInet}

// BenchmarkRestore100k: a new 100k-member set in one ipset restore.
func BenchmarkRestore100k(b *testing.B) {
	ms := members(100000, 0)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := nstest.New(b, "ipset")
		r := New(cmdrun.InNetns(ns), Options{})
		if err := r.AddOrReplace(benchMeta, ms); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := r.Apply(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLabelChange100k: one member moves in or out of a 100k-member set.
func BenchmarkLabelChange100k(b *testing.B) {
	ns := nstest.New(b, "ipset")
	r := New(cmdrun.InNetns(ns), Options{})
	if err := r.AddOrReplace(benchMeta, members(100000, 0)); err != nil {
		b.Fatal(err)
	}
	if err := r.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		if i%2 == 0 {
			err = r.AddMembers(benchMeta.Name, []string{"198.19.200.1"})
		} else {
			err = r.RemoveMembers(benchMeta.Name, []string{"198.19.200.1"})
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Apply(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSwap100k: the whole membership of a 100k set is replaced via temp set and swap.
func BenchmarkSwap100k(b *testing.B) {
	ns := nstest.New(b, "ipset")
	r := New(cmdrun.InNetns(ns), Options{})
	sets := [][]string{members(100000, 0), members(100000, 100000)}
	if err := r.AddOrReplace(benchMeta, sets[0]); err != nil {
		b.Fatal(err)
	}
	if err := r.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.AddOrReplace(benchMeta, sets[(i+1)%2]); err != nil {
			b.Fatal(err)
		}
		if err := r.Apply(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawRestore100k is the anchor for BenchmarkRestore100k: the same input piped to ipset
// restore directly.
func BenchmarkRawRestore100k(b *testing.B) {
	f := newFakeIpset()
	r := New(f, Options{})
	if err := r.AddOrReplace(benchMeta, members(100000, 0)); err != nil {
		b.Fatal(err)
	}
	if err := r.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	payload := []byte(f.restores[0])
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := nstest.New(b, "ipset")
		b.StartTimer()
		if _, err := cmdrun.InNetns(ns).Run(ctx, payload, "ipset", "restore", "-exist"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanLabelChange100k is the writer's own CPU cost for a one-member change in a
// 100k-member set, without the ipset tool.
func BenchmarkPlanLabelChange100k(b *testing.B) {
	f := newFakeIpset()
	r := New(f, Options{})
	if err := r.AddOrReplace(benchMeta, members(100000, 0)); err != nil {
		b.Fatal(err)
	}
	if err := r.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.AddMembers(benchMeta.Name, []string{fmt.Sprintf("198.19.200.%d", i%200)}); err != nil {
			b.Fatal(err)
		}
		var sb strings.Builder
		r.actual = r.planUpdates(&sb)
		r.clean()
	}
}

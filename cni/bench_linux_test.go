package cni

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkCNIAddDel measures what a runtime sees: the wall time of the plugin process for ADD and
// DEL, against a real (embedded) etcd, sequentially and with 8 concurrent callers. Each figure is
// printed as a BENCH line (CONVENTIONS.md). Run: go test ./cni -run '^$' -bench CNIAddDel -benchtime 1x
func BenchmarkCNIAddDel(b *testing.B) {
	e := inHost(b, "-test.bench")
	if e == nil {
		return
	}
	const seqN, concWorkers, concPer = 100, 8, 25
	pods := make([]string, seqN+concWorkers*concPer)
	for i := range pods {
		pods[i] = e.newPod()
	}
	stdin := e.conf("1.1.0", "")
	// Each scenario logs to its own file, from which the per-phase times are read.
	useLog := func(name string) string {
		path := filepath.Join(e.logDir, name+".log")
		stdin = []byte(strings.Replace(string(e.conf("1.1.0", "")), filepath.Join(e.logDir, "cni.log"), path, 1))
		return path
	}
	op := func(cmd string, i int) time.Duration {
		o := e.exec(call{cmd: cmd, cid: fmt.Sprintf("bench-%d", i), netns: pods[i], stdin: stdin})
		if o.err != nil {
			b.Fatalf("%s %d: %s", cmd, i, o.err.Msg)
		}
		return o.took
	}
	// Warm the page cache and IPAM's first block so the first sample is not an outlier by accident.
	op("ADD", 0)
	op("DEL", 0)
	b.ResetTimer()

	var seqAdd, seqDel []time.Duration
	logs := map[string]string{}
	logs["cni-add-sequential"] = useLog("add-seq")
	for i := range seqN {
		seqAdd = append(seqAdd, op("ADD", i))
	}
	logs["cni-del-sequential"] = useLog("del-seq")
	for i := range seqN {
		seqDel = append(seqDel, op("DEL", i))
	}
	var mu sync.Mutex
	var concAdd, concDel []time.Duration
	parallel := func(cmd string, into *[]time.Duration) {
		var wg sync.WaitGroup
		for w := range concWorkers {
			wg.Go(func() {
				for j := range concPer {
					d := op(cmd, seqN+w*concPer+j)
					mu.Lock()
					*into = append(*into, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	logs["cni-add-8concurrent"] = useLog("add-conc")
	parallel("ADD", &concAdd)
	logs["cni-del-8concurrent"] = useLog("del-conc")
	parallel("DEL", &concDel)
	b.StopTimer()
	e.assertClean()

	report := func(scenario string, ds []time.Duration, anchor string) {
		slices.Sort(ds)
		p50, p99 := pct(ds, 50), pct(ds, 99)
		fmt.Printf("BENCH %s p50=%.1fms%s\n", scenario, ms(p50), anchor)
		fmt.Printf("BENCH %s p99=%.1fms\n", scenario, ms(p99))
		b.ReportMetric(ms(p50), scenario+"-p50-ms")
		b.ReportMetric(ms(p99), scenario+"-p99-ms")
		phases, err := phaseTimes(logs[scenario])
		if err != nil {
			b.Fatal(err)
		}
		for _, name := range slices.Sorted(maps.Keys(phases)) {
			fmt.Printf("BENCH %s phase-%s-p50=%.1fms\n", scenario, name, ms(pct(sorted(phases[name]), 50)))
		}
	}
	report("cni-add-sequential", seqAdd, "")
	report("cni-del-sequential", seqDel, "")
	// Anchor: Calico's network setup step, about 15 ms per pod in a burst (projectcalico/calico#7705).
	p50 := pct(sorted(concAdd), 50)
	report("cni-add-8concurrent", concAdd, fmt.Sprintf(" anchor=15.0ms ratio=%.2f", ms(p50)/15))
	report("cni-del-8concurrent", concDel, "")
}

func sorted(ds []time.Duration) []time.Duration {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

// pct is the nearest-rank percentile of sorted samples.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

var phaseRE = regexp.MustCompile(`\b(startup|connect|ipam|wire|endpoint|policy|took)=([0-9.]+(?:ns|µs|us|ms|s))`)

// phaseTimes reads the per-phase durations the plugin logs with each "ADD done"/"DEL done".
func phaseTimes(path string) (map[string][]time.Duration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plugin log: %w", err)
	}
	out := map[string][]time.Duration{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `msg="ADD done"`) && !strings.Contains(line, `msg="DEL done"`) {
			continue
		}
		for _, m := range phaseRE.FindAllStringSubmatch(line, -1) {
			d, err := time.ParseDuration(m[2])
			if err != nil {
				return nil, fmt.Errorf("parse %q: %w", m[0], err)
			}
			out[m[1]] = append(out[m[1]], d)
		}
	}
	return out, nil
}

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

	"github.com/terracenet/terrace/internal/benchfmt"
)

// BenchmarkCNIAddDel measures what a runtime sees: the wall time of the plugin process for ADD and
// DEL, against a real (embedded) etcd, sequentially and with 8 concurrent callers. Each figure is
// printed as a BENCH line (CONVENTIONS.md). Run: go test ./cni -run '^$' -bench CNIAddDel -benchtime 1x
func BenchmarkCNIAddDel(b *testing.B) {
	e := inHost(b, "-test.bench")
	if e == nil {
		return
	}
	benchAddDel(b, e, "cni", "etcd", "")
}

// BenchmarkCNIAddDelAgent is the same work with the datastore part handed to the node agent over
// its socket (the agent's API served in this process, as terrace-node serves it).
func BenchmarkCNIAddDelAgent(b *testing.B) {
	e := inHost(b, "-test.bench")
	if e == nil {
		return
	}
	sock := serveAgent(b, "host-a", e.store, e.ds)
	benchAddDel(b, e, "cni-agent", "agent", `,"node_socket":"`+sock+`"`)
}

// benchAddDel runs the fixed work and prints figures as <prefix>-add-sequential and so on; extra
// is spliced into the network configuration; every command must have used backend.
func benchAddDel(b *testing.B, e *hostEnv, prefix, backend, extra string) {
	const seqN, concWorkers, concPer = 100, 8, 25
	pods := make([]string, seqN+concWorkers*concPer)
	for i := range pods {
		pods[i] = e.newPod()
	}
	stdin := e.conf("1.1.0", extra)
	// Each scenario logs to its own file, from which the per-phase times are read.
	useLog := func(name string) string {
		path := filepath.Join(e.logDir, name+".log")
		stdin = []byte(strings.Replace(string(e.conf("1.1.0", extra)), filepath.Join(e.logDir, "cni.log"), path, 1))
		return path
	}
	var cpuMu sync.Mutex
	cpu := map[string][]time.Duration{}
	op := func(cmd string, i int) time.Duration {
		o := e.exec(call{cmd: cmd, cid: fmt.Sprintf("bench-%d", i), netns: pods[i], stdin: stdin})
		if o.err != nil {
			b.Fatalf("%s %d: %s", cmd, i, o.err.Msg)
		}
		cpuMu.Lock()
		cpu[cmd] = append(cpu[cmd], o.cpu)
		cpuMu.Unlock()
		return o.took
	}
	// Warm the page cache and IPAM's first block so the first sample is not an outlier by accident.
	op("ADD", 0)
	op("DEL", 0)
	b.ResetTimer()

	var seqAdd, seqDel []time.Duration
	logs := map[string]string{}
	logs[prefix+"-add-sequential"] = useLog("add-seq")
	for i := range seqN {
		seqAdd = append(seqAdd, op("ADD", i))
	}
	logs[prefix+"-del-sequential"] = useLog("del-seq")
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
	logs[prefix+"-add-8concurrent"] = useLog("add-conc")
	parallel("ADD", &concAdd)
	logs[prefix+"-del-8concurrent"] = useLog("del-conc")
	parallel("DEL", &concDel)
	b.StopTimer()
	e.assertClean()
	// CPU per plugin process, over every call: the floor of the concurrent figures on few cores.
	for _, cmd := range []string{"ADD", "DEL"} {
		out := benchfmt.Printer{W: os.Stdout, Scenario: prefix + "-" + strings.ToLower(cmd) + "-process"}
		out.Value("cpu-p50", ms(pct(sorted(cpu[cmd]), 50)), "ms")
	}

	report := func(scenario string, ds []time.Duration, anchor float64) {
		slices.Sort(ds)
		p50, p99 := pct(ds, 50), pct(ds, 99)
		out := benchfmt.Printer{W: os.Stdout, Scenario: scenario}
		if anchor > 0 {
			out.Anchored("p50", ms(p50), "ms", anchor)
		} else {
			out.Value("p50", ms(p50), "ms")
		}
		out.Value("p99", ms(p99), "ms")
		b.ReportMetric(ms(p50), scenario+"-p50-ms")
		b.ReportMetric(ms(p99), scenario+"-p99-ms")
		phases, err := phaseTimes(logs[scenario])
		if err != nil {
			b.Fatal(err)
		}
		if n := countDone(b, logs[scenario], "backend="+backend); n != len(ds) {
			b.Fatalf("%s: %d of %d commands logged backend=%s", scenario, n, len(ds), backend)
		}
		for _, name := range slices.Sorted(maps.Keys(phases)) {
			out.Value("phase-"+name+"-p50", ms(pct(sorted(phases[name]), 50)), "ms")
		}
	}
	report(prefix+"-add-sequential", seqAdd, 0)
	report(prefix+"-del-sequential", seqDel, 0)
	// Anchor: Calico's network setup step, about 15 ms per pod in a burst (projectcalico/calico#7705).
	report(prefix+"-add-8concurrent", concAdd, 15)
	report(prefix+"-del-8concurrent", concDel, 0)
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

// countDone counts the "ADD done"/"DEL done" lines of the plugin log at path that contain want.
func countDone(b *testing.B, path, want string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatalf("read plugin log: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if (strings.Contains(line, `msg="ADD done"`) || strings.Contains(line, `msg="DEL done"`)) && strings.Contains(line, want) {
			n++
		}
	}
	return n
}

package benchfmt

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// ParseGoBench converts one result line of `go test -bench` (e.g.
// "BenchmarkList/keys=100-2  5000  291000 ns/op  0.291 p50-ms") into BENCH lines, one per reported
// metric, for benchmarks that do not print BENCH lines themselves. pkg is the package's import path
// (from go test's "pkg:" header); the scenario is "<last path element>.<name without Benchmark and
// the -GOMAXPROCS suffix>". ok is false for lines that are not benchmark results.
func ParseGoBench(pkg, line string) (lines []Line, ok bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
		return nil, false
	}
	if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
		return nil, false
	}
	name := strings.TrimPrefix(f[0], "Benchmark")
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i]
		}
	}
	if name == "" {
		return nil, false
	}
	scenario := name
	if base := path.Base(pkg); pkg != "" && base != "." && base != "/" {
		scenario = base + "." + name
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil, false
		}
		metric, val, unit := goMetric(v, f[i+1])
		lines = append(lines, New(scenario, metric, val, unit))
	}
	return lines, true
}

// goMetric names a go test unit the way BENCH lines do: time per operation scaled to a readable
// unit, and custom "p50-ms" style units split into metric and unit.
func goMetric(v float64, unit string) (metric string, value float64, u string) {
	switch unit {
	case "ns/op":
		switch {
		case v >= 1e9:
			return "time", v / 1e9, "s/op"
		case v >= 1e6:
			return "time", v / 1e6, "ms/op"
		case v >= 1e3:
			return "time", v / 1e3, "µs/op"
		}
		return "time", v, "ns/op"
	case "B/op":
		return "mem", v, "B/op"
	case "allocs/op":
		return "allocs", v, "/op"
	case "MB/s":
		return "throughput", v, "MB/s"
	}
	if m, u, ok := strings.Cut(unit, "-"); ok && m != "" && knownUnit(u) {
		return m, v, u
	}
	return sanitize(unit), v, ""
}

func knownUnit(u string) bool {
	switch u {
	case "ns", "µs", "us", "ms", "s", "B", "KB", "MB", "GB", "pps", "Gbit/s", "Mbit/s", "/s", "%":
		return true
	}
	return false
}

// sanitize keeps a metric name a single token without '=' so the line parses back.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '=' || r == ' ' || r == '\t' {
			return '_'
		}
		return r
	}, s)
	if s == "" {
		return "value"
	}
	return s
}

// ScenarioOf is a convenience for tests and tools: the scenario ParseGoBench would give.
func ScenarioOf(pkg, benchName string) string {
	l, ok := ParseGoBench(pkg, fmt.Sprintf("%s 1 1 ns/op", benchName))
	if !ok {
		return ""
	}
	return l[0].Scenario
}

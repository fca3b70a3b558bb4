package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/terracenet/terrace/internal/benchfmt"
)

// Summary is what one benchmark run printed.
type Summary struct {
	Lines    []benchfmt.Line
	Notes    []string // BENCH-NOTE text, "<scenario> <text>"
	Skips    []string // skipped benchmarks with their reason
	Failures []string // lines showing a failure
	// Malformed are BENCH lines that did not parse; reported, not fatal (speed output is never a failure).
	Malformed []string
}

// goAnchors pairs a go benchmark with the benchmark that measures the same work with the bare tool
// (felix/dataplane's Raw* benchmarks), both in scenario form.
var goAnchors = map[string]string{
	"routes.Install10k":               "routes.RawRouteAdd10k",
	"routes.Install10k/one-by-one":    "routes.RawRouteAdd10k",
	"routes.Install10k/batched":       "routes.RawRouteAdd10k",
	"ipsets.Restore100k":              "ipsets.RawRestore100k",
	"iptables.Initial10kRules/legacy": "iptables.RawRestore10k/legacy",
	"iptables.Initial10kRules/nft":    "iptables.RawRestore10k/nft",
}

// pkgBlock collects one package's output until go test's "ok"/"FAIL" line closes it.
type pkgBlock struct {
	pkg       string
	native    int
	converted []benchfmt.Line
}

// Read parses go test output.
func Read(r io.Reader) (*Summary, error) {
	s := &Summary{}
	var blk pkgBlock
	var skip string // benchmark whose skip reason follows on indented lines
	flush := func() {
		if blk.native == 0 {
			s.Lines = append(s.Lines, pairAnchors(blk.converted)...)
		}
		blk = pkgBlock{}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	var raws []string
	pending := "" // a benchmark's name whose result line comes later (see below)
	for sc.Scan() {
		raw := sc.Text()
		// When a benchmark runs more than once, go test prints its name before the timed run,
		// so what the body prints lands on the name's line ("BenchmarkX-2 	BENCH a p50=…") and
		// the result follows alone ("30  20803 ns/op"): split the one and rejoin the other.
		if f := strings.Fields(raw); raw == strings.TrimLeft(raw, " \t") && len(f) > 1 && strings.HasPrefix(f[0], "Benchmark") && strings.HasPrefix(f[1], "BENCH") {
			pending = f[0]
			raws = append(raws, strings.TrimSpace(strings.TrimPrefix(raw, f[0])))
			continue
		}
		switch {
		case pending != "" && raw != "" && raw[0] >= '0' && raw[0] <= '9':
			raw, pending = pending+"\t"+raw, ""
		case strings.HasPrefix(raw, "BENCH"): // more of the body's output: the result is still to come
		default:
			pending = ""
		}
		raws = append(raws, raw)
	}
	for _, raw := range raws {
		line := strings.TrimSpace(raw)
		if skip != "" {
			if raw != line && line != "" && !strings.HasPrefix(line, "---") {
				s.Skips = append(s.Skips, skip+": "+line)
				skip = ""
				continue
			}
			s.Skips = append(s.Skips, skip)
			skip = ""
		}
		switch {
		case strings.HasPrefix(line, "pkg: "):
			if blk.pkg != "" || len(blk.converted) > 0 {
				flush()
			}
			blk.pkg = strings.TrimSpace(strings.TrimPrefix(line, "pkg: "))
		// Figures count only at the start of a line: an indented copy is a benchmark's log echoing
		// a child process's output (cni re-executes itself), which would count the figure twice.
		case raw != line && (strings.HasPrefix(line, "BENCH") || strings.HasPrefix(line, "Benchmark")):
		case strings.HasPrefix(line, benchfmt.NotePrefix+" "):
			s.Notes = append(s.Notes, strings.TrimPrefix(line, benchfmt.NotePrefix+" "))
		case strings.HasPrefix(line, "BENCH "):
			l, err := benchfmt.Parse(line)
			if err != nil {
				s.Malformed = append(s.Malformed, line)
				continue
			}
			blk.native++
			s.Lines = append(s.Lines, l)
		case strings.HasPrefix(line, "Benchmark"):
			if ls, ok := benchfmt.ParseGoBench(blk.pkg, line); ok {
				blk.converted = append(blk.converted, ls...)
			}
		case strings.HasPrefix(line, "--- SKIP: "):
			skip = strings.TrimPrefix(line, "--- SKIP: ")
		case strings.HasPrefix(line, "--- FAIL"), strings.HasPrefix(line, "panic: "),
			strings.HasPrefix(line, "FAIL"), strings.Contains(line, "[build failed]"),
			strings.Contains(line, "[setup failed]"):
			s.Failures = append(s.Failures, line)
			if strings.HasPrefix(line, "FAIL\t") || strings.HasPrefix(line, "FAIL ") {
				flush()
			}
		case strings.HasPrefix(line, "ok "), strings.HasPrefix(line, "ok\t"):
			flush()
		}
	}
	if skip != "" {
		s.Skips = append(s.Skips, skip)
	}
	flush()
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("read bench output: %w", err)
	}
	return s, nil
}

// pairAnchors gives each go benchmark with a raw-tool twin in the same package its anchor.
func pairAnchors(ls []benchfmt.Line) []benchfmt.Line {
	idx := map[string]benchfmt.Line{}
	for _, l := range ls {
		idx[l.Scenario+" "+l.Metric] = l
	}
	out := make([]benchfmt.Line, len(ls))
	for i, l := range ls {
		out[i] = l
		a, ok := goAnchors[l.Scenario]
		if !ok || l.Metric != "time" {
			continue
		}
		if al, ok := idx[a+" time"]; ok && al.Unit == l.Unit {
			out[i] = l.WithAnchor(al.Value).WithNote("(anchor: " + a + ")")
		}
	}
	return out
}

// Write prints the BENCH lines, the table, notes, skips and failures.
func (s *Summary) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "== BENCH lines (%d)\n", len(s.Lines))
	for _, l := range s.Lines {
		fmt.Fprintln(bw, l.String())
	}
	fmt.Fprintln(bw)
	fmt.Fprintln(bw, "== Summary")
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMETRIC\tVALUE\tANCHOR\tRATIO")
	for _, l := range s.Lines {
		anchor, ratio := "-", "-"
		if l.HasAnchor {
			au := l.AnchorUnit
			if au == "" {
				au = l.Unit
			}
			anchor = benchfmt.FormatValue(l.Anchor) + au
			ratio = benchfmt.FormatRatio(l.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s%s\t%s\t%s\n", l.Scenario, l.Metric, benchfmt.FormatValue(l.Value), l.Unit, anchor, ratio)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	section := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(bw, "\n== %s (%d)\n", title, len(items))
		for _, it := range items {
			fmt.Fprintln(bw, "  "+it)
		}
	}
	section("Notes", s.Notes)
	section("Skipped", s.Skips)
	section("Malformed BENCH lines", s.Malformed)
	section("FAILURES", s.Failures)
	if len(s.Failures) == 0 {
		fmt.Fprintln(bw, "\nbench: no correctness failures (speed figures are reported, never judged)")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}
